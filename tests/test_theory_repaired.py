"""thm41.repaired and thm31.robust: the checks pass, and fail when handed a wrong statement."""

from __future__ import annotations

import sympy as sp

from theory import repaired as m


def _failed(result):
    return {s.name for s in result.steps if not s.ok}


def test_both_hold():
    for check in (m.check_repaired, m.check_robust):
        result = check()
        assert result.ok, result.summary()


def test_repaired_rejects_a_doubled_kl_in_the_exponent():
    result = m.check_repaired(bound=lambda gap, kl: gap * (1 - sp.exp(-2 * kl)))
    assert "any n: J(p_RL) - J(p) - claimed bound = sum_{i != a*} p_i e_i" in _failed(result)


def test_repaired_rejects_a_wrong_tie_kl():
    assert m.check_repaired(stated_kl="0.1309").failed.kind == "approx"


def test_robust_rejects_a_halved_tv_term():
    result = m.check_robust(bound=lambda c, w, tv: c + sp.log(1 - (sp.exp(w) - 1) * tv / 2))
    assert "the claimed bound is what the chain gives: C1 + log(1 - (e^{Delta r/beta} - 1) TV)" in _failed(result)


def test_robust_rejects_a_halved_range_constant_in_the_tv_step():
    result = m.check_robust(range_constant=lambda hi, lo: (hi - lo) / 2)
    failed = _failed(result)
    assert any("(M - m) TV - (E_s f - E_d f)" in name for name in failed), failed
    assert any("(M - m) TV + (E_s f - E_d f)" in name for name in failed), failed


def test_robust_tv_step_is_derived_not_assumed():
    steps = [s for s in m.check_robust().steps if "f = e^{r/beta}" in s.name]
    assert len(steps) == 7 and all(s.ok for s in steps)
    assert all("no random cross-check" not in s.reason for s in steps)
