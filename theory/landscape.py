"""Landscape results: PL rate, displacement, degradation, optimal duration, threshold, spectra.

Claims (docs/theory.md §5, all [reconstructed]: the v2 formulas are unknown): ``pl.rate``,
``pl.displacement``, ``pl.degradation``, ``pl.duration``, ``pl.threshold``,
``spectral.kantorovich``, ``spectral.topk``.

The lemma skeleton of each PL bound (Gronwall on an abstract gap, the descent lemma, PL) is checked
as algebra on symbols, and every stated constant is pinned by an equality, so a weaker but true
constant fails. spectral.kantorovich and spectral.topk are proved in any dimension (symbolic sums).
The PL bounds themselves are inequalities about a whole function class; they are sampled on the instances
where the gradient flow has a closed form: a concave quadratic J with Hessian eigenvalues
mu <= lambda_2 = ell (2-D, so PL with mu and ell-smooth), started at theta_0 with coordinates
(c1, c2) relative to its maximizer, and a convex quadratic L minimized at theta_0 with a rotated
Hessian whose largest eigenvalue is L_s.

Each check takes the claimed statement as a parameter (the true one by default).
"""

from __future__ import annotations

from typing import Callable

import sympy as sp

from theory import derivation as d
from theory import sums
from theory.symbols import (Delta0, Lnorm, Ls, T, aspect, c1, c2, cosphi, direction, eig_min,
                            ell, eta, gap, gnorm, kappa, lam_w, m1, m2, mu, muL, phi, point, s,
                            spread, topk_g, topk_z, w)


def _quadratic_flow():
    """The concave quadratic J, its gradient flow from theta_0 and a convex quadratic L at theta_0."""
    lam = (mu, mu + spread)
    x_t = [c1 * sp.exp(-lam[0] * T), c2 * sp.exp(-lam[1] * T)]   # theta_T - theta_J*
    gap_t = (lam[0] * x_t[0] ** 2 + lam[1] * x_t[1] ** 2) / 2        # J* - J(theta_T)
    grad_sq = lam[0] ** 2 * x_t[0] ** 2 + lam[1] ** 2 * x_t[1] ** 2  # ||grad J(theta_T)||^2
    gap_0 = (lam[0] * c1 ** 2 + lam[1] * c2 ** 2) / 2
    move = sp.Matrix([x_t[0] - c1, x_t[1] - c2])                     # theta_T - theta_0
    rot = sp.Matrix([[sp.cos(phi), -sp.sin(phi)], [sp.sin(phi), sp.cos(phi)]])
    hess_l = rot * sp.diag(Ls, Ls * aspect) * rot.T
    degradation = (move.T * hess_l * move)[0] / 2                   # L(theta_T) - L*
    return dict(lam=lam, x_t=x_t, gap_t=gap_t, grad_sq=grad_sq, gap_0=gap_0, move=move,
                degradation=degradation, ell=mu + spread)


RANGES = {aspect: (0.05, 1.0), phi: (-3.2, 3.2), T: (0.0, 4.0), spread: (0.0, 3.0)}


_VALUE, _SLOPE = sp.symbols("Delta_T dDelta_T", real=True)


def _as_symbols(expr, fn):
    """An expression in an abstract function and its derivative, with both replaced by symbols (after
    differentiating), so that the engine can check it at random values of Delta(T) and Delta'(T)."""
    return expr.subs(sp.Derivative(fn, T), _SLOPE).subs(fn, _VALUE)


