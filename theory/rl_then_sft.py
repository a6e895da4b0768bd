"""RL then SFT: what an SFT stage after RL provably does to the objectives (docs/theory.md §4).

Claims: ``thm41.gibbs``, ``thm41.local``, ``thm41.argmax``, ``thm41.pinsker`` (all [corrected]).
The [refuted] ``thm41.paper`` lives in ``theory.counterexamples``.

Simplifications:
- the regularized optimum p* is a free full-support probability vector where the statement only
  needs that (p* = pi_ref e^{r/beta}/Z is used where the reference matters: thm41.gibbs, written
  with x_y = e^{r_y/beta} as positive symbols, so that only logarithms of symbols appear);
- the local expansions use the exact Gibbs identity J_beta(p) - J_beta(p*) = -beta KL(p || p*)
  and a cumulant series of the KL of an exponential tilt (docs/theory.md §8), not the Hessian of
  J_beta in raw logits;
- the argmax set is posed in gap coordinates r_y = r* - g_y (g_y = 0 on A, >= delta off A);
- Pinsker's inequality is proved (binary Pinsker, the log-sum inequality, Jensen), and so is the
  Delta r * TV bound (``range_tv_steps``: termwise, in positive/negative parts of p - p' and
  r = min r + Delta r w_1 with (w_1, w_2) a probability 2-vector).

Each check takes the claimed statement as a parameter (the true one by default).
"""

from __future__ import annotations

from typing import Callable

import sympy as sp

from theory import derivation as d
from theory import generic as g
from theory import sums
from theory.objectives import (covariance, expectation, exp_tilt, kl, partition, reward,
                               regularized_objective, tilt, variance, weighted)
from theory.softmax import fisher_matrix
from theory.symbols import (beta, c, delta, eta, m1, m2, m3, mr, mrw, mw, nonneg_vector, positive_vector,
                            prob_vector, q, real_vector, rmin, rstar, t)


def check_gibbs(drop: Callable = lambda b, kl_value: b * kl_value,
                configs=((2, 1), (3, 1), (4, 1), (2, 2))) -> d.Result:
    """J_beta(p*) - J_beta(p) = beta E_x KL(p || p*) for every p; ``drop(beta, KL)`` is the claim."""
    P, PI, R = g.per_prompt(g.pol), g.per_prompt(g.ref), g.per_prompt(g.rew)
    z = sums.vsum(lambda j: g.ref[g.x, j] * sp.exp(g.rew[g.x, j] / beta), g.n)   # written out
    star = sums.Vec(lambda i: g.ref[g.x, i] * sp.exp(g.rew[g.x, i] / beta) / z, g.n)
    gap_any = g.E_x(regularized_objective(star, R, PI, beta) - regularized_objective(P, R, PI, beta))
    steps = [
        d.sum_equal("any n, any prompts: J_beta(p*) = beta E_x log Z",
                    g.E_x(regularized_objective(star, R, PI, beta)), g.E_x(beta * sp.log(z)),
                    "log(p*/pi) = r/beta - log Z", facts=g.FACTS, sizes=g.SIZES, probs=g.PROBS),
        d.sum_equal("any n, any prompts: J_beta(p*) - J_beta(p) = claimed drop", gap_any,
                    g.E_x(drop(beta, kl(P, star))), "beta KL(p||p*) = beta KL(p||pi) + beta log Z - E_p r",
                    facts=g.FACTS, sizes=g.SIZES, probs=g.PROBS),
        *g.kl_nonnegative(P, star, "the drop beta E_x KL(p || p*) >= 0"),
    ]
    simplices = []
    for n, prompts in configs:
        weights = (q,) if prompts == 1 else prob_vector("q", 2)
        simplices += [weights] if prompts > 1 else []
        at_opt, value, gap, claimed = [], [], [], []
        for x in range(prompts):
            tag = "ab"[x]
            ref, p, x_exp = prob_vector(f"pi{tag}", n), prob_vector(f"p{tag}", n), positive_vector(f"x{tag}", n)
            r = [beta * sp.log(xi) for xi in x_exp]     # x = e^{r/beta}: logs of symbols, not of sums
            simplices += [ref, p]
            star = tilt(ref, r, beta)
            at_opt.append(regularized_objective(star, r, ref, beta))
            value.append(beta * sp.log(partition(ref, r, beta)))
            gap.append(regularized_objective(star, r, ref, beta) - regularized_objective(p, r, ref, beta))
            claimed.append(drop(beta, kl(p, star)))
        label = f"n={n}, {prompts} prompt{'s' * (prompts > 1)}"
        steps.append(d.equal(f"{label}: J_beta(p*) = beta E_x log Z", weighted(weights, at_opt),
                             weighted(weights, value), "log(p*/pi) = r/beta - log Z"))
        steps.append(d.equal(f"{label}: J_beta(p*) - J_beta(p) = beta E_x KL(p || p*)",
                             weighted(weights, gap), weighted(weights, claimed),
                             "beta KL(p||p*) = beta KL(p||pi) + beta log Z - E_p r"))
    return d.verify("thm41.gibbs", steps, simplices=simplices)


