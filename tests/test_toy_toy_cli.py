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