def check_rate(rate: Callable = lambda m, tt: sp.exp(-2 * m * tt)) -> d.Result:
    """J* - J(theta_T) <= rate(mu, T) * Delta_0 with rate = e^{-2 mu T}."""
    f = _quadratic_flow()
    gap_fn = sp.Function("Delta")(T)            # J* - J(theta_T) along any flow: an abstract function
    steps = [
        # Lemma skeleton on an abstract function (any J that is mu-PL): the gap obeys
        # Delta' = -||grad J||^2 <= -2 mu Delta, and Gronwall: (e^{2 mu T} Delta)' = e^{2 mu T}(Delta' + 2 mu Delta) <= 0.
        d.equal("Gronwall: (e^{2 mu T} Delta)' = e^{2 mu T} (Delta' + 2 mu Delta)",
                _as_symbols(sp.diff(sp.exp(2 * mu * T) * gap_fn, T), gap_fn),
                _as_symbols(sp.exp(2 * mu * T) * (sp.diff(gap_fn, T) + 2 * mu * gap_fn), gap_fn),
                "product rule; Delta' + 2 mu Delta <= 0 by PL, so e^{2 mu T} Delta <= Delta_0"),
        d.equal("the claimed rate solves the comparison ODE y' = -2 mu y", sp.diff(rate(mu, T), T),
                -2 * mu * rate(mu, T), "pins the constant: e^{-mu T} solves y' = -mu y and fails here"),
        d.equal("the claimed rate starts at 1", rate(mu, T).subs(T, 0), 1, "Delta(0) = Delta_0"),
        d.equal("the flow solves theta' = grad J", sp.Matrix([sp.diff(x, T) for x in f["x_t"]]),
                sp.Matrix([-lam * x for lam, x in zip(f["lam"], f["x_t"])]), "grad J = -Lambda (theta - theta*)"),
        d.equal("d/dT (J* - J) = -||grad J||^2", sp.diff(f["gap_t"], T), -f["grad_sq"], "chain rule along the flow"),
        d.equal("tight: on the mu-eigendirection the gap is exactly rate * Delta_0",
                f["gap_t"].subs(c2, 0), (f["gap_0"] * rate(mu, T)).subs(c2, 0),
                "so no faster rate holds for the class"),
        d.at_least("PL on the quadratic instance: ||grad J||^2 / 2 >= mu (J* - J)", f["grad_sq"] / 2,
                   mu * f["gap_t"], "every eigenvalue is >= mu"),
        d.at_least("the rate on the quadratic instance", f["gap_0"] * rate(mu, T), f["gap_t"],
                   "the claim at random instances"),
    ]
    return d.verify("pl.rate", steps, ranges=RANGES)


def displacement_bound(smooth, delta0, m, tt):
    """pl.displacement: sqrt(2 ell Delta_0)/mu (1 - e^{-mu T})."""
    return sp.sqrt(2 * smooth * delta0) / m * (1 - sp.exp(-m * tt))


def check_displacement(bound: Callable = displacement_bound) -> d.Result:
    """||theta_T - theta_0|| <= sqrt(2 ell Delta_0)/mu (1 - e^{-mu T})."""
    f = _quadratic_flow()
    steps = [
        d.at_least("||grad J(theta_t)|| <= sqrt(2 ell Delta_0) e^{-mu t}",
                   sp.sqrt(2 * f["ell"] * f["gap_0"]) * sp.exp(-mu * T), sp.sqrt(f["grad_sq"]),
                   "smoothness ||grad J||^2 <= 2 ell (J* - J), then pl.rate"),
        d.equal("integral of the speed bound", sp.integrate(sp.sqrt(2 * ell * Delta0) * sp.exp(-mu * s), (s, 0, T)),
                bound(ell, Delta0, mu, T), "||theta_T - theta_0|| <= int_0^T ||grad J|| dt"),
        d.at_least("the bound on the quadratic instance", bound(f["ell"], f["gap_0"], mu, T),
                   sp.sqrt((f["move"].T * f["move"])[0]), "the claim at random instances"),
    ]
    return d.verify("pl.displacement", steps, ranges=RANGES)


def degradation_bound(smooth_l, smooth, delta0, m, tt):
    """pl.degradation: L_s ell Delta_0 / mu^2 (1 - e^{-mu T})^2."""
    return smooth_l * smooth * delta0 / m ** 2 * (1 - sp.exp(-m * tt)) ** 2


def check_degradation(bound: Callable = degradation_bound) -> d.Result:
    """L(theta_T) - L* <= (L_s/2) ||theta_T - theta_0||^2 <= L_s ell Delta_0/mu^2 (1 - e^{-mu T})^2."""
    f = _quadratic_flow()
    steps = [
        d.at_least("L_s-smoothness at the minimizer theta_0", Ls / 2 * (f["move"].T * f["move"])[0],
                   f["degradation"], "grad L(theta_0) = 0"),
        d.equal("(L_s/2) * displacement bound^2", Ls / 2 * displacement_bound(ell, Delta0, mu, T) ** 2,
                bound(Ls, ell, Delta0, mu, T), "square pl.displacement"),
        d.at_least("the bound on the quadratic instance", bound(Ls, f["ell"], f["gap_0"], mu, T),
                   f["degradation"], "the claim at random instances"),
    ]
    return d.verify("pl.degradation", steps, ranges=RANGES)


