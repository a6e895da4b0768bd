"""`coupling verify`: table, --json, --only, --junit, exit codes, failure handling."""

from __future__ import annotations

import dataclasses
import importlib.abc
import json
import os
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from theory import catalogue
from theory.catalogue import CheckResult
from toy_models import cli, verify

CHEAP = ["pl.degradation", "pl.duration"]   # in catalogue order


@pytest.fixture
def fake_numeric(monkeypatch):
    """A numeric column with one passing check, so these tests do not pay for JAX compilation."""
    checks = {"pl.duration": lambda: CheckResult("pass", "numeric ok")}
    monkeypatch.setattr(verify, "_numeric_checks", lambda: checks)
    return checks


def _replace_symbolic(monkeypatch, claim_id, fn):
    claims = tuple(dataclasses.replace(c, symbolic=fn) if c.id == claim_id else c for c in catalogue.CLAIMS)
    monkeypatch.setattr(catalogue, "CLAIMS", claims)


def test_json_shape_and_only(fake_numeric, capsys):
    rc = verify.main(["--json", "--only", *reversed(CHEAP)])
    captured = capsys.readouterr()
    rows = json.loads(captured.out)
    assert rc == 0
    assert [r["id"] for r in rows] == CHEAP                       # catalogue order, not argument order
    assert all(set(r) == {"id", "label", "symbolic", "numeric", "seconds", "detail", "proved_for", "sampled"}
               for r in rows)
    assert all(r["proved_for"] == catalogue.PROVED_FOR[r["id"]] for r in rows)
    assert all(isinstance(r["sampled"], list) for r in rows)
    assert [(r["label"], r["symbolic"], r["numeric"]) for r in rows] == [
        ("reconstructed", "pass", "n/a"), ("reconstructed", "pass", "pass")]
    assert all(isinstance(r["seconds"], float) for r in rows)
    assert "numeric ok" in rows[1]["detail"]
    # The progress table goes to stderr in --json mode, one row per claim, then the summary.
    assert "pl.duration" in captured.err and "2 claims, 0 failed" in captured.err


def test_table_rows_and_summary(fake_numeric, capsys):
    assert verify.main(["--only", "pl.duration"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == ["ID", "label", "symbolic", "numeric", "seconds", "proved", "for"]
    assert lines[1].split()[:4] == ["pl.duration", "reconstructed", "pass", "pass"]
    assert lines[1].endswith("any size +2 sampled")    # the proof scope at a glance
    assert lines[2].startswith("1 claims, 0 failed")


def test_fast_compile_flags_keep_what_the_user_set():
    added = verify._with_fast_compile_flags("")
    assert added.split() == list(verify.FAST_COMPILE_FLAGS)
    kept = verify._with_fast_compile_flags("--xla_cpu_use_fusion_emitters=true")
    assert "--xla_cpu_use_fusion_emitters=true" in kept and "--xla_cpu_use_fusion_emitters=false" not in kept
    assert "--xla_backend_optimization_level=0" in kept


@pytest.mark.parametrize("before", [None, "--xla_dump_to=somewhere"])
def test_xla_flags_set_during_the_checks_and_restored_after(monkeypatch, capsys, before):
    seen = []
    monkeypatch.setattr(verify, "_numeric_checks", lambda: {
        "pl.duration": lambda: seen.append(os.environ.get("XLA_FLAGS")) or CheckResult("pass", "ok")})
    if before is None:
        monkeypatch.delenv("XLA_FLAGS", raising=False)
    else:
        monkeypatch.setenv("XLA_FLAGS", before)
    assert verify.main(["--only", "pl.duration"]) == 0
    assert all(f in seen[0] for f in verify.FAST_COMPILE_FLAGS) and (before or "") in seen[0]
    assert os.environ.get("XLA_FLAGS") == before


def test_unknown_id_exits_2_with_one_line(fake_numeric, capsys):
    rc = cli.main(["verify", "--only", "pl.duration", "thm9.nope"])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1
    assert "unknown claim ID(s) thm9.nope" in err[0] and "softmax.fisher" in err[0] and "kl.k3" in err[0]


def test_bad_flag_exits_2(capsys):
    with pytest.raises(SystemExit) as e:
        verify.main(["--bogus"])
    assert e.value.code == 2


def test_failing_and_raising_checks_exit_1(fake_numeric, monkeypatch, capsys, tmp_path):
    def boom():
        raise RuntimeError("symbolic exploded")
    _replace_symbolic(monkeypatch, "pl.degradation", boom)
    fake_numeric["pl.duration"] = lambda: CheckResult("fail", "numeric says no")
    junit = tmp_path / "verify.xml"
    rc = verify.main(["--json", "--only", *CHEAP, "--junit", str(junit)])
    rows = {r["id"]: r for r in json.loads(capsys.readouterr().out)}
    assert rc == 1
    assert (rows["pl.duration"]["symbolic"], rows["pl.duration"]["numeric"]) == ("pass", "fail")
    assert rows["pl.degradation"]["symbolic"] == "fail"
    assert "RuntimeError: symbolic exploded" in rows["pl.degradation"]["detail"]
    suite = ET.parse(junit).getroot()
    assert suite.tag == "testsuite" and suite.get("tests") == "2" and suite.get("failures") == "2"
    cases = {c.get("name"): c for c in suite.iter("testcase")}
    assert set(cases) == set(CHEAP)
    assert cases["pl.duration"].find("failure").get("message") == "symbolic pass, numeric fail"
    assert [p.name for p in tmp_path.iterdir()] == ["verify.xml"]     # no temp file left behind


def test_junit_all_pass_and_bad_path(fake_numeric, tmp_path, capsys):
    junit = tmp_path / "ok.xml"
    assert verify.main(["--only", "pl.duration", "--junit", str(junit)]) == 0
    case = ET.parse(junit).getroot().find("testcase")
    assert case.get("name") == "pl.duration" and case.find("failure") is None
    rc = cli.main(["verify", "--only", "pl.duration", "--junit", str(tmp_path / "missing" / "x.xml")])
    assert rc == 2 and "does not exist" in capsys.readouterr().err


def test_missing_numeric_module_gives_n_a(monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "toy_models.numeric_checks", None)   # import now fails
    assert verify.main(["--json", "--only", "pl.duration"]) == 0
    assert json.loads(capsys.readouterr().out)[0]["numeric"] == "n/a"


class _MissingDependency(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name == "toy_models.numeric_checks":
            raise ModuleNotFoundError("No module named 'some_dependency'", name="some_dependency")
        return None


def test_other_missing_modules_are_not_swallowed(monkeypatch):
    monkeypatch.delitem(sys.modules, "toy_models.numeric_checks", raising=False)
    monkeypatch.setattr(sys, "meta_path", [_MissingDependency(), *sys.meta_path])
    with pytest.raises(ModuleNotFoundError, match="some_dependency"):
        verify.main(["--only", "pl.duration"])


def test_real_command_end_to_end(tmp_path):
    """The installed entry point, in a fresh process: forked symbolic pool, real numeric column."""
    root = Path(__file__).resolve().parents[1]
    env = dict(os.environ, PYTHONPATH=str(root))
    proc = subprocess.run([sys.executable, "-m", "toy_models.cli", "verify", "--json", "--only", *CHEAP],
                          capture_output=True, text=True, timeout=240, env=env, cwd=root)
    assert proc.returncode == 0, proc.stderr
    rows = json.loads(proc.stdout)
    assert [(r["id"], r["symbolic"]) for r in rows] == [(i, "pass") for i in CHEAP]
    assert all(r["numeric"] in ("pass", "n/a") for r in rows)
