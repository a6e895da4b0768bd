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
    """An --out the user may not write is refused up front, not after minutes of work (tested by
    making the access check say no: the tests may run as a user who can write anywhere)."""
    from toy_models import sweep

    monkeypatch.setattr(sweep.os, "access", lambda path, mode: False)
    monkeypatch.setattr(sweep, "random_batch", lambda *a, **k: pytest.fail("work was started"))
    assert coupling(["toy", "sweep", "--out", str(tmp_path / "out")]) == 2
    assert "not writable" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()