def optimal_duration(m, weight, smooth_l, smooth):
    """pl.duration: T* = (1/mu) ln(1 + mu^2/(lambda_w L_s ell))."""
    return sp.log(1 + m ** 2 / (weight * smooth_l * smooth)) / m


def check_duration(t_star: Callable = optimal_duration, stated: str = "0.4902", closed=None) -> d.Result:
    """T* maximizes Delta_0 (1 - e^{-2 mu T}) - lambda_w L_s ell Delta_0/mu^2 (1 - e^{-mu T})^2."""
    objective = Delta0 * (1 - sp.exp(-2 * mu * T)) - lam_w * degradation_bound(Ls, ell, Delta0, mu, T)
    best = t_star(mu, lam_w, Ls, ell)
    example = {mu: sp.Rational(1, 2), lam_w: sp.Rational(3, 10), Ls: 2, ell: sp.Rational(3, 2)}
    steps = [
        d.equal("stationary at T*", sp.diff(objective, T).subs(T, best), 0,
                "x = e^{-mu T*} = c/(1 + c), c = lambda_w L_s ell/mu^2"),
        d.at_least("concave at T*", 0, sp.diff(objective, T, 2).subs(T, best), "a maximum, not a minimum"),
        d.at_least("T* beats every other duration", objective.subs(T, best), objective,
                   "the objective at random T"),
        d.approx("example mu=0.5, lambda_w=0.3, L_s=2, ell=1.5", best.subs(example), stated, "docs/theory.md §5"),
    ]
    from theory import closed_form_checks, closed_forms
    steps += closed_form_checks.duration_steps(closed or closed_forms)
    return d.verify("pl.duration", steps, ranges={T: (0.0, 6.0)})


def pl_threshold(smooth_l, step, grad_j, pl_l, cos):
    """pl.threshold: L - L* > L_s^2 eta^2 ||grad J||^2 / (8 mu_L cos^2 phi)."""
    return smooth_l ** 2 * step ** 2 * grad_j ** 2 / (8 * pl_l * cos ** 2)


def cos_threshold(smooth_l, step, grad_j, grad_l):
    """pl.threshold: cos phi > L_s eta ||grad J|| / (2 ||grad L||) guarantees a drop (sufficient)."""
    return smooth_l * step * grad_j / (2 * grad_l)


def check_threshold(threshold: Callable = pl_threshold, cos_condition: Callable = cos_threshold) -> d.Result:
    """An RL step lowers L if cos phi > L_s eta ||g||/(2 ||grad L||), or L - L* > threshold (sufficient,
    not necessary)."""
    # Descent lemma for any L_s-smooth L: L(theta + eta g) - L(theta) <= eta <grad L, g> + L_s eta^2 ||g||^2/2.
    inner = -cosphi * Lnorm * gnorm                                  # <grad L, g> by the angle's definition
    descent_bound = eta * inner + Ls * eta ** 2 * gnorm ** 2 / 2
    boundary = (Ls * eta * gnorm / (2 * cosphi)) ** 2 / (2 * muL)
    # A 2-D quadratic L = (h1 x1^2 + h2 x2^2)/2, h1 = L_s >= h2 = mu_L; a point x and an RL direction g.
    (x1, x2), (g1, g2) = point, direction
    h1, h2 = Ls, Ls * aspect
    loss = lambda a, b: (h1 * a ** 2 + h2 * b ** 2) / 2  # noqa: E731
    grad = (h1 * x1, h2 * x2)
    gl, gg = sp.sqrt(grad[0] ** 2 + grad[1] ** 2), sp.sqrt(g1 ** 2 + g2 ** 2)
    cos = -(grad[0] * g1 + grad[1] * g2) / (gl * gg)
    drop = loss(x1, x2) - loss(x1 + eta * g1, x2 + eta * g2)
    first = sp.Piecewise((drop, cos > Ls * eta * gg / (2 * gl)), (1, True))
    second = sp.Piecewise((drop, sp.And(cos > 0, loss(x1, x2) > threshold(Ls, eta, gg, h2, cos))), (1, True))
    steps = [
        d.equal("the descent bound is 0 exactly at the claimed cos threshold",
                descent_bound.subs(cosphi, cos_condition(Ls, eta, gnorm, Lnorm)), 0,
                "it is decreasing in cos phi, so above the threshold the guaranteed change is < 0 (pins the 1/2)"),
        d.equal("PL: at ||grad L|| = sqrt(2 mu_L (L - L*)) the claimed threshold on L - L* meets the cos threshold",
                cos_condition(Ls, eta, gnorm, sp.sqrt(2 * muL * threshold(Ls, eta, gnorm, muL, cosphi))), cosphi,
                "||grad L||^2 >= 2 mu_L (L - L*), so L - L* > threshold gives ||grad L|| above that (pins the 8)"),
        d.equal("the threshold is the boundary of the descent condition", boundary,
                threshold(Ls, eta, gnorm, muL, cosphi), "solve cos phi sqrt(2 mu_L gap) = L_s eta ||g||/2 for gap"),
        d.at_least("cos-condition => L drops (quadratic instance)", first, 0, "random points, steps and directions"),
        d.at_least("L - L* > threshold => L drops (quadratic instance)", second, 0, "mu_L = smallest eigenvalue"),
        d.nonnegative("at the SFT optimum no step lowers L", loss(eta * g1, eta * g2), "L(theta* + eta g) - L* >= 0"),
    ]
    return d.verify("pl.threshold", steps, ranges={**RANGES, eta: (0.01, 0.6), gap: (0.0, 2.0)})


