"""theory.sums: each rule of the normalizer, that it proves true identities for symbolic n, and
that it refuses false ones (a False is "not shown", never a wrong proof)."""

from __future__ import annotations

import numpy as np
import pytest
import sympy as sp

from theory import sums

n = sp.Symbol("n", integer=True, positive=True)
k = sp.Symbol("k", integer=True, positive=True)
i, j = sp.symbols("i j", integer=True, positive=True)
p = sp.IndexedBase("p", positive=True)
pi = sp.IndexedBase("pi", positive=True)
r = sp.IndexedBase("r", real=True)
v = sp.IndexedBase("v", real=True)
c, beta = sp.Symbol("c", real=True), sp.Symbol("beta", positive=True)
ONE = (sums.sums_to_one(p, n),)


def S(f, lo=1, hi=n, index=i):
    return sp.Sum(f, (index, lo, hi))


def test_linearity_and_constant_factors():
    assert sums.equal(S(c * v[i] + r[i]), c * S(v[i]) + S(r[i]))
    assert sums.equal(S(c), c * n)
    assert not sums.equal(S(c * v[i]), S(v[i]))


def test_sum_to_one_only_for_the_declared_vector():
    assert sums.equal(S(p[i] * c), c, ONE)
    assert not sums.equal(S(pi[i] * c), c, ONE)
    assert not sums.equal(S(p[i] * c), c)     # without the fact nothing is assumed


def test_known_partition_sum():
    Z = sp.Symbol("Z", positive=True)
    fact = sums.known_sum("Z", lambda a: pi[a] * sp.exp(r[a] / beta), lambda a: Z, n)
    assert sums.equal(S(pi[i] * sp.exp(r[i] / beta) * c), c * Z, (fact,))
    assert not sums.equal(S(pi[i] * sp.exp(r[i] / (2 * beta))), Z, (fact,))


def test_delta_contraction():
    assert sums.equal(S(v[i] * sp.KroneckerDelta(i, j)), v[j])
    assert not sums.equal(S(v[i] * sp.KroneckerDelta(i, j)), v[i])


def test_split_range():
    total = S(v[i])
    assert sums.equal(sums.split(total, k), total)
    assert sums.split(total, k).args[0].limits[0][2] == k
    # Σ_1^k p + Σ_{k+1}^n p = 1, but Σ_1^k p alone is not 1
    assert sums.equal(S(p[i], hi=k) + S(p[i], lo=k + 1) + c * S(v[i], hi=k), 1 + c * S(v[i], hi=k), ONE)
    assert not sums.equal(S(p[i], hi=k), 1, ONE)


def test_dummy_names_do_not_matter_and_products_of_sums_merge():
    a = S(p[i] * v[i]) ** 2
    b = S(p[j] * v[j], index=j) * S(p[i] * v[i])
    assert sums.equal(a, b)
    var = S(S(v[i] * (p[i] * sp.KroneckerDelta(i, j) - p[i] * p[j]) * v[j], index=j))
    assert sums.equal(var, S(p[i] * v[i] ** 2) - S(p[i] * v[i]) ** 2, ONE)
    assert not sums.equal(var, S(p[i] * v[i] ** 2) - 2 * S(p[i] * v[i]) ** 2, ONE)


def test_logs_split_and_kl_identity():
    z = S(pi[j] * sp.exp(r[j] / beta), index=j)
    lhs = S(p[i] * sp.log(p[i] / (pi[i] * sp.exp(r[i] / beta) / z)))
    rhs = S(p[i] * sp.log(p[i] / pi[i])) - S(p[i] * r[i]) / beta + sp.log(z)
    assert sums.equal(lhs, rhs, ONE)


def test_nonnegative():
    assert sums.nonnegative(S(p[i] * (v[i] - c) ** 2))
    assert not sums.nonnegative(S(p[i] * v[i]))


def test_evaluate_at_matches_the_written_out_sum():
    expr = S(p[i] * v[i] ** 2)
    written = sum(p[k] * v[k] ** 2 for k in (1, 2, 3))  # the sum over i = 1..n, n = 3, by hand
    value, by_hand, wrong = sums.evaluate_at([expr, written, written - p[1] * v[1] ** 2], {n: 3},
                                             (p,), np.random.default_rng(0))
    assert value == pytest.approx(by_hand, rel=1e-12) and value != pytest.approx(wrong, rel=1e-6)
    check, = sums.evaluate_at([S(p[i])], {n: 4}, (p,), np.random.default_rng(1))
    assert abs(check - 1.0) < 1e-12
