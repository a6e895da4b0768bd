"""The `coupling` dispatcher (toy_models/cli.py): routing, exit codes, the missing-extra message."""

from __future__ import annotations

import importlib.util

from toy_models import cli


def test_help_and_unknown_subcommand(capsys):
    assert cli.main(["--help"]) == 0
    assert "verify" in capsys.readouterr().out
    assert cli.main([]) == 2
    assert cli.main(["bogus"]) == 2
    assert "unknown subcommand 'bogus'" in capsys.readouterr().err


def test_llm_without_its_extra_is_one_line_and_exit_2(monkeypatch, capsys):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "flax" else real(name, *a))
    assert cli.main(["llm", "run"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "flax" in err and "[llm]" in err


def test_input_error_from_a_subcommand_is_exit_2(capsys):
    assert cli.main(["verify", "--only", "no.such.claim"]) == 2
    assert "unknown claim ID" in capsys.readouterr().err
