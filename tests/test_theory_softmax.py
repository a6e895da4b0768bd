"""softmax.fisher and softmax.pg: true statements pass, wrong ones fail at the expected step."""

from __future__ import annotations

import sympy as sp

from theory import softmax


def test_fisher_holds():
    result = softmax.check_fisher()
    assert result.ok, result.summary()


def test_fisher_rejects_a_wrong_hessian():
    wrong = lambda p: sp.diag(*p) + sp.Matrix(p) * sp.Matrix(p).T  # noqa: E731 - sign of p p^T flipped
    result = softmax.check_fisher(hessian=wrong, sizes=(2,))
    assert not result.ok
    assert result.failed.name == "n=2: Hessian"


def test_policy_gradient_holds_and_rejects_a_missing_weight():
    assert softmax.check_policy_gradient().ok
    wrong = lambda p, r, weight: softmax.fisher_matrix(p) * sp.Matrix(r)  # noqa: E731 - q(x) dropped
    result = softmax.check_policy_gradient(gradient=wrong, sizes=(2,))
    assert result.failed.name == "n=2: grad J = q F r"
