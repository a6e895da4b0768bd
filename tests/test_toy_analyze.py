"""``analyze`` on docs/theory.md §4 counterexample 2 (the shipped example file)."""

from __future__ import annotations

from pathlib import Path

import pytest
from numpy.testing import assert_allclose

from toy_models.analyze import analyze, format_text
from toy_models.instance import load_instance

EXAMPLE = Path(__file__).resolve().parents[1] / "toy_models" / "examples" / "counterexample_thm41.json"
CONTRACT_KEYS = {"c1_closed_form", "c1_measured", "sft_loss_change_after_rl", "rl_optimum_reward",
                 "rl_optimum_objective", "sft_after_rl"}


@pytest.fixture(scope="module")
def result():
    inst, steps = load_instance(EXAMPLE)
    return analyze(inst, steps, has_sft_policy=False)


def test_contract_keys(result):
    assert CONTRACT_KEYS <= set(result)
    assert all(set(row) == {"eta", "reward", "objective", "objective_drop", "kl_to_rl"}
               for row in result["sft_after_rl"])


def test_counterexample_numbers(result):
    assert_allclose(result["rl_optimum_reward"], 0.7311, atol=5e-5)
    rows = result["sft_after_rl"]
    assert [r["eta"] for r in rows] == [0.1, 0.5, 1.0]
    assert_allclose([r["reward"] for r in rows], [0.7376, 0.7630, 0.7921], atol=5e-5)
    # the raw reward rises while the objective drops by exactly β·KL (β = 1)
    assert all(r["reward"] > result["rl_optimum_reward"] for r in rows)
    assert_allclose([r["objective_drop"] for r in rows], [r["kl_to_rl"] for r in rows], rtol=1e-12, atol=1e-15)
    assert_allclose([r["objective_drop"] for r in rows], [1.11e-4, 2.66e-3, 1.00e-2], rtol=6e-3)


def test_closed_form_and_measured_side_by_side(result):
    assert_allclose(result["c1_measured"], result["c1_closed_form"], rtol=1e-10)
    for row in result["side_by_side"]:
        if "local" not in row["quantity"]:
            assert abs(row["difference"]) < 1e-10, row
    text = format_text(result)
    assert "0.7376" in text and "0.7921" in text and "closed form" in text
