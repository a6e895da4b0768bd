"""The derivation engine: each step kind accepts true statements and rejects false ones."""

from __future__ import annotations

import sympy as sp

from theory import derivation as d
from theory.symbols import beta, eta, prob_vector, real_vector, t

x = sp.Symbol("x", real=True)


def _one(step, **kw):
    result = d.verify("test", [step], **kw)
    return result.ok, result.steps[0].reason


def test_equal_accepts_identity_and_rejects_a_wrong_one():
    assert _one(d.equal("square", (x + 1) ** 2, x ** 2 + 2 * x + 1, ""))[0]
    ok, reason = _one(d.equal("square", (x + 1) ** 2, x ** 2 + x + 1, ""))
    assert not ok and "differ at random points" in reason


def test_exact_check_catches_what_the_numbers_miss():
    # 1e-12 x is below the numeric tolerance; only the exact simplification sees it.
    ok, reason = _one(d.equal("tiny", x, x + sp.Rational(1, 10 ** 12) * x, ""))
    assert not ok and "does not simplify" in reason


def test_equal_uses_the_simplex_constraint_and_split_logs():
    p = prob_vector("p", 3)
    assert _one(d.equal("sum", sum(p), 1, ""), simplices=[p])[0]
    assert not _one(d.equal("sum", sum(p), 1, ""))[0]          # without the constraint it is false
    assert _one(d.equal("log", sp.log(p[0] * sp.exp(x / beta)), sp.log(p[0]) + x / beta, ""))[0]


def test_numeric_cross_check_catches_what_simplify_misses(monkeypatch):
    # Pretend the exact check passes: the random-point cross-check must still reject x != x + 1e-3.
    monkeypatch.setattr(d, "_is_zero", lambda expr, constraint: True)
    ok, reason = _one(d.equal("shifted", x, x + sp.Rational(1, 1000), ""))
    assert not ok and "numeric cross-check" in reason


def test_series_checks_the_order(monkeypatch):
    assert _one(d.series("exp", sp.exp(eta), 1 + eta + eta ** 2 / 2, eta, 3, ""))[0]
    ok, reason = _one(d.series("exp", sp.exp(eta), 1 + eta + eta ** 2 / 3, eta, 3, ""))
    assert not ok and "grows" in reason
    # The exact part alone also rejects it.
    monkeypatch.setattr(d, "_numeric", lambda *a: (True, ""))
    ok, reason = _one(d.series("exp", sp.exp(eta), 1 + eta + eta ** 2 / 3, eta, 3, ""))
    assert not ok and "eta^2 coefficient" in reason


def test_series_numeric_check_detects_a_low_order_remainder(monkeypatch):
    monkeypatch.setattr(d, "_first_nonzero_taylor", lambda *a: None)
    ok, reason = _one(d.series("exp", sp.exp(eta), 1 + eta, eta, 3, ""))
    assert not ok and "grows" in reason


def test_limit_and_nonnegative_and_at_least():
    g = sp.Symbol("g", positive=True)
    assert _one(d.limit("decay", 1 + sp.exp(-t * g), 1, t, sp.oo, ""))[0]
    assert not _one(d.limit("decay", 1 + sp.exp(-t * g), 2, t, sp.oo, ""))[0]
    a, b = sp.symbols("a b", nonnegative=True)
    assert _one(d.nonnegative("sum", a * x ** 2 + b, ""))[0]
    assert not _one(d.nonnegative("diff", a - b, ""))[0]
    assert _one(d.at_least("amgm", (a + b) / 2, sp.sqrt(a * b), ""))[0]
    ok, reason = _one(d.at_least("wrong", sp.sqrt(a * b), (a + b) / 2, ""))
    assert not ok and "violated at a random point" in reason


def test_approx_uses_the_printed_precision():
    assert _one(d.approx("e", sp.E, "2.718", ""))[0]
    assert not _one(d.approx("e", sp.E, "2.717", ""))[0]
    assert _one(d.approx("small", sp.Rational(111, 10 ** 6), "1.11e-4", ""))[0]
    assert not _one(d.approx("small", sp.Rational(112, 10 ** 6), "1.11e-4", ""))[0]
    assert _one(d.close("pi", sp.pi, sp.pi + 0 * x, ""))[0]
    assert not _one(d.close("pi", sp.pi, sp.Rational(355, 113), ""))[0]


def test_result_names_the_failing_step_and_keeps_going():
    r = real_vector("r", 2)
    result = d.verify("demo", [d.equal("good", r[0] + r[1], r[1] + r[0], ""),
                               d.equal("bad", r[0], r[1], ""),
                               d.equal("after", r[0] * 2, 2 * r[0], "")])
    assert not result.ok
    assert result.failed.name == "bad"
    assert [s.ok for s in result.steps] == [True, False, True]
    assert "1/3 steps failed; first: 'bad'" in result.summary()


def test_an_exception_in_a_step_fails_only_that_step():
    result = d.verify("demo", [d.Step("odd", x, x, "", kind="no-such-kind"), d.equal("fine", x, x, "")])
    assert [s.ok for s in result.steps] == [False, True]
    assert "unknown step kind" in result.steps[0].reason


def test_a_sum_step_is_cross_checked_at_every_size_it_is_given():
    """n^2 = 5n - 6 holds at n = 2 and 3 only: the default cross-check (n = 3) lets the exact
    check reject it; with ``at`` the numbers catch it at n = 4, the one point where it is false."""
    n, j = sp.symbols("n j", integer=True, positive=True)
    at = ({n: 2, j: 1}, {n: 3, j: 2}, {n: 4, j: 4})
    r = d.verify("t", [d.sum_equal("false at n = 4", n ** 2, 5 * n - 6, "", sizes=(n, j), at=at)])
    assert not r.ok and "differ at n = 4, j = 4" in r.steps[0].reason, r.steps[0].reason
    r = d.verify("t", [d.sum_equal("false at n = 4", n ** 2, 5 * n - 6, "", sizes=(n, j))])
    assert not r.ok and "does not reduce to 0" in r.steps[0].reason, r.steps[0].reason
    ok = d.verify("t", [d.sum_equal("true", n * (n + 1), n ** 2 + n, "", sizes=(n, j), at=at)])
    assert ok.ok and ok.steps[0].reason.endswith("n = 2, j = 1; n = 3, j = 2; n = 4, j = 4")