def check_local(hessian_sign=-1, coefficient=sp.Rational(-1, 2), q_power=3) -> d.Result:
    """Hessian of J_beta at theta* is -beta q F; Delta J_beta and Delta J of one SFT step.

    Claimed: Hessian = hessian_sign * beta * q * F, and
    Delta J_beta = coefficient * beta * eta^2 * q^q_power * Var_{p*}[v] + O(eta^3).
    """
    steps, simplices = [], []
    # KL of an exponential tilt of p* in moment coordinates: KL = eta K'(eta) - K(eta).
    cgf = sp.log(1 + m1 * eta + m2 * eta ** 2 / 2 + m3 * eta ** 3 / 6)
    steps.append(d.series("KL(p*e^{eta w}/Z || p*) = Var_{p*}(w) eta^2/2 + O(eta^3)",
                          eta * sp.diff(cgf, eta) - cgf, (m2 - m1 ** 2) * eta ** 2 / 2, eta, 3,
                          "K = log E e^{eta w}, E_tilt[eta w] = eta K'(eta)"))
    for n in (2, 3):
        star, w, r, pd = (prob_vector("p", n), real_vector("w", n), real_vector("r", n),
                          prob_vector("d", n))
        simplices += [star, pd]
        moved = exp_tilt(star, [eta * wi for wi in w])
        steps.append(d.equal(f"n={n}: KL of the tilt in probability coordinates", kl(moved, star),
                             expectation(moved, [eta * wi for wi in w])
                             - sp.log(partition(star, [eta * wi for wi in w], 1)),
                             "log(p_tilt/p*) = eta w - log E e^{eta w}"))
        moments = {m1: expectation(star, w), m2: expectation(star, [x ** 2 for x in w]),
                   m3: expectation(star, [x ** 3 for x in w])}
        steps.append(d.series(f"n={n}: moments of w under p*", partition(star, [eta * wi for wi in w], 1),
                              1 + (m1 * eta + m2 * eta ** 2 / 2 + m3 * eta ** 3 / 6).subs(moments), eta, 4,
                              "Taylor series of exp"))
        # So J_beta(theta* + eta w) - J_beta* = -beta q KL = -(beta q/2) eta^2 w^T F w + O(eta^3):
        # the Hessian in the direction w is -beta q w^T F w.
        claimed_hessian = hessian_sign * beta * q * fisher_matrix(star)
        steps.append(d.equal(f"n={n}: w^T (Hessian) w = -beta q Var_p*(w)",
                             (sp.Matrix(w).T * claimed_hessian * sp.Matrix(w))[0],
                             -beta * q * variance(star, w),
                             "second derivative of -beta q KL(p_{theta*+eta w} || p*) at eta = 0"))
        # One SFT step: theta* - eta grad L, grad L = q (p* - p_D) = q v.
        v = [a - b for a, b in zip(star, pd)]
        steps.append(d.equal(f"n={n}: Delta J_beta of the SFT step",
                             -beta * q * (variance(star, [-q * vi for vi in v]) * eta ** 2 / 2),
                             coefficient * beta * eta ** 2 * q ** q_power * variance(star, v),
                             "w = -q v in the expansion above; Var(-q v) = q^2 Var(v)"))
        steps.append(d.equal(f"n={n}: Cov_{{p*}}(r, w) in moments", covariance(star, r, w),
                             (mrw - mr * mw).subs({mr: expectation(star, r), mw: expectation(star, w),
                                                   mrw: expectation(star, [a * b for a, b in zip(r, w)])}),
                             "Cov = E[rw] - E r E w"))
        steps.append(d.equal(f"n={n}: Delta J of the SFT step, first order",
                             q * eta * covariance(star, r, [-q * vi for vi in v]),
                             -eta * q ** 2 * covariance(star, r, v), "w = -q v"))
    steps.append(d.series("E_{tilt}[r] - E r = eta Cov(r, w) + O(eta^2)",
                          (mr + eta * mrw) / (1 + eta * mw) - mr, eta * (mrw - mr * mw), eta, 2,
                          "E[r e^{eta w}] / E[e^{eta w}] to first order"))
    # Either sign: counterexample 2 (p* = (e, 1)/(1 + e), r = (1, 0)) with p_D = (0.9, 0.1) and (0.1, 0.9).
    e = sp.E
    star = (e / (1 + e), 1 / (1 + e))
    for pd, sign in (((sp.Rational(9, 10), sp.Rational(1, 10)), 1), ((sp.Rational(1, 10), sp.Rational(9, 10)), -1)):
        first_order = -covariance(star, (1, 0), [a - b for a, b in zip(star, pd)])
        lhs, rhs = (first_order, 0) if sign > 0 else (0, first_order)
        steps.append(d.at_least(f"raw reward {'rises' if sign > 0 else 'falls'} for p_D = {tuple(map(str, pd))}",
                                 lhs, rhs, "dJ/d eta = -q^2 Cov_{p*}(r, v) can take either sign"))
    return d.verify("thm41.local", steps, simplices=simplices,
                    ranges={m1: (-1, 1), m2: (0, 2), m3: (-2, 2), mr: (-1, 1), mw: (-1, 1), mrw: (-1, 1)})


