"""grpo.baseline, grpo.onpolicy, kl.k3: the checks pass, and fail when handed a wrong statement."""

from __future__ import annotations

import sympy as sp

from theory import estimators as m


def test_all_hold():
    for check in (m.check_baseline, m.check_onpolicy, m.check_k3):
        result = check()
        assert result.ok, result.summary()


def test_baseline_rejects_an_unbiased_claim_and_a_squared_factor():
    for wrong in (lambda g: 1, lambda g: (1 - 1 / g) ** 2):
        failed = {s.name for s in m.check_baseline(factor=wrong).steps if not s.ok}
        assert {"any G: group-mean baseline gives factor(G) grad J", "n=2, G=2: group-mean baseline"} <= failed


def test_onpolicy_rejects_a_clip_factor_in_the_gradient():
    result = m.check_onpolicy(gradient=lambda adv, clip: adv * (1 + clip))
    assert result.failed.name == "unclipped branch: d(rho A)/d logp at rho = 1"
    failed = {s.name for s in result.steps if not s.ok}
    assert {"clipped branch: d(clip(rho, 1 - eps, 1 + eps) A)/d logp at rho = 1",
            "full min(rho A, clip(rho) A) objective: slope at rho = 1"} <= failed



def test_k3_rejects_the_wrong_sign():
    wrong = lambda logp, ref: sp.exp(logp - ref) - (logp - ref) - 1  # noqa: E731
    failed = {s.name for s in m.check_k3(k3=wrong).steps if not s.ok}
    assert {"any n, any prompts: E_p[k3] = KL(p || ref)", "n=2: E_p[k3] = KL(p || ref)"} <= failed
