"""thm41.paper [refuted]: both counterexamples reproduce; a number off by one digit fails."""

from __future__ import annotations

import pytest
import sympy as sp

from theory import counterexamples as m


def test_counterexamples_reproduce():
    result = m.check_counterexamples()
    assert result.ok, result.summary()


@pytest.mark.parametrize("key,wrong", [("ce1.kl", "0.130813"), ("ce2.J.eta=0.5", "0.7631"),
                                       ("ce2.drop.eta=0.1", "1.12e-4"), ("ce2.J", "0.7312")])
def test_a_number_off_fails(key, wrong):
    result = m.check_counterexamples(stated=dict(m.STATED, **{key: wrong}))
    assert not result.ok
    assert result.failed.kind == "approx"


def test_sft_step_is_gradient_descent_on_the_sft_loss():
    theta = [sp.Integer(1), sp.Integer(0)]
    expert = (sp.Rational(9, 10), sp.Rational(1, 10))
    stepped = m.sft_step(theta, expert, sp.Rational(1, 10))
    p = m.softmax(theta)
    assert sp.simplify(stepped[0] - (1 - (p[0] - expert[0]) / 10)) == 0
    # The logit gap grows by 2 eta (p_D1 - p1): the step moves towards the expert.
    assert float(stepped[0] - stepped[1]) > 1.0
