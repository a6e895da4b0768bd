"""pl.* and spectral.*: the checks pass, and fail when handed a wrong statement."""

from __future__ import annotations

import sympy as sp

from theory import landscape as m
from theory.symbols import topk_z


def test_all_hold():
    for check in (m.check_rate, m.check_displacement, m.check_degradation, m.check_duration,
                  m.check_threshold, m.check_kantorovich, m.check_topk):
        result = check()
        assert result.ok, result.summary()


def test_rate_rejects_a_faster_rate():
    result = m.check_rate(rate=lambda mu, T: sp.exp(-3 * mu * T))
    failed = {s.name for s in result.steps if not s.ok}
    assert {"the claimed rate solves the comparison ODE y' = -2 mu y", "the rate on the quadratic instance"} <= failed


def test_displacement_rejects_a_wrong_integral():
    wrong = lambda ell, d0, mu, T: sp.sqrt(2 * ell * d0) / mu * (1 - sp.exp(-2 * mu * T))  # noqa: E731
    assert m.check_displacement(bound=wrong).failed.name == "integral of the speed bound"


def test_degradation_rejects_a_missing_factor():
    wrong = lambda Ls, ell, d0, mu, T: m.degradation_bound(Ls, ell, d0, mu, T) / 2  # noqa: E731
    assert m.check_degradation(bound=wrong).failed.name == "(L_s/2) * displacement bound^2"


def test_duration_rejects_a_wrong_t_star_and_a_wrong_example_value():
    wrong = lambda mu, w, Ls, ell: sp.log(1 + mu / (w * Ls * ell)) / mu  # noqa: E731
    assert m.check_duration(t_star=wrong).failed.name == "stationary at T*"
    assert m.check_duration(stated="0.4910").failed.kind == "approx"


def test_threshold_rejects_a_wrong_constant():
    wrong = lambda Ls, eta, g, muL, cos: Ls ** 2 * eta ** 2 * g ** 2 / (16 * muL * cos ** 2)  # noqa: E731
    result = m.check_threshold(threshold=wrong)
    assert result.failed.name.startswith("PL: ")


def test_threshold_numeric_step_bites_on_a_too_small_threshold():
    # A threshold 100x too small claims a drop where the quadratic instance rises.
    result = m.check_threshold(threshold=lambda *a: m.pl_threshold(*a) / 100)
    names = [s.name for s in result.steps if not s.ok]
    assert "L - L* > threshold => L drops (quadratic instance)" in names


def test_kantorovich_rejects_a_larger_bound():
    result = m.check_kantorovich(bound=lambda k: sp.sqrt(2 * sp.sqrt(k) / (1 + k)))
    names = {s.name for s in result.steps if not s.ok}
    assert {"the claimed bound squared is 4 M m/(M + m)^2 with kappa = M/m",
            "2-D: the minimum value is the claimed bound squared"} == names


def test_kantorovich_is_proved_for_any_dimension_not_sampled():
    result = m.check_kantorovich()
    assert result.ok and not any(s.sampled for s in result.steps)
    assert any(s.kind == "sum_equal" and s.name.startswith("any N") for s in result.steps)


def test_topk_rejects_lambda_1_instead_of_lambda_k():
    result = m.check_topk(bound=lambda lam_k, top: sum(topk_z) * top / 2)
    assert "k=2: g^T H g / 2 - bound >= 0" in {s.name for s in result.steps if not s.ok}


def test_rate_rejects_the_weaker_but_true_e_minus_mu_t():
    """e^{-mu T} >= e^{-2 mu T}, so the bound stays true; the pinned constant must still fail."""
    result = m.check_rate(rate=lambda mu, T: sp.exp(-mu * T))
    assert not result.ok
    failed = {s.name for s in result.steps if not s.ok}
    assert "the claimed rate solves the comparison ODE y' = -2 mu y" in failed
    assert "tight: on the mu-eigendirection the gap is exactly rate * Delta_0" in failed


def test_topk_rejects_a_halved_bound():
    result = m.check_topk(bound=lambda lam_k, top: lam_k * top / 4)
    assert not result.ok
    assert result.failed.kind == "sum_equal"


def test_pl_threshold_rejects_a_threshold_four_times_too_small():
    result = m.check_threshold(threshold=lambda *a: m.pl_threshold(*a) / 4)
    assert not result.ok
    assert "PL: at ||grad L|| = sqrt(2 mu_L (L - L*)) the claimed threshold on L - L* meets the cos threshold" in {
        s.name for s in result.steps if not s.ok}


def test_pl_threshold_rejects_a_halved_cos_threshold():
    result = m.check_threshold(cos_condition=lambda *a: m.cos_threshold(*a) / 2)
    assert result.failed.name == "the descent bound is 0 exactly at the claimed cos threshold"
