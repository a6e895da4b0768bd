"""thm31.* and threshold.kl: the checks pass, and fail when handed a wrong statement."""

from __future__ import annotations

import sympy as sp

from theory import sft_then_rl as m
from theory.objectives import expectation, partition


def test_all_hold():
    for check in (m.check_identity, m.check_c1, m.check_beta, m.check_local, m.check_threshold):
        result = check()
        assert result.ok, result.summary()


def test_identity_rejects_a_missing_one_over_beta():
    wrong = lambda s, pd, r, b: sp.log(partition(s, r, b)) - expectation(pd, r)  # noqa: E731
    result = m.check_identity(claimed=wrong, configs=((2, 1),))
    assert result.failed.name == "n=2, 1 prompt: identity"


def test_c1_rejects_a_wrong_sign():
    wrong = lambda pd, r, b: sp.log(partition(pd, r, b)) + expectation(pd, r) / b  # noqa: E731
    result = m.check_c1(claimed=wrong, configs=((2, 1),))
    assert result.failed.name == "n=2, 1 prompt: increase at the SFT optimum"


def test_beta_rejects_var_over_three_beta_squared():
    result = m.check_beta(coefficients=(sp.Rational(1, 3), sp.Rational(1, 6)))
    assert result.failed.name == "cumulant series of f(t) = log E e^{tr} - t E r"


def test_beta_rejects_a_wrong_third_cumulant_coefficient():
    result = m.check_beta(coefficients=(sp.Rational(1, 2), sp.Rational(1, 3)))
    assert result.failed.name == "cumulant series of f(t) = log E e^{tr} - t E r"


def test_beta_rejects_a_small_beta_form_without_log_mass():
    result = m.check_beta(small_beta=lambda gap, tt, mass: gap * tt)
    assert not result.ok
    assert "small-beta form" in result.failed.name


def test_local_rejects_a_wrong_quadratic_coefficient():
    result = m.check_local(half=sp.Rational(1, 3))
    assert result.failed.name == "cumulant series"


def test_threshold_rejects_a_wrong_variance_term_and_a_wrong_example_number():
    assert m.check_threshold(var_coefficient=1).failed.name == "large beta: Delta L in moment coordinates"
    numbers = dict(m.THRESHOLD_EXAMPLE, **{"beta=1": "0.447"})
    assert m.check_threshold(example=numbers).failed.name == "example: CE after RL, beta=1"