_k = sp.Symbol("k", integer=True, positive=True)   # |A|: responses 1..k are the argmax set


def _argmax_any_n(bound: Callable) -> list:
    """Any n, any |A| = k (one prompt; E_x is linear): rewards r* on 1..k and r* - delta - e_i
    (e_i >= 0) on k+1..n."""
    i = sp.Dummy("i", integer=True, positive=True)
    dd, pp, e, gp = sp.IndexedBase("d", positive=True), sp.IndexedBase("p", positive=True), \
        sp.IndexedBase("e", nonnegative=True), sp.IndexedBase("g", nonnegative=True)
    facts = (sums.sums_to_one(dd, g.n), sums.sums_to_one(pp, g.n))
    on_a = sp.Sum(dd[i] * rstar, (i, 1, _k))
    off_a = sp.Sum(dd[i] * (rstar - delta - e[i]), (i, _k + 1, g.n))
    mass_a = sp.Sum(dd[i], (i, 1, _k))
    remainder = sp.Sum(dd[i] * e[i], (i, _k + 1, g.n))
    kw = dict(facts=facts, sizes=(g.n, _k), probs=(dd, pp))
    return [
        d.sum_equal("any n, any |A|: J(p) <= max r, as r* - J(p) = sum_i p_i g_i", rstar - sp.Sum(
            pp[i] * (rstar - gp[i]), (i, 1, g.n)), sp.Sum(pp[i] * gp[i], (i, 1, g.n)), "sum p = 1", **kw),
        d.sum_nonnegative("any n: sum_i p_i g_i >= 0 (g_i = r* - r_i >= 0)", sp.Sum(pp[i] * gp[i], (i, 1, g.n)),
                          "so unregularized RL, which reaches J = max r, is optimal", **kw),
        d.sum_equal("any n, any |A|: J(p_RL) - J(p_D) - bound = sum_{i off A} p_D(i) e_i",
                    rstar - (on_a + off_a) - bound(delta, 1 - mass_a), remainder,
                    "split sum_1^n at k; r* - r_i = delta + e_i off A, 0 on A; sum p_D = 1", **kw),
        d.sum_nonnegative("any n, any |A|: the remainder is >= 0", remainder, "p_D >= 0, e_i >= 0", **kw),
    ]


