"""``coupling verify``: check every claim of docs/theory.md symbolically (sympy) and numerically (JAX).

    coupling verify [--json] [--only ID ...] [--junit FILE]

One row per claim ID, in docs/theory.md order, printed as soon as the claim is done: ID, label,
symbolic status, numeric status, seconds (the claim's symbolic plus numeric check time; the two
columns run in parallel, so the rows add up to more than the wall time); then a summary line. Status values are ``pass``,
``fail`` and ``n/a``; for the [refuted] claim, ``pass`` means the counterexample was reproduced.

- Symbolic column: ``theory.catalogue.CLAIMS[i].symbolic()``.
- Numeric column: ``toy_models.numeric_checks.NUMERIC_CHECKS[id]()`` when that module exists and
  has the ID, else ``n/a``. JAX float64 is switched on (in the process that runs them) first.
- ``--json`` prints a JSON list (``id``, ``label``, ``symbolic``, ``numeric``, ``seconds``,
  ``detail``, ``proved_for``, ``sampled``) on stdout; the progress rows then go to stderr.
  ``proved_for`` says for which sizes the symbolic column proves the claim ("any n, any prompts",
  "n = 2, 3, 1-2 prompts", "a class of functions, lemma skeleton"); ``sampled`` lists the symbolic
  steps that are only checked at random points. The table's last column shows both at a glance.
- ``--junit FILE`` writes JUnit XML (one testcase per claim), atomically.
- Exit status: 0 iff nothing failed, 1 if any check failed (an exception inside a check is a
  failure with the exception in ``detail``), 2 on bad arguments (unknown ID: ``InputError``).

Speed: both columns run in a pool of 2 worker processes, forked before JAX is imported (each
worker imports JAX once, on its first numeric check), and this process only collects the rows.
The numeric checks are submitted first, the symbolic ones after them, so each worker starts with
JAX compilation and the cheaper sympy work fills the gaps at the end. ``FAST_COMPILE_FLAGS`` are
added to ``XLA_FLAGS`` for the duration of ``main`` (JAX reads them when it starts its backend).
If JAX is already imported (for instance inside a test session), forking is unsafe and
everything runs in this process, one check after another.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import dataclasses
import json
import multiprocessing
import os
import sys
import tempfile
import time
import xml.etree.ElementTree as ET
from typing import Callable

from theory import catalogue
from theory.catalogue import CheckResult
from theory.errors import InputError

WORKERS = 2
NA = CheckResult("n/a", "no check for this ID")
# XLA:CPU flags for the numeric column, whose time is almost all compilation of small functions:
# the older elemental emitters compile these 2-3x faster than the MLIR fusion emitters, and the
# backend optimization level 0 applies to every compilation (eager ops too). Results are the same.
FAST_COMPILE_FLAGS = ("--xla_cpu_use_fusion_emitters=false", "--xla_backend_optimization_level=0")


@dataclasses.dataclass(frozen=True)
class Row:
    id: str
    label: str
    symbolic: str
    numeric: str
    seconds: float
    detail: str
    proved_for: str = ""                 # what the symbolic column proves (theory.catalogue.PROVED_FOR)
    sampled: tuple[str, ...] = ()        # symbolic steps only checked at random points

    @property
    def failed(self) -> bool:
        return "fail" in (self.symbolic, self.numeric)


def _with_fast_compile_flags(flags: str) -> str:
    """``XLA_FLAGS`` plus ``FAST_COMPILE_FLAGS``; a flag the user already set is left as it is."""
    extra = [f for f in FAST_COMPILE_FLAGS if f.split("=")[0] not in flags]
    return " ".join([flags, *extra]).strip()


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="coupling verify",
                                description="Check every claim of docs/theory.md, symbolically and numerically.")
    p.add_argument("--json", action="store_true", help="print a JSON list instead of the table")
    p.add_argument("--only", nargs="+", metavar="ID", help="check only these claim IDs")
    p.add_argument("--junit", metavar="FILE", help="also write JUnit XML to FILE")
    return p


def _selected(only: list[str] | None) -> list[catalogue.Claim]:
    if not only:
        return list(catalogue.CLAIMS)
    known = {c.id for c in catalogue.CLAIMS}
    unknown = [i for i in only if i not in known]
    if unknown:
        raise InputError(f"unknown claim ID(s) {', '.join(unknown)}; "
                         f"the IDs are: {', '.join(c.id for c in catalogue.CLAIMS)}")
    return [c for c in catalogue.CLAIMS if c.id in set(only)]


def _timed(check: Callable[[], CheckResult]) -> tuple[CheckResult, float]:
    """Run one check; an exception is a failure, not a crash."""
    start = time.perf_counter()
    try:
        result = check()
        if not isinstance(result, CheckResult) or result.status not in catalogue.STATUSES:
            result = CheckResult("fail", f"check returned {result!r}, not a CheckResult")
    except Exception as e:  # noqa: BLE001
        result = CheckResult("fail", f"{type(e).__name__}: {e}")
    return result, time.perf_counter() - start


def _symbolic_in_worker(claim_id: str) -> tuple[CheckResult, float]:
    return _timed(catalogue.claim(claim_id).symbolic)


def _numeric_checks() -> dict[str, Callable[[], CheckResult]]:
    try:
        from toy_models.numeric_checks import NUMERIC_CHECKS
    except ModuleNotFoundError as e:
        if e.name != "toy_models.numeric_checks":
            raise
        return {}
    return NUMERIC_CHECKS


def _numeric(claim_id: str) -> tuple[CheckResult, float]:
    """The numeric check of one claim, in float64 (``n/a`` when there is none)."""
    numeric = _numeric_checks()
    if claim_id not in numeric:
        return NA, 0.0
    return _timed(numeric[claim_id])  # each check switches x64 on for its own duration


def _collect(future: concurrent.futures.Future) -> tuple[CheckResult, float]:
    try:
        return future.result()
    except ModuleNotFoundError:  # a broken installation is not a check failure
        raise
    except Exception as e:  # noqa: BLE001 - a dead worker fails this claim, not the run
        return CheckResult("fail", f"{type(e).__name__}: {e}"), 0.0


def _pooled(claims, pool):
    """Submit every check to the pool; yield (claim, (sym, sym_s), (num, num_s)) in claim order."""
    numeric = {c.id: pool.submit(_numeric, c.id) for c in claims}
    symbolic = {c.id: pool.submit(_symbolic_in_worker, c.id) for c in claims}
    for c in claims:
        yield c, _collect(symbolic[c.id]), _collect(numeric[c.id])


def _serial(claims):
    for c in claims:
        num = _numeric(c.id)
        yield c, _timed(c.symbolic), num


def _row(claim: catalogue.Claim, sym: CheckResult, sym_s: float, num: CheckResult, num_s: float) -> Row:
    detail = f"symbolic: {sym.detail} | numeric: {num.detail}"
    return Row(claim.id, claim.label, sym.status, num.status, round(sym_s + num_s, 3), detail,
               claim.proved_for, tuple(getattr(sym, "sampled", ())))


def _scope(row: Row) -> str:
    """The proof scope at a glance: "any n" (or any G / dimension) or "fixed", plus "+k sampled"."""
    text = row.proved_for
    glance = "any size" if text.startswith("any") or "class of functions" in text else "fixed"
    if "any n" in text:
        glance = "any n"
    elif text.startswith("any dimension"):
        glance = "any dim"
    elif "class of functions" in text:
        glance = "lemmas"
    return glance + (f" +{len(row.sampled)} sampled" if row.sampled else "")


def _format(row: Row) -> str:
    return f"{row.id:22s} {row.label:14s} {row.symbolic:8s} {row.numeric:8s} {row.seconds:8.2f}  {_scope(row)}"


def _junit(rows: list[Row], path: str, seconds: float) -> None:
    suite = ET.Element("testsuite", name="coupling verify", tests=str(len(rows)),
                       failures=str(sum(r.failed for r in rows)), time=f"{seconds:.3f}")
    for r in rows:
        case = ET.SubElement(suite, "testcase", classname=f"coupling.verify.{r.label}", name=r.id,
                             time=f"{r.seconds:.3f}")
        if r.failed:
            failure = ET.SubElement(case, "failure",
                                    message=f"symbolic {r.symbolic}, numeric {r.numeric}")
            failure.text = r.detail
        elif r.symbolic == "n/a" and r.numeric == "n/a":
            ET.SubElement(case, "skipped", message="no check")
        ET.SubElement(case, "system-out").text = r.detail
    directory = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(directory):
        raise InputError(f"--junit {path}: directory {directory} does not exist")
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=".junit-", suffix=".xml.tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            ET.ElementTree(suite).write(f, encoding="utf-8", xml_declaration=True)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    claims = _selected(args.only)
    if args.junit and os.path.isdir(args.junit):
        raise InputError(f"--junit {args.junit}: is a directory, not a file")
    out = sys.stderr if args.json else sys.stdout
    start = time.perf_counter()
    # Read by JAX when it initializes its backend (here or in the workers): set before that, and
    # restored afterwards so that a caller's later subprocesses do not inherit it.
    saved_flags = os.environ.get("XLA_FLAGS")
    os.environ["XLA_FLAGS"] = _with_fast_compile_flags(saved_flags or "")
    # Fork the workers before JAX is imported (forking a process that runs JAX is unsafe).
    pool = None
    if len(claims) > 1 and "jax" not in sys.modules and "fork" in multiprocessing.get_all_start_methods():
        pool = concurrent.futures.ProcessPoolExecutor(WORKERS, mp_context=multiprocessing.get_context("fork"))
    try:
        print(f"{'ID':22s} {'label':14s} {'symbolic':8s} {'numeric':8s} {'seconds':>8s}  proved for",
              file=out, flush=True)
        rows = []
        for claim, (sym, sym_s), (num, num_s) in (_serial(claims) if pool is None else _pooled(claims, pool)):
            rows.append(_row(claim, sym, sym_s, num, num_s))
            print(_format(rows[-1]), file=out, flush=True)
    finally:
        if pool is not None:
            pool.shutdown(cancel_futures=True)
        if saved_flags is None:
            os.environ.pop("XLA_FLAGS", None)
        else:
            os.environ["XLA_FLAGS"] = saved_flags
    seconds = time.perf_counter() - start
    counts = {col: {s: sum(getattr(r, col) == s for r in rows) for s in catalogue.STATUSES}
              for col in ("symbolic", "numeric")}
    failed = sum(r.failed for r in rows)
    print(f"{len(rows)} claims, {failed} failed; symbolic {counts['symbolic']['pass']} pass / "
          f"{counts['symbolic']['fail']} fail / {counts['symbolic']['n/a']} n/a; numeric "
          f"{counts['numeric']['pass']} pass / {counts['numeric']['fail']} fail / {counts['numeric']['n/a']} n/a; "
          f"{seconds:.1f} s", file=out, flush=True)
    if args.json:
        print(json.dumps([dataclasses.asdict(r) for r in rows], indent=1))
    if args.junit:
        _junit(rows, args.junit, seconds)
    return 1 if failed else 0
