"""toy_models.fixed_points: the four numeric checks pass, and fail when the code they guard is broken."""

from __future__ import annotations

import numpy as np

from theory import closed_forms as cf
from toy_models import fixed_points as fp


def test_kl_grad_passes_and_fails_when_k3_claimed_forward(monkeypatch):
    assert fp.check_kl_grad().status == "pass"
    monkeypatch.setattr(fp, "CLAIMED_KL", {**fp.CLAIMED_KL, "k3": "forward"})
    res = fp.check_kl_grad()
    assert res.status == "fail" and "k3" in res.detail


def test_kl_token_passes():
    res = fp.check_kl_token()
    assert res.status == "pass", res.detail


def test_grpo_fixedpoint_fails_without_the_group_factor(monkeypatch):
    real = cf.estimator_fixed_point

    def no_factor(ref, reward, beta, g, baseline="rloo", kl="k2", **kw):
        return real(ref, reward, beta, g, "rloo" if baseline == "mean" else baseline, kl, **kw)
    monkeypatch.setattr(fp.cf, "estimator_fixed_point", no_factor)
    res = fp.check_grpo_fixedpoint()
    assert res.status == "fail" and "mean+k2" in res.detail


def test_thm31_path_fails_with_tau_equal_t(monkeypatch):
    assert fp.check_thm31_path().status == "pass"
    monkeypatch.setattr(fp, "tau", lambda t, beta: t + 0 * beta)
    assert fp.check_thm31_path().status == "fail"


def test_std_multiplier_mean_limit():
    # with a huge eps floor the std division is a constant rescaling: m = (1 - 1/G)/eps
    s = np.array([0.2, 0.5])
    assert np.allclose(cf.std_division_multiplier(s, 4, std_floor=1e6) * 1e6, 0.75, rtol=1e-5)


def test_grpo_fixedpoint_tells_the_std_divisions_ddof_apart(monkeypatch):
    """A claimed fixed point for the std-divided advantages with the other ddof (0 for 1) is 0.016
    from the true one: the sampled GRPO run must reject it (the tolerance is 5e-3)."""
    real = cf.estimator_fixed_point

    def other_ddof(ref, reward, beta, g, baseline="rloo", kl="k2", ddof=1, **kw):
        return real(ref, reward, beta, g, baseline, kl, ddof=1 - ddof, **kw)
    monkeypatch.setattr(fp.cf, "estimator_fixed_point", other_ddof)
    res = fp.check_grpo_fixedpoint()
    assert res.status == "fail" and "sampled GRPO" in res.detail


def test_grpo_fixedpoint_rejects_a_claimed_fixed_point_off_by_001(monkeypatch):
    """Moving 0.01 of probability between two answers of the claimed std-division fixed point
    (40x the sampled run's error) fails the check; the old tolerance of 0.02 let it pass."""
    real = cf.estimator_fixed_point

    def shifted(ref, reward, beta, g, baseline="rloo", kl="k2", **kw):
        p = np.array(real(ref, reward, beta, g, baseline, kl, **kw))
        if baseline == "std":
            p[0, 0] -= 0.01
            p[0, 1] += 0.01
        return p
    monkeypatch.setattr(fp.cf, "estimator_fixed_point", shifted)
    res = fp.check_grpo_fixedpoint()
    assert res.status == "fail" and "sampled GRPO" in res.detail
