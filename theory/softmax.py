"""Softmax calculus: the Fisher matrix and the policy gradient (docs/theory.md §2).

Claims: ``softmax.fisher`` and ``softmax.pg``.

Logits are handled through ``u_i = exp(theta_i)`` (positive symbols): a derivative in the logit
``theta_j`` is ``u_j * d/du_j``, which keeps every expression rational, so sympy simplifies it
in milliseconds. Checked for n = 2, 3, 4 responses with one prompt, and n = 2 with two prompts
(the cross-prompt blocks vanish).

Each check takes the claimed statement as a parameter (the true one by default), so the tests
can hand it a wrong statement and watch the same checker fail.
"""

from __future__ import annotations

from typing import Callable, Sequence

import sympy as sp

from theory import derivation as d
from theory.symbols import positive_vector, prob_vector, q, real_vector


def fisher_matrix(p: Sequence) -> sp.Matrix:
    """F = diag(p) - p p^T (docs/theory.md §2)."""
    col = sp.Matrix(p)
    return sp.diag(*p) - col * col.T


def policy_gradient(p: Sequence, r: Sequence, weight) -> sp.Matrix:
    """grad_{theta_x} J = q(x) F r_x (docs/theory.md §2, softmax.pg)."""
    return weight * fisher_matrix(p) * sp.Matrix(r)


def logit_derivative(f, u: Sequence[sp.Symbol], j: int):
    """d f / d theta_j where u_j = exp(theta_j)."""
    return u[j] * sp.diff(f, u[j])


def _softmax(u: Sequence[sp.Symbol]) -> list:
    total = sum(u)
    return [ui / total for ui in u]


def _log_softmax(u: Sequence[sp.Symbol]) -> list:
    """log softmax(theta)_i = theta_i - log sum_j e^{theta_j}, with theta_i = log u_i."""
    return [sp.log(ui) - sp.log(sum(u)) for ui in u]


def check_fisher(hessian: Callable[[Sequence], sp.Matrix] = fisher_matrix,
                 sizes: Sequence[int] = (2, 3, 4)) -> d.Result:
    """softmax.fisher: grad L = q(p - p_D), Hessian q F free of p_D, F = sum of squares, PSD."""
    steps, simplices = [], []
    for n in sizes:
        u = positive_vector("u", n)
        p = _softmax(u)
        pd = prob_vector("d", n)
        P = prob_vector("p", n)
        v = real_vector("v", n)
        simplices += [pd, P]
        loss = q * sum(-pd[i] * lp for i, lp in enumerate(_log_softmax(u)))
        grad = sp.Matrix([logit_derivative(loss, u, j) for j in range(n)])
        steps.append(d.equal(f"n={n}: gradient", grad, q * (sp.Matrix(p) - sp.Matrix(pd)),
                             "d(-log p_i)/d theta_j = p_j - [i=j]; sum_i p_D,i = 1"))
        # Differentiate the gradient in the form just verified (rational, so sympy stays fast).
        verified = [q * (p[j] - pd[j]) for j in range(n)]
        hess = sp.Matrix(n, n, lambda j, k: logit_derivative(verified[j], u, k))
        steps.append(d.equal(f"n={n}: Hessian", hess, q * hessian(p),
                             "differentiate q(p_j - p_D,j) once more in theta_k"))
        on_simplex = hess.subs(pd[-1], 1 - sum(pd[:-1]))
        steps.append(d.equal(f"n={n}: Hessian free of p_D",
                             sp.Matrix([on_simplex.diff(x) for x in pd[:-1]]),
                             sp.zeros(n * n * (n - 1), 1), "so L is convex in theta"))
        squares = sp.zeros(n, n)
        for i in range(n):
            for j in range(i + 1, n):
                e = sp.Matrix([int(k == i) - int(k == j) for k in range(n)])
                squares += P[i] * P[j] * e * e.T
        steps.append(d.equal(f"n={n}: sum of squares", hessian(P), squares,
                             "F = sum_{i<j} p_i p_j (e_i - e_j)(e_i - e_j)^T"))
        mean = sum(P[i] * v[i] for i in range(n))
        steps.append(d.equal(f"n={n}: v^T F v = Var_p[v]", (sp.Matrix(v).T * hessian(P) * sp.Matrix(v))[0],
                             sum(P[i] * (v[i] - mean) ** 2 for i in range(n)),
                             "expand the quadratic form"))
        steps.append(d.equal(f"n={n}: constants in the null space", hessian(P) * sp.ones(n, 1),
                             sp.zeros(n, 1), "rows of F sum to p_i - p_i sum_j p_j = 0"))
        steps.append(d.equal(f"n={n}: null space is exactly the constants",
                             hessian(P)[: n - 1, : n - 1].det(), sp.Mul(*P),
                             "a non-zero (n-1)-minor: rank F = n - 1"))
        steps.append(d.equal(f"n={n}: stationary iff softmax(theta) = p_D",
                             grad.subs({u[i]: pd[i] for i in range(n)}), sp.zeros(n, 1),
                             "theta = log p_D + const; needs every p_D,i > 0 since exp(theta_i) > 0"))
    # Two prompts, n = 2: L = q1 L_1(theta_1) + q2 L_2(theta_2) has a block-diagonal Hessian.
    u1, u2 = positive_vector("u", 2), positive_vector("w", 2)
    d1, d2, qq = prob_vector("d", 2), prob_vector("e", 2), prob_vector("q", 2)
    simplices += [d1, d2, qq]
    p1, p2 = _softmax(u1), _softmax(u2)
    loss = (qq[0] * sum(-d1[i] * lp for i, lp in enumerate(_log_softmax(u1)))
            + qq[1] * sum(-d2[i] * lp for i, lp in enumerate(_log_softmax(u2))))
    uu = list(u1) + list(u2)
    grad = sp.Matrix([logit_derivative(loss, uu, j) for j in range(4)])
    steps.append(d.equal("2 prompts: gradient", grad,
                         sp.Matrix([qq[0] * (p1[0] - d1[0]), qq[0] * (p1[1] - d1[1]),
                                    qq[1] * (p2[0] - d2[0]), qq[1] * (p2[1] - d2[1])]),
                         "each prompt's logits enter only its own term"))
    verified = [qq[0] * (p1[0] - d1[0]), qq[0] * (p1[1] - d1[1]),
                qq[1] * (p2[0] - d2[0]), qq[1] * (p2[1] - d2[1])]
    hess = sp.Matrix(4, 4, lambda j, k: logit_derivative(verified[j], uu, k))
    steps.append(d.equal("2 prompts: Hessian = blockdiag(q(x) F_x)", hess,
                         sp.diag(qq[0] * hessian(p1), qq[1] * hessian(p2)),
                         "L is a q-weighted sum of per-prompt losses"))
    return d.verify("softmax.fisher", steps, simplices=simplices)