def kantorovich_bound(cond):
    """spectral.kantorovich: cos(delta, H delta) >= 2 sqrt(kappa)/(1 + kappa)."""
    return 2 * sp.sqrt(cond) / (1 + cond)


def check_kantorovich(bound: Callable = kantorovich_bound) -> d.Result:
    """cos(delta, H delta) >= 2 sqrt(kappa)/(1 + kappa) on the range of H."""
    b = eig_min
    a = (1 + kappa) * b                                  # largest eigenvalue, kappa' = 1 + kappa >= 1
    cond = a / b
    cos_sq = (a * w + b * (1 - w)) ** 2 / (a ** 2 * w + b ** 2 * (1 - w))   # w = squared weight on a
    w_star = b / (a + b)
    # Any dimension N: eigenvalues in [m, M] written lambda_i = (m + M u_i)/(1 + u_i), u_i >= 0;
    # weights w_i = delta_i^2 >= 0 in H's eigenbasis. A = delta^T H delta, B = ||H delta||^2, W = ||delta||^2.
    dim = sp.Symbol("N", integer=True, positive=True)
    wv, uv = sp.IndexedBase("w", nonnegative=True), sp.IndexedBase("u", nonnegative=True)
    lo, spread_ = sp.Symbol("m", positive=True), sp.Symbol("D", nonnegative=True)
    hi = lo + spread_
    lam_i = lambda i: (lo + hi * uv[i]) / (1 + uv[i])  # noqa: E731
    A_, B_, W_ = (sums.vsum(f, dim) for f in (lambda i: wv[i] * lam_i(i), lambda i: wv[i] * lam_i(i) ** 2,
                                               lambda i: wv[i]))
    As, Ws = sp.symbols("A W", positive=True)
    kw = dict(sizes=(dim,))
    steps = [
        d.sum_equal("any N: sum w (lambda - m)(M - lambda) = (M + m) A - B - M m W",
                    sums.vsum(lambda i: wv[i] * (lam_i(i) - lo) * (hi - lam_i(i)), dim),
                    (hi + lo) * A_ - B_ - hi * lo * W_, "linearity", **kw),
        d.sum_equal("any N: (lambda - m)(M - lambda) = (M - m)^2 u/(1 + u)^2 termwise",
                    sums.vsum(lambda i: wv[i] * (lam_i(i) - lo) * (hi - lam_i(i)), dim),
                    sums.vsum(lambda i: wv[i] * spread_ ** 2 * uv[i] / (1 + uv[i]) ** 2, dim),
                    "every eigenvalue lies in [m, M]", **kw),
        d.sum_nonnegative("any N: so B <= (M + m) A - M m W",
                          sums.vsum(lambda i: wv[i] * spread_ ** 2 * uv[i] / (1 + uv[i]) ** 2, dim),
                          "w >= 0, u >= 0", **kw),
        d.sum_nonnegative("(M + m)^2 A^2 - 4 M m W ((M + m) A - M m W) = ((M + m) A - 2 M m W)^2 >= 0",
                          ((hi + lo) * As - 2 * hi * lo * Ws) ** 2,
                          "a square; so cos^2 = A^2/(W B) >= A^2/(W((M + m) A - M m W)) >= 4 M m/(M + m)^2"),
        d.equal("the square expands as stated",
                (hi + lo) ** 2 * As ** 2 - 4 * hi * lo * Ws * ((hi + lo) * As - hi * lo * Ws),
                ((hi + lo) * As - 2 * hi * lo * Ws) ** 2, "algebra"),
        d.equal("the claimed bound squared is 4 M m/(M + m)^2 with kappa = M/m", bound(hi / lo) ** 2,
                4 * hi * lo / (hi + lo) ** 2, "pins the constant"),
        d.equal("2-D: cos^2 is stationary at w* = b/(a+b)", sp.diff(cos_sq, w).subs(w, w_star), 0,
                "the worst direction balances the two eigenvalues"),
        d.equal("2-D: the minimum value is the claimed bound squared", cos_sq.subs(w, w_star), bound(cond) ** 2,
                "4ab/(a+b)^2 = 4 kappa/(1+kappa)^2"),
    ]
    return d.verify("spectral.kantorovich", steps, ranges={w: (0.0, 1.0), kappa: (0.0, 20.0)})


