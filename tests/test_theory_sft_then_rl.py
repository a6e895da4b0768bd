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
    failed = {step.name for step in result.steps if not step.ok}
    assert failed == {"any n, any prompts: L(p_RL) - L(p_SFT) = claimed", "n=2, 1 prompt: identity"}


def _failed(result):
    return {step.name for step in result.steps if not step.ok}


def test_identity_rejects_a_partition_function_at_two_beta():
    wrong = lambda s, pd, r, b: sp.log(partition(s, r, 2 * b)) - expectation(pd, r) / b  # noqa: E731
    result = m.check_identity(claimed=wrong, configs=((2, 1),))
    assert _failed(result) == {"any n, any prompts: L(p_RL) - L(p_SFT) = claimed", "n=2, 1 prompt: identity"}


def test_identity_lhs_does_not_share_the_partition_function(monkeypatch):
    """A bug in objectives.partition (Z at 2 beta) reaches only the claimed side, so it fails."""
    import theory.objectives as objectives
    real = objectives.partition
    monkeypatch.setattr(objectives, "partition", lambda p, r, b: real(p, r, 2 * b))
    monkeypatch.setattr(m, "partition", objectives.partition)
    result = m.check_identity(configs=((2, 1),))
    assert "any n, any prompts: L(p_RL) - L(p_SFT) = claimed" in _failed(result)
    assert "n=2, 1 prompt: identity" in _failed(result)


def test_c1_rejects_a_wrong_sign():
    wrong = lambda pd, r, b: sp.log(partition(pd, r, b)) + expectation(pd, r) / b  # noqa: E731
    result = m.check_c1(claimed=wrong, configs=((2, 1),))
    assert result.failed.name == "any n, any prompts: increase at the SFT optimum = claimed C1"
    assert "n=2, 1 prompt: increase at the SFT optimum" in {s.name for s in result.steps if not s.ok}


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


def test_threshold_reward_maximal_case_is_proved_not_sampled():
    result = m.check_threshold()
    kinds = {s.name: s.kind for s in result.steps}
    assert kinds["sum_i s_i (1 - e^{-g_i/beta}) >= 0, so Delta L = log(1 - that) <= log 1 = 0"] == "sum_nonnegative"
    assert "at_least" not in kinds.values()


def test_threshold_rejects_a_wrong_variance_term_and_a_wrong_example_number():
    assert m.check_threshold(var_coefficient=1).failed.name == "large beta: Delta L in moment coordinates"
    numbers = dict(m.THRESHOLD_EXAMPLE, **{"beta=1": "0.447"})
    assert m.check_threshold(example=numbers).failed.name == "example: CE after RL, beta=1"


def test_c1_rejects_a_planted_error_in_closed_forms_c1():
    """theory.closed_forms.c1 (used by the LLM report's prediction) is cross-checked by thm31.c1."""
    import types

    from theory import closed_forms
    planted = types.SimpleNamespace(**{k: getattr(closed_forms, k) for k in dir(closed_forms) if not k.startswith("_")})
    planted.c1 = lambda q, pd, r, b: closed_forms.c1(q, pd, r, 1.01 * b)   # a 1% error in beta
    result = m.check_c1(closed=planted)
    assert not result.ok
    assert {s.name for s in result.steps if not s.ok} == {
        "closed_forms.c1 = sympy C1 (beta = 3/4)", "closed_forms.c1 = sympy C1 (beta = 5/2)"}
    assert m.check_c1().ok