def check_policy_gradient(gradient: Callable[[Sequence, Sequence, object], sp.Matrix] = policy_gradient,
                          sizes: Sequence[int] = (2, 3, 4)) -> d.Result:
    """softmax.pg: grad_{theta_x} J = q(x) F r_x, entry y = q p_y (r_y - E_p r)."""
    steps, simplices = [], []
    for n in sizes:
        u = positive_vector("u", n)
        p = _softmax(u)
        r = real_vector("r", n)
        reward = q * sum(p[i] * r[i] for i in range(n))
        grad = sp.Matrix([logit_derivative(reward, u, j) for j in range(n)])
        mean = sum(p[i] * r[i] for i in range(n))
        steps.append(d.equal(f"n={n}: entries", grad,
                             sp.Matrix([q * p[j] * (r[j] - mean) for j in range(n)]),
                             "d p_i / d theta_j = p_i([i=j] - p_j)"))
        steps.append(d.equal(f"n={n}: grad J = q F r", grad, gradient(p, r, q),
                             "the entries are the rows of F times r"))
    u1, u2 = positive_vector("u", 2), positive_vector("w", 2)
    r1, r2, qq = real_vector("r", 2), real_vector("s", 2), prob_vector("q", 2)
    simplices.append(qq)
    p1, p2 = _softmax(u1), _softmax(u2)
    reward = (qq[0] * sum(p1[i] * r1[i] for i in range(2))
              + qq[1] * sum(p2[i] * r2[i] for i in range(2)))
    uu = list(u1) + list(u2)
    grad = sp.Matrix([logit_derivative(reward, uu, j) for j in range(4)])
    steps.append(d.equal("2 prompts: stacked q(x) F_x r_x", grad,
                         sp.Matrix.vstack(gradient(p1, r1, qq[0]), gradient(p2, r2, qq[1])),
                         "J is a q-weighted sum over prompts"))
    return d.verify("softmax.pg", steps, simplices=simplices)