def check_argmax(bound: Callable = lambda gap, mass_off: gap * mass_off) -> d.Result:
    """J(p_RL) - J(p_D) >= E_x[delta (1 - p_D(A_x))]; ``bound(delta, 1 - p_D(A))`` is the claim."""
    steps, simplices = _argmax_any_n(bound), []
    for n, size_a in ((3, 1), (4, 2)):
        pd = prob_vector("d", n)
        extra = nonneg_vector("e", n)
        simplices.append(pd)
        gaps = [0] * size_a + [delta] + [delta + extra[i] for i in range(size_a + 1, n)]
        r = [rstar - g for g in gaps]
        mass_a = sum(pd[:size_a])
        label = f"n={n}, |A|={size_a}"
        start = prob_vector("p", n)
        simplices.append(start)
        weights_t = [pi * sp.exp(-t * g) for pi, g in zip(start, gaps)]
        start_a = sum(start[:size_a])
        steps.append(d.limit(f"{label}: tilt mass -> p(A)", sum(weights_t), start_a, t, sp.oo,
                             "softmax(theta + t r) = p e^{-t g}/W (e^{t r*} cancels); e^{-t g} -> 0 off A"))
        steps.append(d.limit(f"{label}: tilted reward mass -> r* p(A)",
                             sum(wt * ri for wt, ri in zip(weights_t, r)), rstar * start_a, t, sp.oo,
                             "so unregularized RL reaches J = (r* p(A))/p(A) = E_x max r"))
        gain = rstar - reward(pd, r)
        excess = sum(pd[i] * extra[i] for i in range(size_a + 1, n))
        steps.append(d.equal(f"{label}: J(p_RL) - J(p_D) - bound = sum_{{y off A}} p_D(y) e_y",
                             gain - bound(delta, 1 - mass_a), excess,
                             "r* - r_y = delta + e_y off A, 0 on A"))
        steps.append(d.nonnegative(f"{label}: the remainder is >= 0", excess, "p_D >= 0, e_y >= 0"))
        on_a = [sp.Rational(1, size_a)] * size_a + [0] * (n - size_a)
        steps.append(d.equal(f"{label}: reward-optimal expert: no coupling", rstar - reward(on_a, r), 0,
                             "p_D(A) = 1 gives J(p_RL) = J(p_D)"))
    return d.verify("thm41.argmax", steps, simplices=simplices)


