"""thm41.gibbs/local/argmax/pinsker: the checks pass, and fail when handed a wrong statement."""

from __future__ import annotations

import sympy as sp

from theory import rl_then_sft as m
from theory.symbols import nonneg_vector


def test_all_hold():
    for check in (m.check_gibbs, m.check_local, m.check_argmax, m.check_pinsker):
        result = check()
        assert result.ok, result.summary()


def test_gibbs_rejects_a_wrong_factor():
    result = m.check_gibbs(drop=lambda b, kl_value: 2 * b * kl_value, configs=((2, 1),))
    failed = {s.name for s in result.steps if not s.ok}
    assert {"any n, any prompts: J_beta(p*) - J_beta(p) = claimed drop",
            "n=2, 1 prompt: J_beta(p*) - J_beta(p) = beta E_x KL(p || p*)"} <= failed


def test_local_rejects_the_hessian_sign_flipped():
    result = m.check_local(hessian_sign=+1)
    assert result.failed.name == "n=2: w^T (Hessian) w = -beta q Var_p*(w)"


def test_local_rejects_a_wrong_power_of_q():
    result = m.check_local(q_power=2)
    assert result.failed.name == "n=2: Delta J_beta of the SFT step"


def test_argmax_rejects_the_full_reward_range_as_the_gap():
    # Using max r - min r instead of the gap delta to the best non-optimal response is not a lower bound.
    e = nonneg_vector("e", 3)[2]
    result = m.check_argmax(bound=lambda gap, mass_off: (gap + e) * mass_off)
    assert not result.ok
    assert "bound = sum" in result.failed.name


def test_pinsker_rejects_a_too_small_constant():
    result = m.check_pinsker(bound=lambda spread, kl_value: spread * sp.sqrt(kl_value / 8))
    assert result.failed.name == "the claimed bound is Delta r sqrt(E KL / 2)"


def test_pinsker_weaker_true_constant_fails_too_and_nothing_is_sampled():
    result = m.check_pinsker(bound=lambda spread, kl_value: spread * sp.sqrt(kl_value))
    assert result.failed.name == "the claimed bound is Delta r sqrt(E KL / 2)"
    assert not any(s.sampled for s in m.check_pinsker().steps)


def test_pinsker_rejects_a_halved_range_constant_in_the_tv_step():
    result = m.check_pinsker(range_constant=lambda hi, lo: (hi - lo) / 2)
    failed = {s.name for s in result.steps if not s.ok}
    assert any("(M - m) TV - (E_p f - E_p' f)" in name for name in failed), failed
    assert any("(M - m) TV + (E_p f - E_p' f)" in name for name in failed), failed


def test_pinsker_tv_step_is_derived_and_cross_checked():
    steps = [s for s in m.check_pinsker().steps if s.name.startswith("any n, f = r ")]
    assert len(steps) == 7 and all(s.ok for s in steps)
    assert all("no random cross-check" not in s.reason for s in steps)
