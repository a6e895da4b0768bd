"""llm_check.predictions and the binary-reward closed forms behind them (docs/theory.md §6-§7)."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from numpy.testing import assert_allclose

from llm_check.predictions import ce_change_prediction, fixed_point_name, rl_target
from llm_check.run_config import GRPOConfig, grpo_setting
from theory.closed_forms import (binary_advantage_multiplier, binary_ce_change,
                                 binary_fixed_point)
from theory.errors import InputError

S = np.array([0.05, 0.3, 0.5, 0.7, 0.93])


def _advantages(r, baseline, std, ddof, eps):
    g = len(r)
    a = r - (r.mean() if baseline == "mean" else (r.sum() - r) / (g - 1))
    if std:
        a = a / (r.std(ddof=ddof) + eps)
    return a


@pytest.mark.parametrize("g,baseline,std,ddof", [(2, "mean", False, 1), (4, "loo", False, 1),
                                                  (5, "mean", True, 1), (3, "loo", True, 0),
                                                  (8, "mean", True, 1)])
def test_advantage_multiplier_by_brute_force_over_all_reward_vectors(g, baseline, std, ddof):
    """m(s) = E[A_1 | r_1 = 1] - E[A_1 | r_1 = 0], summed over all 2^G reward vectors."""
    want = []
    for s in S:
        acc = {0: 0.0, 1: 0.0}
        for r in itertools.product((0.0, 1.0), repeat=g):
            r = np.array(r)
            w = np.prod(np.where(r == 1, s, 1 - s)) / (s if r[0] == 1 else 1 - s)
            acc[int(r[0])] += w * _advantages(r, baseline, std, ddof, 1e-4)[0]
        want.append(acc[1] - acc[0])
    got = binary_advantage_multiplier(S, g, baseline=baseline, std_normalize=std, ddof=ddof)
    assert_allclose(got, want, rtol=1e-10, atol=1e-12)
    if not std:
        assert_allclose(got, 1.0 if baseline == "loo" else 1 - 1 / g, rtol=1e-12)


def test_forward_fixed_point_is_the_gibbs_tilt_and_its_ce_change_is_the_identity():
    beta, eps = 0.4, 0.3
    s = binary_fixed_point(S, beta, kl="forward")
    tilt = S * np.exp(1 / beta) / (S * np.exp(1 / beta) + 1 - S)
    assert_allclose(s, tilt, rtol=1e-12)
    # thm31.identity with a binary reward: log E_SFT e^{r/beta} - E_D r / beta
    identity = np.log1p(S * np.expm1(1 / beta)) - (1 - eps) / beta
    assert_allclose(binary_ce_change(S, s, eps), identity, rtol=1e-10, atol=1e-12)


def test_reverse_fixed_point_is_the_k3_stationary_point():
    """p_y = beta ref_y / (beta + J - r_y) with J = s: the closed-form root, and normalization."""
    beta = 0.3
    s = binary_fixed_point(S, beta, kl="reverse")
    root = ((1 - beta) + np.sqrt((1 - beta) ** 2 + 4 * beta * S)) / 2
    assert_allclose(s, root, rtol=1e-12)
    assert_allclose(beta * S / (beta + s - 1) + beta * (1 - S) / (beta + s), 1.0, rtol=1e-10)
    assert np.all(np.abs(s - binary_fixed_point(S, beta, kl="forward")) > 0.01)  # not p*


def test_predictions_per_setting():
    s = np.full(25, 0.7)
    eps = 0.3
    for beta in (0.25, 0.5, 1.0):
        exact = grpo_setting("exact", beta=beta)
        c1 = np.log(0.7 * np.exp(1 / beta) + 0.3) - 0.7 / beta  # C1 at the SFT optimum
        assert_allclose(ce_change_prediction(s, eps, exact), c1, rtol=1e-10)
        paper = grpo_setting("paper", beta=beta)
        m = binary_advantage_multiplier(rl_target(s, paper), paper.group_size, std_normalize=True)
        t = rl_target(s, paper)
        assert_allclose(beta * (t - s), m * t * (1 - t), rtol=1e-8)  # k3 stationarity at beta/m
    # the two settings are apart where theory says: beta = 0.25 and 1 (not 0.5)
    far = [abs(ce_change_prediction(s, eps, grpo_setting("exact", beta=b))
               - ce_change_prediction(s, eps, grpo_setting("paper", beta=b))) for b in (0.25, 1.0)]
    assert min(far) > 0.05
    # the negative control: a deterministic expert, RL can only lower the SFT loss
    for setting in ("exact", "paper"):
        assert ce_change_prediction(S, 0.0, grpo_setting(setting, beta=0.5)) < 0


def test_settings_without_a_closed_form_predict_nothing():
    assert rl_target(S, GRPOConfig(beta=0.0)) is None
    assert rl_target(S, GRPOConfig(std_normalize=True)) is None  # KL in the reward, std division
    assert rl_target(S, GRPOConfig(kl_mode="loss", kl_estimator="k1")) is None
    assert ce_change_prediction(S, 0.3, GRPOConfig(kl_mode="loss", kl_estimator="k1")) is None
    assert "Gibbs tilt" in fixed_point_name(grpo_setting("exact"))
    assert "k3" in fixed_point_name(grpo_setting("paper"))
    assert grpo_setting("paper").setting == "paper" and GRPOConfig().setting == "exact"
    assert GRPOConfig(baseline="mean").setting == "custom"


def test_bad_inputs_are_named():
    with pytest.raises(InputError, match="s_ref"):
        binary_fixed_point([0.0, 0.5], 0.5)
    with pytest.raises(InputError, match="beta"):
        binary_fixed_point([0.5], -1.0)
    with pytest.raises(InputError, match="kl"):
        binary_fixed_point([0.5], 1.0, kl="both")
    with pytest.raises(InputError, match="setting --setting"):
        grpo_setting("trl")
    with pytest.raises(InputError, match="kl_estimator"):
        GRPOConfig(kl_mode="reward", kl_estimator="k3").validate()


def test_coarse_target_law_and_its_kl():
    from llm_check.predictions import coarse_kl, coarse_target

    start = {"s": np.array([0.6, 0.7]), "log_wrong": np.log([0.3, 0.25])}
    s_star = np.array([0.9, 0.95])
    t = coarse_target(start, s_star)
    assert_allclose(t.sum(-1), 1.0, rtol=1e-12)
    assert_allclose(t[:, 1] / t[:, 2], [0.3 / 0.1, 0.25 / 0.05], rtol=1e-12)  # ratio kept
    at = {"s": t[:, 0], "log_wrong": np.log(t[:, 1])}
    assert abs(coarse_kl(t, at)) < 1e-12
    # the reward at its target but the unlisted mass not shrunk: target_gap 0, KL > 0
    off = {"s": t[:, 0], "log_wrong": np.log(t[:, 1] * 0.5)}
    assert coarse_kl(t, off) > 1e-3


def test_gibbs_drop_is_beta_kl_to_the_tilt():
    """[thm41.gibbs] on the three cells: J_beta(p*) - J_beta(p) = beta KL(p || p*) for any p, so
    from an RL run that reached p* the drop over SFT is the prediction, and from one that did not,
    it falls short by exactly beta KL(p_RL || p*). A wrong tilt (beta doubled) breaks both."""
    from llm_check.predictions import coarse_target, gibbs_drop

    rng = np.random.default_rng(3)
    law = lambda: {"s": rng.uniform(0.2, 0.8, 6), "log_wrong": np.log(rng.uniform(0.05, 0.15, 6))}  # noqa: E731
    ref, sft, rl = law(), law(), law()
    for beta in (0.25, 1.0):
        t = coarse_target(ref, binary_fixed_point(ref["s"], beta, kl="forward"))
        star = {"s": t[:, 0], "log_wrong": np.log(t[:, 1])}
        d = gibbs_drop(ref, star, sft, beta)
        assert d["kl_rl_to_tilt"] < 1e-12 and d["j_drop_pred"] > 1e-2
        assert_allclose(d["j_drop"], d["j_drop_pred"], rtol=1e-10)
        d = gibbs_drop(ref, rl, sft, beta)
        assert_allclose(d["j_drop"], d["j_drop_pred"] - beta * d["kl_rl_to_tilt"], rtol=1e-10,
                        atol=1e-12)
        wrong = coarse_target(ref, binary_fixed_point(ref["s"], 2 * beta, kl="forward"))
        not_star = {"s": wrong[:, 0], "log_wrong": np.log(wrong[:, 1])}
        d = gibbs_drop(ref, not_star, sft, beta)
        assert abs(d["j_drop"] - d["j_drop_pred"]) > 1e-3