def range_tv_steps(ref: sp.IndexedBase, constant: Callable, f_text: str, ref_name: str, other: str) -> list:
    """|E_other f - E_ref f| <= constant(M, m) TV for any n and any f with m <= f_i <= M, one prompt x
    (E_x of the per-prompt bound follows, q > 0). No lemma: every step is an identity of the sum
    normalizer or a sum of products of non-negative symbols.

    Parametrization (a definition, covering every such pair of vectors and every such f):
    - other - ref = TV (a - b) with a = (other - ref)^+/TV and b = (other - ref)^-/TV: both are
      probability vectors (non-negative; sum (other - ref) = 0 and sum |other - ref| = 2 TV), so
      TV = sum a = sum b (TV = 0 is other = ref, where both sides are 0);
    - f_i = m + (M - m) w_{i1} with w_i = ((f_i - m)/(M - m), (M - f_i)/(M - m)) a probability
      2-vector (w_{i1} + w_{i2} = 1, both >= 0 as m <= f_i <= M; M = m makes both sides 0).
    Then constant TV -/+ (E_other f - E_ref f) = (M - m) TV (sum a w_2 + sum b w_1), resp.
    (M - m) TV (sum a w_1 + sum b w_2), both >= 0 termwise: |E_other f - E_ref f| <= (M - m) TV.
    ``constant(M, m)`` is the claimed constant (M - m)."""
    j = sp.Dummy("j", integer=True, positive=True)
    x, n = g.x, g.n
    a, b = sp.IndexedBase("a", nonnegative=True), sp.IndexedBase("b", nonnegative=True)
    w = sp.IndexedBase("w", nonnegative=True)
    tv, spread, low = sp.Symbol("TV", nonnegative=True), sp.Symbol("W", nonnegative=True), sp.Symbol("m_f", real=True)
    facts = tuple(sums.sums_to_one(v, n) for v in (ref, a, b)) + (sums.sums_to_one(w, 2),)
    kw = {"sizes": (n,), "probs": (ref, a, b, w)}
    f = lambda k: low + spread * w[x, k, 1]                      # m <= f_k <= M = m + W
    moved = lambda k: ref[x, k] + tv * (a[x, k] - b[x, k])      # the other vector
    gap = sums.vsum(lambda k: moved(k) * f(k), n) - sums.vsum(lambda k: ref[x, k] * f(k), n)
    one = lambda k: sp.Sum(w[x, k, j], (j, 1, 2))               # w_{k1} + w_{k2}, = 1
    claimed = constant(low + spread, low)

    def wsum(base, entry):
        return sums.vsum(lambda k: base[x, k] * entry(k), n)

    w1, w2 = (lambda k: w[x, k, 1]), (lambda k: w[x, k, 2])
    rest = lambda k: one(k) - w[x, k, 1]                         # 1 - w_{k1}, written through w
    upper, upper_nn = spread * tv * (wsum(a, rest) + wsum(b, w1)), spread * tv * (wsum(a, w2) + wsum(b, w1))
    lower, lower_nn = spread * tv * (wsum(a, w1) + wsum(b, rest)), spread * tv * (wsum(a, w1) + wsum(b, w2))
    pre = f"any n, {f_text}"
    param = (f"{other} - {ref_name} = TV (a - b), a, b = the positive and negative parts of {other} - {ref_name} over TV "
             f"(a definition: probability vectors); f_i = m + (M - m) w_i1, w_i = ((f_i - m), (M - f_i))/(M - m) "
             f"(a definition: a probability 2-vector as m <= f_i <= M)")
    return [
        d.sum_equal(f"{pre}: the parametrization {other} = {ref_name} + TV (a - b) keeps sum {other} = 1",
                    sums.vsum(moved, n), 1, param, facts=facts, **kw),
        d.sum_equal(f"{pre}: (M - m) TV - (E_{other} f - E_{ref_name} f) = (M - m) TV (sum a (1 - w_1) + sum b w_1)",
                    claimed * tv - gap, upper, f"sum {ref_name} = sum a = sum b = 1; sum_j w_ij = w_i1 + w_i2 = 1",
                    facts=facts, **kw),
        d.sum_equal(f"{pre}: sum a (1 - w_1) = sum a w_2 termwise (w_1 + w_2 = 1)", upper, upper_nn,
                    "the entries w_{i1}, w_{i2} join to sum_j w_ij inside the sum over i", **kw),
        d.sum_nonnegative(f"{pre}: (M - m) TV (sum a w_2 + sum b w_1) >= 0", upper_nn,
                          "M - m, TV, a, b, w >= 0: so E_" + other + " f - E_" + ref_name + " f <= (M - m) TV", **kw),
        d.sum_equal(f"{pre}: (M - m) TV + (E_{other} f - E_{ref_name} f) = (M - m) TV (sum a w_1 + sum b (1 - w_1))",
                    claimed * tv + gap, lower, "as above, the other sign", facts=facts, **kw),
        d.sum_equal(f"{pre}: sum b (1 - w_1) = sum b w_2 termwise (w_1 + w_2 = 1)", lower, lower_nn,
                    "the entries w_{i1}, w_{i2} join to sum_j w_ij inside the sum over i", **kw),
        d.sum_nonnegative(f"{pre}: (M - m) TV (sum a w_1 + sum b w_2) >= 0", lower_nn,
                          "so E_" + ref_name + " f - E_" + other + " f <= (M - m) TV: |E_" + other + " f - E_" + ref_name
                          + " f| <= (M - m) TV", **kw),
    ]


