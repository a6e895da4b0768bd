"""Numeric column of thm31.robust and thm41.repaired: both pass, and a stronger (false) bound fails."""

from __future__ import annotations

from toy_models import repaired_checks as m
from toy_models.numeric_checks import NUMERIC_CHECKS


def test_registered_and_passing():
    assert NUMERIC_CHECKS["thm31.robust"] is m.check_thm31_robust
    assert NUMERIC_CHECKS["thm41.repaired"] is m.check_thm41_repaired
    for check in (m.check_thm31_robust, m.check_thm41_repaired):
        result = check()
        assert result.status == "pass", result.detail


def test_robust_rejects_a_halved_tv_term():
    result = m.check_thm31_robust(tv_scale=0.5)
    assert result.status == "fail" and "Delta L - bound" in result.detail


def test_repaired_rejects_a_doubled_kl_in_the_exponent():
    result = m.check_thm41_repaired(kl_scale=2.0)
    assert result.status == "fail" and "random policies" in result.detail
