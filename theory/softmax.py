"""Softmax calculus: the Fisher matrix and the policy gradient (docs/theory.md §2).

Claims: ``softmax.fisher`` and ``softmax.pg``.

Logits are handled through ``u_i = exp(theta_i)`` (positive symbols): a derivative in the logit
``theta_j`` is ``u_j * d/du_j``, which keeps every expression rational, so sympy simplifies it
in milliseconds. Proved for any n by the sum normalizer, and cross-checked for n = 2, 3, 4
responses with one prompt and n = 2 with two prompts (the cross-prompt blocks vanish).

Each check takes the claimed statement as a parameter (the true one by default), so the tests
can hand it a wrong statement and watch the same checker fail.
"""

from __future__ import annotations

from typing import Callable, Sequence

import sympy as sp

from theory import derivation as d
from theory import generic as g
from theory import sums
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


def fisher_entry(p, a, b):
    """F_ab = p_a δ_ab − p_a p_b (p a function of the index)."""
    return p(a) * sp.KroneckerDelta(a, b) - p(a) * p(b)


_theta = sp.IndexedBase("theta", real=True)
_w = sp.Symbol("w", integer=True, positive=True)
_j = sp.Symbol("j", integer=True, positive=True)


def _softmax_any_n():
    z = sums.vsum(lambda j: sp.exp(_theta[j]), g.n)
    return (lambda a: sp.exp(_theta[a]) / z), z


def _fisher_any_n(hessian_entry: Callable) -> list:
    """Any n: gradient, Hessian, v^T F v = Var, the sum-of-squares form, F 1 = 0, by symbolic sums."""
    dd, pp, v = sp.IndexedBase("d", positive=True), sp.IndexedBase("p", positive=True), g.vec
    y, w = g.y, _w
    p, _ = _softmax_any_n()
    loss = sums.vsum(lambda i: -dd[i] * sp.log(p(i)), g.n)
    grad = sp.diff(loss, _theta[y])
    facts = (sums.sums_to_one(dd, g.n), sums.sums_to_one(pp, g.n))
    kw = dict(facts=facts, sizes=(g.n, y, w), probs=(dd, pp))
    P = lambda a: pp[a]  # noqa: E731
    quad = sums.vsum(lambda i: sums.vsum(lambda j: v[i] * hessian_entry(P, i, j) * v[j], g.n), g.n)
    second = sums.vsum(lambda i: pp[i] * v[i] ** 2, g.n) - sums.vsum(lambda i: pp[i] * v[i], g.n) ** 2
    pairs = lambda a, b: pp[a] * pp[b] * (v[a] - v[b]) ** 2  # noqa: E731
    mean = sums.vsum(lambda i: pp[i] * v[i], g.n)
    return [
        d.sum_equal("any n: grad_y L = p_y - p_D(y)", grad, p(y) - dd[y], "d theta_i/d theta_y = delta_iy", **kw),
        d.sum_equal("any n: Hessian_yw = claimed F_yw (free of p_D)", sp.diff(grad, _theta[w]),
                    hessian_entry(p, y, w), "differentiate p_y - p_D(y) once more", **kw),
        d.sum_equal("any n: v^T F v = sum p v^2 - (sum p v)^2", quad, second, "delta contraction", **kw),
        d.equal("sum-of-squares lemma: the pair term is symmetric",
                pairs(y, w) - pairs(w, y), 0, "so sum_{i<j} = (1/2) sum_{i != j}"),
        d.equal("sum-of-squares lemma: the pair term vanishes on the diagonal", pairs(y, y), 0,
                "so (1/2) sum_{i != j} = (1/2) sum_{i,j}"),
        d.sum_equal("any n: sum_{i<j} p_i p_j (v_i - v_j)^2 = sum p v^2 - (sum p v)^2",
                    sums.vsum(lambda i: sums.vsum(lambda j: pairs(i, j), g.n), g.n) / 2, second,
                    "expand the square; sum p = 1", **kw),
        d.sum_equal("any n: v^T F v = Var_p(v) = sum p (v - E v)^2", second,
                    sums.vsum(lambda i: pp[i] * (v[i] - mean) ** 2, g.n), "sum p = 1", **kw),
        d.sum_nonnegative("any n: Var_p(v) >= 0, so F is PSD",
                          sums.vsum(lambda i: pp[i] * (v[i] - mean) ** 2, g.n), "p > 0 times squares", **kw),
        d.sum_equal("any n: F 1 = 0 (constants are in the null space)",
                    sums.vsum(lambda j: hessian_entry(P, y, j), g.n), 0, "p_y - p_y sum p = 0", **kw),
    ]


def _pg_any_n(gradient_entry: Callable) -> list:
    rr = g.vec
    p, _ = _softmax_any_n()
    objective = sums.vsum(lambda i: p(i) * rr[i], g.n)
    grad = sp.diff(objective, _theta[g.y])
    kw = dict(facts=(), sizes=(g.n, g.y), probs=())
    return [
        d.sum_equal("any n: grad_y J = p_y (r_y - E_p r)", grad,
                    p(g.y) * (rr[g.y] - sums.vsum(lambda i: p(i) * rr[i], g.n)), "quotient rule", **kw),
        d.sum_equal("any n: grad_y J = claimed (F r)_y", grad, gradient_entry(p, rr, g.y),
                    "sum_j F_yj r_j = p_y r_y - p_y E_p r", **kw),
    ]


def pg_entry(p, r, y):
    """(F r)_y = Σ_j F_yj r_j."""
    return sums.vsum(lambda j: fisher_entry(p, y, j) * r[j], g.n)


def check_fisher(hessian: Callable[[Sequence], sp.Matrix] = fisher_matrix,
                 sizes: Sequence[int] = (2, 3, 4), hessian_entry: Callable = fisher_entry) -> d.Result:
    """softmax.fisher: grad L = q(p - p_D), Hessian q F free of p_D, F = sum of squares, PSD."""
    steps, simplices = _fisher_any_n(hessian_entry), []
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
                          sizes: Sequence[int] = (2, 3, 4), gradient_entry: Callable = pg_entry) -> d.Result:
    """softmax.pg: grad_{theta_x} J = q(x) F r_x, entry y = q p_y (r_y - E_p r)."""
    steps, simplices = _pg_any_n(gradient_entry), []
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
