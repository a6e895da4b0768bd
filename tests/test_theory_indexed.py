"""The sum normalizer of theory.indexed: each rule, and a wrong identity is not proved."""

from __future__ import annotations

import sympy as sp

from theory import indexed as ix

p = sp.IndexedBase("p", positive=True)
r = sp.IndexedBase("r", real=True)
i, j = ix.i, ix.j


def test_rules():
    assert ix.normalize(ix.total(p[i]), [p]) == 1
    assert ix.normalize(ix.total(p[i] * sp.KroneckerDelta(i, j) * r[i]), [p]) == p[j] * r[j]
    assert ix.normalize(ix.total(3 * p[i] * r[j]), [p]) == 3 * r[j]
    assert ix.normalize(ix.total(sp.Integer(2)), [p]) == 2 * ix.n
    z = sp.Symbol("Z")
    assert ix.normalize(ix.total(p[i] * sp.exp(r[i])), [], {p[i] * sp.exp(r[i]): z}) == z


def test_identity_step_and_a_false_one():
    ok = ix.identity("score has mean 0", ix.total(p[i] * (sp.KroneckerDelta(i, j) - p[j])), 0, "", probs=[p])
    assert ok.ok
    bad = ix.identity("false", ix.total(p[i] * r[i] * sp.KroneckerDelta(i, j)), r[j], "", probs=[p])
    assert not bad.ok


def test_canonical_dummy_index():
    k = sp.Symbol("k", integer=True, positive=True)
    assert ix.normalize(ix.total(p[k] * r[k], k) - ix.total(p[i] * r[i]), [p]) == 0
