"""``coupling toy {analyze,explore,sweep}``: the command line of the toy layer.

    coupling toy analyze INSTANCE.json [--json]
    coupling toy explore --claim ID [--seed N] [--budget N] [--json]
    coupling toy sweep --out DIR [--seed N]

Float64 is switched on for the duration of the command (never at import). Bad input raises
``theory.errors.InputError``; the ``coupling`` dispatcher prints it on one line and exits 2.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys

import jax

from theory.errors import InputError


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="coupling toy", description="Tabular softmax toy models of SFT/RL coupling.")
    sub = p.add_subparsers(dest="command", required=True)
    a = sub.add_parser("analyze", help="every theorem quantity of one instance, closed form and measured")
    a.add_argument("instance", help="instance JSON file (prompt_weights, expert, reward, beta, ...)")
    a.add_argument("--json", action="store_true", help="print JSON instead of a table")
    e = sub.add_parser("explore", help="search for instances that violate a claim")
    e.add_argument("--claim", required=True, help="claim ID of docs/theory.md, e.g. thm41.paper")
    e.add_argument("--seed", type=int, default=0)
    e.add_argument("--budget", type=int, default=4096, help="random instances to draw (default 4096)")
    e.add_argument("--json", action="store_true")
    s = sub.add_parser("sweep", help="plots and metrics over many random instances")
    s.add_argument("--out", required=True, help="output directory (created if missing)")
    s.add_argument("--seed", type=int, default=0)
    return p


def _check_seed(seed: int) -> None:
    if seed < 0:
        raise InputError(f"--seed {seed}: must be >= 0")


def _analyze(args) -> int:
    from toy_models.analyze import analyze, format_text
    from toy_models.instance import read_json, validate

    raw = read_json(args.instance)  # read once, as UTF-8
    inst, steps = validate(raw, args.instance)
    result = analyze(inst, steps, "sft_policy" in raw)
    print(json.dumps(result, indent=2) if args.json else format_text(result))
    return 0


def _explore(args) -> int:
    from toy_models import explore
    from toy_models.margins import MARGINS

    if args.claim not in MARGINS:
        raise InputError(f"--claim {args.claim!r}: unknown claim ID; choose from {', '.join(MARGINS)}")
    if args.budget < 1:
        raise InputError(f"--budget {args.budget}: must be >= 1")
    _check_seed(args.seed)
    progress = explore.stderr_progress if args.budget > explore.CHUNK else None
    res = explore.search(args.claim, args.seed, args.budget, progress)
    if args.json:
        print(json.dumps(dataclasses.asdict(res), indent=2))
    elif res.found:
        print(f"{res.claim}: counterexample found ({res.tried} instances tried; lowest margin "
              f"{res.best_margin:.4g}). Shrunk instance (margin {res.counterexample_margin:.4g}):")
        print(json.dumps(res.counterexample))
    else:
        print(f"{res.claim}: no counterexample found in {res.tried} instances tried "
              f"(lowest margin {res.best_margin:.3g} >= 0)")
    return 0


def _sweep(args) -> int:
    from toy_models.sweep import sweep

    _check_seed(args.seed)
    names = sweep(args.out, args.seed)
    print(f"wrote {len(names)} files to {args.out}: {', '.join(names)}")
    return 0


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(sys.argv[1:] if argv is None else argv)
    with jax.enable_x64(True):
        if args.command == "analyze":
            return _analyze(args)
        if args.command == "explore":
            return _explore(args)
        return _sweep(args)