def _pinsker_proof(bound: Callable, constant: Callable = lambda hi, lo: hi - lo) -> list:
    """|J(p) - J(p')| <= Delta r E TV (termwise), binary Pinsker (a derivative), the log-sum inequality
    for any n (data processing onto S = {p > p'} = responses 1..k), then Jensen over prompts."""
    k = sp.Symbol("k", integer=True, positive=True)
    i = sp.Dummy("i", integer=True, positive=True)
    P, Q, rr = g.pol, g.sft, g.rew
    kw = dict(facts=g.FACTS, sizes=(*g.SIZES, k), probs=g.PROBS)
    cc = sp.Symbol("c", real=True)
    # 1. Shift by a constant (only the range of r matters), then |J(p) - J(p')| <= Delta r TV per prompt,
    #    termwise in a parametrization (range_tv_steps); E_x with q > 0 gives Delta r E_x TV.
    steps = [
        d.sum_equal("any n, any prompts: J(p) - J(p') = E_x sum (p - p')(r - c)",
                    g.E_x(sums.vsum(lambda j: (P[g.x, j] - Q[g.x, j]) * rr[g.x, j], g.n)),
                    g.E_x(sums.vsum(lambda j: (P[g.x, j] - Q[g.x, j]) * (rr[g.x, j] - cc), g.n)),
                    "sum p = sum p' = 1", **kw),
        *range_tv_steps(Q, constant, "f = r (M - m = Delta r)", "p'", "p"),
    ]
    # 2. Binary Pinsker: F(q) = kl2(a || q) - 2 (a - q)^2 has F(a) = 0 and F'(q) = (q - a) g'(q), with
    #    g'(q) = 1/(q(1 - q)) - 4 = (1 - 2q)^2/(q(1 - q)) >= 0: F decreases then increases, so F >= 0.
    a_, q_, u_ = sp.Symbol("a", positive=True), sp.Symbol("q", positive=True), sp.Symbol("u", positive=True)
    kl2 = a_ * sp.log(a_ / q_) + (1 - a_) * sp.log((1 - a_) / (1 - q_))
    F = kl2 - 2 * (a_ - q_) ** 2
    gprime = 1 / (q_ * (1 - q_)) - 4
    steps += [
        d.equal("binary Pinsker: F(a) = 0", F.subs(q_, a_), 0, "F(q) = kl2(a || q) - 2 (a - q)^2"),
        d.equal("binary Pinsker: F'(q) = (q - a) (1/(q(1 - q)) - 4)", sp.diff(F, q_), (q_ - a_) * gprime,
                "differentiate"),
        d.equal("binary Pinsker: 1/(q(1 - q)) - 4 = (1 - 2q)^2/(q(1 - q))", gprime,
                (1 - 2 * q_) ** 2 / (q_ * (1 - q_)), "g' of g(q) = log(q/(1 - q)) - 4q"),
        d.equal("binary Pinsker: at q = u/(1 + u) (u > 0 covers (0, 1)) it is (1 - u)^2/u",
                ((1 - 2 * q_) ** 2 / (q_ * (1 - q_))).subs(q_, u_ / (1 + u_)), (1 - u_) ** 2 / u_, "algebra"),
        d.sum_nonnegative("binary Pinsker: (1 - u)^2/u >= 0",
                          (1 - u_) ** 2 / u_, "so F' has the sign of q - a and F >= F(a) = 0: kl2 >= 2 (a - q)^2"),
    ]
    # 3. Log-sum inequality on S = 1..k (and its complement): sum_S p log(p/p') >= p(S) log(p(S)/p'(S)).
    j = sp.Dummy("j", integer=True, positive=True)
    pS, qS = sp.Sum(P[g.x, j], (j, 1, k)), sp.Sum(Q[g.x, j], (j, 1, k))
    lhs = sp.Sum(P[g.x, i] * sp.log(P[g.x, i] / Q[g.x, i]), (i, 1, k)) - pS * sp.log(pS / qS)
    cond = sp.Sum(P[g.x, i] * g.h((Q[g.x, i] / qS) / (P[g.x, i] / pS)), (i, 1, k))
    steps += [
        d.sum_equal("any n: sum_S p log(p/p') - p(S) log(p(S)/p'(S)) = sum_S p h((p'/p'(S))/(p/p(S)))", lhs, cond,
                    "p(S) KL(p|S || p'|S) written through h; both conditionals sum to 1", **kw),
        d.sum_nonnegative("any n: so the log-sum inequality holds (data processing onto {S, not S})",
                          sp.Sum(P[g.x, i] * g._NONNEG((Q[g.x, i] / qS) / (P[g.x, i] / pS)), (i, 1, k)),
                          "p > 0, h >= 0", **kw),
        *g.h_nonnegative("log-sum"),
    ]
    # 4. With S = {p > p'}: TV = p(S) - p'(S), so KL >= kl2(p(S) || p'(S)) >= 2 TV^2; Jensen over prompts.
    tv = sp.IndexedBase("TV", nonnegative=True)
    mean_tv = sums.vsum(lambda j: g.qw[j] * tv[j], g.m)
    steps += [
        d.sum_equal("any prompts: E_x TV^2 - (E_x TV)^2 = E_x (TV - E_x TV)^2", sp.Sum(g.qw[g.x] * tv[g.x] ** 2, (g.x, 1, g.m))
                    - mean_tv ** 2, sp.Sum(g.qw[g.x] * (tv[g.x] - mean_tv) ** 2, (g.x, 1, g.m)),
                    "sum q = 1", facts=g.FACTS, sizes=(g.m,), probs=g.PROBS),
        d.sum_nonnegative("any prompts: so (E_x TV)^2 <= E_x TV^2 <= E_x KL/2",
                          sp.Sum(g.qw[g.x] * (tv[g.x] - mean_tv) ** 2, (g.x, 1, g.m)), "q > 0 times squares",
                          facts=g.FACTS, sizes=(g.m,), probs=g.PROBS),
        d.equal("the claimed bound is Delta r sqrt(E KL / 2)", bound(sp.Symbol("Delta_r", positive=True),
                                                                    sp.Symbol("K", positive=True)),
                sp.Symbol("Delta_r", positive=True) * sp.sqrt(sp.Symbol("K", positive=True) / 2),
                "the chain above: Delta r E TV <= Delta r sqrt(E_x TV^2) <= Delta r sqrt(E KL/2) (pins the 1/2)"),
    ]
    return steps


