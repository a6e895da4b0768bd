"""``coupling toy sweep``: the full run is slow (plots over many instances); the error path is not."""

from __future__ import annotations

import json

import pytest

from theory.errors import InputError
from toy_models.sweep import sweep

EXPECTED = {"sft_loss_during_rl.png", "objective_reward_during_sft.png", "c1_vs_beta.png", "pl_tradeoff.png",
            "grad_cos_during_rl.png", "metrics.json", "metrics.jsonl"}


def test_out_must_be_a_directory(tmp_path):
    (tmp_path / "f").write_text("")
    with pytest.raises(InputError, match="not a directory"):
        sweep(tmp_path / "f")
    with pytest.raises(InputError, match="parent directory"):
        sweep(tmp_path / "missing" / "out")


@pytest.mark.slow
def test_sweep_writes_every_plot_and_metric(tmp_path):
    import jax

    with jax.enable_x64(True):
        names = sweep(tmp_path / "out")
    assert set(names) == EXPECTED
    metrics = json.loads((tmp_path / "out" / "metrics.json").read_text())
    assert metrics["objective_reward_during_sft"]["objective_change_max"] < 0
    assert metrics["objective_reward_during_sft"]["counterexample_reward_change"] > 0
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".sweep-")]  # no temp dir left