def check_topk(bound: Callable = lambda lam_k, top_mass: lam_k * top_mass / 2) -> d.Result:
    """L(theta* + eta g) - L* >= (eta^2/2) lambda_k rho ||g||^2 + O(eta^3).

    ``bound(lambda_k, rho ||g||^2)`` is the claimed lower bound on g^T H g / 2.
    """
    # Any dimension N, any k: lambda_i = lambda_k + a_i (a_i >= 0) for i <= k, lambda_i >= 0 beyond k.
    dim, k = sp.Symbol("N", integer=True, positive=True), sp.Symbol("k", integer=True, positive=True)
    i = sp.Dummy("i", integer=True, positive=True)
    gv, a, lam_tail = sp.IndexedBase("g", real=True), sp.IndexedBase("a", nonnegative=True), \
        sp.IndexedBase("lam", nonnegative=True)
    lam_k = sp.Symbol("lambda_k", nonnegative=True)
    top = sp.Sum((lam_k + a[i]) * gv[i] ** 2, (i, 1, k))
    tail = sp.Sum(lam_tail[i] * gv[i] ** 2, (i, k + 1, dim))
    remainder = (sp.Sum(a[i] * gv[i] ** 2, (i, 1, k)) + tail) / 2
    kw = dict(sizes=(dim, k))
    any_dim = [
        d.sum_equal("any N, any k: g^T H g / 2 - bound = (sum_{i<=k} (lambda_i - lambda_k) g_i^2 + "
                    "sum_{i>k} lambda_i g_i^2)/2", (top + tail) / 2 - bound(lam_k, sp.Sum(gv[i] ** 2, (i, 1, k))),
                    remainder, "H's eigenbasis, sorted spectrum; the claimed constant is pinned by equality", **kw),
        d.sum_nonnegative("any N, any k: the remainder is >= 0", remainder,
                          "lambda_i - lambda_k >= 0 for i <= k, lambda_i >= 0 (H PSD)", **kw),
    ]
    gs, z = topk_g, topk_z
    lam = [sum(z[i:]) for i in range(4)]                  # lambda_1 >= ... >= lambda_4 >= 0
    quad = sum(li * gi ** 2 for li, gi in zip(lam, gs))   # g^T H g in H's eigenbasis
    mgf = 1 + m1 * eta + m2 * eta ** 2 / 2
    steps = [d.series("L(theta* + eta g) - L* = (eta^2/2) g^T H g + O(eta^3)", sp.log(mgf) - m1 * eta,
                      (m2 - m1 ** 2) * eta ** 2 / 2, eta, 3, "thm31.local in cumulant coordinates; Var = g^T F g"),
             *any_dim]
    for k in (1, 2, 3):
        top_mass = sum(gi ** 2 for gi in gs[:k])
        steps.append(d.nonnegative(f"k={k}: g^T H g / 2 - bound >= 0",
                                   sp.expand(quad / 2 - bound(lam[k - 1], top_mass)),
                                   "sum_{i<=k} (lambda_i - lambda_k) g_i^2 + sum_{i>k} lambda_i g_i^2 >= 0"))
    return d.verify("spectral.topk", steps, ranges={m1: (-1, 1), m2: (0, 2)})