def check_pinsker(bound: Callable = lambda spread, kl_value: spread * sp.sqrt(kl_value / 2),
                  range_constant: Callable = lambda hi, lo: hi - lo) -> d.Result:
    """|J(p) - J(p')| <= Delta r E_x TV <= Delta r sqrt(E_x KL/2); ``bound(Delta r, E KL)`` is the claim,
    ``range_constant(max r, min r)`` the claimed constant of |J(p) - J(p')| <= (max r - min r) TV."""
    steps, simplices = [], []
    cc = c
    for n, prompts in ((2, 1), (3, 1), (3, 2)):
        weights = (sp.Integer(1),) if prompts == 1 else prob_vector("q", 2)
        simplices += [weights] if prompts > 1 else []
        steps_up = nonneg_vector("a", n)
        diff, shifted = [], []
        for x in range(prompts):
            tag = "ab"[x]
            p, p2 = prob_vector(f"p{tag}", n), prob_vector(f"s{tag}", n)
            simplices += [p, p2]
            r = [rmin + sum(steps_up[1:i + 1]) for i in range(n)]   # sorted rewards
            diff.append(reward(p, r) - reward(p2, r))
            shifted.append(sum((a - b) * (ri - cc) for a, b, ri in zip(p, p2, r)))
        label = f"n={n}, {prompts} prompt{'s' * (prompts > 1)}"
        steps.append(d.equal(f"{label}: J(p) - J(p') = E_x sum (p - p')(r - c)", weighted(weights, diff),
                             weighted(weights, shifted), "sum_y (p - p')(y) = 0, any constant c"))
    steps += _pinsker_proof(bound, range_constant)
    return d.verify("thm41.pinsker", steps, simplices=simplices)
