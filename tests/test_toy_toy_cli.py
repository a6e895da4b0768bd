"""``coupling toy ...`` through the real dispatcher: output, JSON, and bad input as one line with exit 2."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from toy_models.cli import main as coupling

EXAMPLE = Path(__file__).resolve().parents[1] / "toy_models" / "examples" / "counterexample_thm41.json"


def test_analyze_counterexample_text_and_json(capsys):
    assert coupling(["toy", "analyze", str(EXAMPLE)]) == 0
    out = capsys.readouterr().out
    for number in ("0.7376", "0.7630", "0.7921"):
        assert number in out
    assert coupling(["toy", "analyze", str(EXAMPLE), "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert [round(r["reward"], 4) for r in data["sft_after_rl"]] == [0.7376, 0.7630, 0.7921]


@pytest.mark.parametrize("content, message", [
    ('{"prompt_weights": [1.0], "expert": [[0.9, 0.2]], "reward": [[1, 0]], "beta": 1}', "sums to"),
    ('{"prompt_weights": [1.0], "expert": [[1.1, -0.1]], "reward": [[1, 0]], "beta": 1}', "negative probability"),
    ('{"prompt_weights": [1.0], "expert": [[0.5, 0.5]], "reward": [[1, 0, 2]], "beta": 1}', "has shape"),
    ('{"prompt_weights": [1.0], "expert": [[NaN, 0.5]], "reward": [[1, 0]], "beta": 1}', "NaN"),
    ('{"prompt_weights": [1.0], "expert": [[0.5, 0.5]], "reward": [[1, 0]], "beta": 0}', "`beta` must be > 0"),
    ('{"prompt_weights": [1.0], "expert": [[0.5, 0.5]], "beta": 1}', "missing key `reward`"),
    ('{"prompt_weights": [1.0], ', "invalid JSON"),
    ('{"prompt_weights": [1.0], "expert": [[0.5, 0.5]], "reward": [[1e300, 0]], "beta": 1}',
     "range over `beta` is 1e+300"),
    ('{"prompt_weights": [1.0], "expert": [[0.5, 0.5]], "reward": [[1, 0]], "beta": 1e-300}',
     "must be <= 700"),
])
def test_bad_instance_is_one_line_on_stderr_and_exit_2(tmp_path, capsys, content, message):
    path = tmp_path / "bad.json"
    path.write_text(content)
    assert coupling(["toy", "analyze", str(path)]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1 and "Traceback" not in err


def test_missing_file_and_unknown_claim(tmp_path, capsys):
    assert coupling(["toy", "analyze", str(tmp_path / "nope.json")]) == 2
    assert "no such file" in capsys.readouterr().err
    assert coupling(["toy", "explore", "--claim", "thm99"]) == 2
    assert "unknown claim ID" in capsys.readouterr().err
    assert coupling(["toy", "explore", "--claim", "thm41.paper", "--budget", "0"]) == 2
    capsys.readouterr()
    assert coupling(["toy", "explore", "--claim", "thm41.paper", "--seed", "-1"]) == 2
    assert coupling(["toy", "sweep", "--out", str(tmp_path / "s"), "--seed", "-1"]) == 2
    assert capsys.readouterr().err.count("--seed -1: must be >= 0") == 2
    assert not (tmp_path / "s").exists()


def test_explore_true_claim_reports_none_with_count(capsys):
    # random search, then the gradient refinement of the 16 lowest margins: still none
    assert coupling(["toy", "explore", "--claim", "thm41.gibbs", "--budget", "1024", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert not data["found"] and data["tried"] == 1024 + 16 and data["counterexample"] is None
    assert data["best_margin"] >= 0


def test_sweep_refuses_a_file_as_output(tmp_path, capsys):
    target = tmp_path / "file"
    target.write_text("x")
    assert coupling(["toy", "sweep", "--out", str(target)]) == 2
    assert "not a directory" in capsys.readouterr().err


def test_analyze_reads_its_file_as_utf8_whatever_the_locale(tmp_path):
    """The file is UTF-8 (checked when it is loaded); nothing reads it again in the locale's
    encoding, so a C locale without Python's UTF-8 mode still works."""
    import os
    import subprocess
    import sys

    text = EXAMPLE.read_text(encoding="utf-8").replace('{', '{"_c": "β = 1/2, ε",', 1)
    path = tmp_path / "utf8.json"
    path.write_text(text, encoding="utf-8")
    env = dict(os.environ, LC_ALL="C", LANG="C", PYTHONUTF8="0", PYTHONCOERCECLOCALE="0",
               PYTHONIOENCODING="utf-8", JAX_PLATFORMS="cpu")
    proc = subprocess.run([sys.executable, "-m", "toy_models.cli", "toy", "analyze", str(path)],
                          env=env, capture_output=True, text=True, encoding="utf-8", timeout=120,
                          cwd=Path(__file__).resolve().parents[1])
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "0.7376" in proc.stdout


def test_sweep_refuses_an_output_it_cannot_write_before_any_work(tmp_path, capsys, monkeypatch):
    """An --out the user may not write is refused up front, not after minutes of work: the
    folder itself when it exists, and always its parent, where the work is written first (tested
    by making the access check say no: the tests may run as a user who can write anywhere)."""
    from toy_models import sweep

    monkeypatch.setattr(sweep, "random_batch", lambda *a, **k: pytest.fail("work was started"))
    out = tmp_path / "out"
    for denied, exists in ((tmp_path, False), (out, True), (tmp_path, True)):
        if exists:
            out.mkdir(exist_ok=True)
        monkeypatch.setattr(sweep.os, "access",
                            lambda path, mode, denied=denied: Path(path).resolve() != denied.resolve())
        assert coupling(["toy", "sweep", "--out", str(out)]) == 2
        assert f"{denied.resolve() if denied == tmp_path else denied} is not writable" in \
            capsys.readouterr().err
