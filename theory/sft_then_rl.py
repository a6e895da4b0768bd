"""SFT then RL: Theorem 3.1, its beta-behaviour, its local form, and the KL threshold (docs/theory.md §3).

Claims: ``thm31.identity`` [paper, generalized], ``thm31.c1`` [paper], ``thm31.beta`` [corrected],
``thm31.local`` [corrected], ``threshold.kl`` [reconstructed].

Simplifications:
- identities are proved for any n and any number of prompts with symbolic sums (``theory.sums``),
  and also checked for n = 2, 3, 4 responses with one prompt and n = 2 or 3 with two prompts as
  cross-checks; the weight of a lone prompt is a free positive symbol (every identity is linear in it);
- expansions are posed in moment coordinates (docs/theory.md §8): a series of
  ``log(1 + m1 t + m2 t^2/2 + m3 t^3/6)`` in ``t = 1/beta``, plus an exact check that the moments
  are those of the actual distribution; a direct series on a 2-response instance cross-checks it;
- the small-beta limit is posed in gap coordinates ``r_y = r* - g_y`` (g_y >= 0), where sympy's
  ``limit`` is immediate;
- C1 >= 0 (through h(u) = u - 1 - log u >= 0), C1 decreasing in beta (f'' = Var of the tilt) and
  "RL from a reward-maximal expert never hurts" are proved for any n, not sampled.

Each check takes the claimed statement as a parameter (the true one by default).
"""

from __future__ import annotations

from typing import Callable, Mapping, Sequence

import sympy as sp

from theory import derivation as d
from theory import generic as g
from theory import sums
from theory.objectives import (expectation, exp_tilt, kl, partition, sft_loss, third_cumulant,
                               tilt, variance, weighted)
from theory.symbols import (beta, c, eta, gap_off, m1, m2, m3, m_D, positive_vector, prob_vector, q,
                            real_vector, rstar, t)
from theory.softmax import fisher_matrix

CONFIGS = ((2, 1), (3, 1), (4, 1), (3, 2))   # (responses n, prompts)


def _weights(prompts: int):
    return (q,) if prompts == 1 else prob_vector("q", 2)


def identity_rhs(p_sft: Sequence, expert: Sequence, r: Sequence, b):
    """thm31.identity, one prompt: log E_{p_SFT}[e^{r/beta}] - E_{p_D}[r]/beta."""
    return sp.log(partition(p_sft, r, b)) - expectation(expert, r) / b


def c1_rhs(expert: Sequence, r: Sequence, b):
    """thm31.c1, one prompt: log Z_beta - E_{p_D}[r]/beta with Z_beta = E_{p_D}[e^{r/beta}]."""
    return sp.log(partition(expert, r, b)) - expectation(expert, r) / b


def _explicit_tilt(base, r, b):
    """p_RL(i|x) = base(i|x) e^{r(x,i)/b} / Σ_j base(j|x) e^{r(x,j)/b}, written out (any n)."""
    z = sums.vsum(lambda j: base[g.x, j] * sp.exp(r[g.x, j] / b), g.n)
    return sums.Vec(lambda i: base[g.x, i] * sp.exp(r[g.x, i] / b) / z, g.n)


def _identity_any_n(claimed: Callable) -> list:
    S, D, R = g.per_prompt(g.sft), g.per_prompt(g.expert), g.per_prompt(g.rew)
    p_rl = _explicit_tilt(g.sft, g.rew, beta)
    change = g.E_x(sft_loss(D, p_rl) - sft_loss(D, S))
    return [d.sum_equal("any n, any prompts: L(p_RL) - L(p_SFT) = claimed", change,
                        g.E_x(claimed(S, D, R, beta)),
                        "log p_SFT - log p_RL = log Z - r/beta; sum_y p_D(y) = 1",
                        facts=g.FACTS, sizes=g.SIZES, probs=g.PROBS)]


def check_identity(claimed: Callable = identity_rhs, configs=CONFIGS, closed=None) -> d.Result:
    """L(p_RL) - L(p_SFT) = E_x[log E_{p_SFT} e^{r/beta} - E_{p_D} r / beta] for ANY p_SFT."""
    steps, simplices = _identity_any_n(claimed), []
    for n, prompts in configs:
        weights = _weights(prompts)
        simplices += [weights] if prompts > 1 else []
        change, via_logs, rhs = [], [], []
        for x in range(prompts):
            tag = "ab"[x]
            s, pd, r = prob_vector(f"s{tag}", n), prob_vector(f"d{tag}", n), real_vector(f"r{tag}", n)
            simplices += [s, pd]
            # Written out here, not through theory.objectives.partition/tilt, so that the claimed
            # right-hand side (which uses them) is compared with an independent left-hand side.
            z = sum(si * sp.exp(ri / beta) for si, ri in zip(s, r))
            p_rl = [si * sp.exp(ri / beta) / z for si, ri in zip(s, r)]
            change.append(sft_loss(pd, p_rl) - sft_loss(pd, s))
            via_logs.append(sum(pd[i] * (sp.log(z) - r[i] / beta) for i in range(n)))
            rhs.append(claimed(s, pd, r, beta))
        label = f"n={n}, {prompts} prompt{'s' * (prompts > 1)}"
        steps.append(d.equal(f"{label}: log of the tilt", weighted(weights, change),
                             weighted(weights, via_logs),
                             "log p_SFT(y) - log p_RL(y) = log Z - r(y)/beta"))
        steps.append(d.equal(f"{label}: identity", weighted(weights, via_logs),
                             weighted(weights, rhs), "sum_y p_D(y) = 1"))
    from theory import closed_form_checks, closed_forms
    steps += closed_form_checks.identity_steps(closed or closed_forms)
    return d.verify("thm31.identity", steps, simplices=simplices)


def check_c1(claimed: Callable = c1_rhs, configs=((2, 1), (3, 1), (4, 1), (2, 2)), closed=None) -> d.Result:
    """C1 = E_x[log Z - E_{p_D} r / beta] = E_x KL(p_D || p_RL) >= 0, zero iff r constant on supp."""
    D, R = g.per_prompt(g.expert), g.per_prompt(g.rew)
    p_rl = _explicit_tilt(g.expert, g.rew, beta)
    steps, simplices = [
        d.sum_equal("any n, any prompts: increase at the SFT optimum = claimed C1",
                    g.E_x(sft_loss(D, p_rl) - sft_loss(D, D)), g.E_x(claimed(D, R, beta)),
                    "thm31.identity with p_SFT = p_D", facts=g.FACTS, sizes=g.SIZES, probs=g.PROBS),
        d.sum_equal("any n, any prompts: C1 = E_x KL(p_D || p_RL)", g.E_x(claimed(D, R, beta)),
                    g.E_x(kl(D, p_rl)), "log(p_D / p_RL) = log Z - r/beta",
                    facts=g.FACTS, sizes=g.SIZES, probs=g.PROBS),
        *g.kl_nonnegative(D, p_rl, "C1 >= 0"),
    ], []
    for n, prompts in configs:
        weights = _weights(prompts)
        simplices += [weights] if prompts > 1 else []
        change, c1, kls = [], [], []
        for x in range(prompts):
            tag = "ab"[x]
            pd, r = prob_vector(f"d{tag}", n), real_vector(f"r{tag}", n)
            simplices.append(pd)
            p_rl = tilt(pd, r, beta)
            change.append(sft_loss(pd, p_rl) - sft_loss(pd, pd))
            c1.append(claimed(pd, r, beta))
            kls.append(kl(pd, p_rl))
        label = f"n={n}, {prompts} prompt{'s' * (prompts > 1)}"
        steps.append(d.equal(f"{label}: increase at the SFT optimum", weighted(weights, change),
                             weighted(weights, c1), "thm31.identity with p_SFT = p_D"))
        steps.append(d.equal(f"{label}: C1 = E_x KL(p_D || p_RL)", weighted(weights, c1),
                             weighted(weights, kls), "log(p_D / p_RL) = log Z - r/beta"))
        # C1 >= 0 is proved above for any n (KL through h >= 0); strictly > 0 iff h(p_RL/p_D) > 0
        # somewhere, i.e. iff the tilt moves p_D, i.e. iff r is non-constant on supp p_D.
    pd, r = prob_vector("d", 3), real_vector("r", 3)
    simplices.append(pd)
    steps.append(d.equal("constant reward: C1 = 0", claimed(pd, (c, c, c), beta), 0,
                         "tilting by a constant changes nothing"))
    steps.append(d.equal("deterministic expert: C1 = 0", claimed((1, 0, 0), r, beta), 0,
                         "tilting a point mass leaves it unchanged"))
    gv = prob_vector("g", 2)
    simplices.append(gv)
    steps.append(d.equal("reward constant on supp p_D only: C1 = 0",
                         claimed((gv[0], gv[1], 0), (c, c, r[2]), beta), 0,
                         "only the reward on the support of p_D matters"))
    from theory import closed_form_checks, closed_forms
    steps += closed_form_checks.c1_steps(closed or closed_forms)
    return d.verify("thm31.c1", steps, simplices=simplices)


def _monotone_any_n() -> list:
    dd, rr = g.expert, g.rew
    D = g.per_prompt(dd)
    z = sums.vsum(lambda j: dd[g.x, j] * sp.exp(t * rr[g.x, j]), g.n)
    w = lambda i: dd[g.x, i] * sp.exp(t * rr[g.x, i]) / z  # noqa: E731  the tilted distribution
    f = sp.log(z) - t * expectation(D, g.per_prompt(rr))
    tilted_mean = sums.vsum(lambda i: w(i) * rr[g.x, i], g.n)
    tilted_var = sums.vsum(lambda i: w(i) * (rr[g.x, i] - tilted_mean) ** 2, g.n)
    kw = dict(facts=g.FACTS, sizes=(g.n,), probs=g.PROBS)
    return [
        d.sum_equal("any n: f is C1 at t = 1/beta", f.subs(t, 1 / beta), c1_rhs(D, g.per_prompt(rr), beta),
                    "definition", **kw),
        d.sum_equal("any n: f'(t) = E_tilt r - E_D r", sp.diff(f, t),
                    tilted_mean - expectation(D, g.per_prompt(rr)), "derivative of log Z", **kw),
        d.sum_equal("any n: f'(0) = 0", sp.diff(f, t).subs(t, 0), 0, "the tilt at t = 0 is p_D; sum p_D = 1", **kw),
        d.sum_equal("any n: f''(t) = Var_tilt(r)", sp.diff(f, t, 2), tilted_var,
                    "derivative of the tilted mean; sum of the tilt = 1", **kw),
        d.sum_nonnegative("any n: Var_tilt(r) >= 0, so f' is increasing and f'(t) >= f'(0) = 0 for t >= 0",
                          tilted_var, "tilt weights > 0 times squares", **kw),
        d.sum_equal("any n: dC1/dbeta = -f'(1/beta)/beta^2, which is <= 0",
                    sp.diff(c1_rhs(D, g.per_prompt(rr), beta), beta),
                    -(tilted_mean - expectation(D, g.per_prompt(rr))).subs(t, 1 / beta) / beta ** 2,
                    "chain rule with t = 1/beta", **kw),
    ]


def check_beta(coefficients: tuple = (sp.Rational(1, 2), sp.Rational(1, 6)),
               small_beta: Callable = lambda gap, tt, mass: gap * tt + sp.log(mass)) -> d.Result:
    """C1(beta) decreases; = Var/(2 beta^2) + k3/(6 beta^3) + O(beta^-4); beta -> 0 form; NPG.

    ``coefficients`` are the claimed (a2, a3) in C1 = a2 Var t^2 + a3 k3 t^3 + O(t^4), t = 1/beta;
    ``small_beta(r* - E r, t, p_D(A))`` is the claimed beta -> 0 form of C1.
    """
    a2, a3 = coefficients
    steps, simplices = [], []
    # Large beta, in moment coordinates.
    mgf = 1 + m1 * t + m2 * t ** 2 / 2 + m3 * t ** 3 / 6
    k2, k3 = m2 - m1 ** 2, m3 - 3 * m1 * m2 + 2 * m1 ** 3
    steps.append(d.series("cumulant series of f(t) = log E e^{tr} - t E r", sp.log(mgf) - m1 * t,
                          a2 * k2 * t ** 2 + a3 * k3 * t ** 3, t, 4,
                          "log of the moment generating function; the t-term cancels"))
    for n in (2, 3):
        pd, r = prob_vector("d", n), real_vector("r", n)
        simplices.append(pd)
        moments = {m1: expectation(pd, r), m2: expectation(pd, [x ** 2 for x in r]),
                   m3: expectation(pd, [x ** 3 for x in r])}
        steps.append(d.series(f"n={n}: E_{{p_D}} e^{{tr}} has these moments", partition(pd, r, 1 / t),
                              mgf.subs(moments), t, 4, "Taylor series of exp"))
        steps.append(d.equal(f"n={n}: k2 = Var_{{p_D}}(r), k3 = third central moment",
                             sp.Matrix([k2.subs(moments), k3.subs(moments)]),
                             sp.Matrix([variance(pd, r), third_cumulant(pd, r)]),
                             "cumulants from moments"))
    pd2, r2 = prob_vector("e", 2), real_vector("s", 2)
    simplices.append(pd2)
    steps.append(d.series("n=2, direct: C1 = a2 Var t^2 + a3 k3 t^3 + O(t^4)",
                          c1_rhs(pd2, r2, 1 / t),
                          a2 * variance(pd2, r2) * t ** 2 + a3 * third_cumulant(pd2, r2) * t ** 3,
                          t, 4, "cross-check of the moment-coordinate series"))
    # Monotone in beta, any n: f'(t) = E_tilt r - E r, f'(0) = 0, f''(t) = Var_tilt(r) >= 0 (a sum of
    # squares), so f' >= 0 for t >= 0 and dC1/dbeta = -f'(1/beta)/beta^2 <= 0.
    steps += _monotone_any_n()
    # The same at n = 2, 3 in x-coordinates (cross-check of the normalizer).
    # Written with x_y = e^{t r_y} (positive symbols), d/dt = partial_t + sum_y r_y x_y partial_{x_y},
    # so every derivative stays rational in x.
    for n in (2, 3):
        pd, r, x = prob_vector("d", n), real_vector("r", n), positive_vector("x", n)

        def d_dt(expr, r=r, x=x):
            return sp.diff(expr, t) + sum(r[i] * x[i] * sp.diff(expr, x[i]) for i in range(n))

        f = sp.log(expectation(pd, x)) - t * expectation(pd, r)
        tilted = [pd[i] * x[i] / expectation(pd, x) for i in range(n)]
        exps = {x[i]: sp.exp(t * r[i]) for i in range(n)}
        steps.append(d.equal(f"n={n}: f is C1 in x-coordinates", f.subs(exps), c1_rhs(pd, r, 1 / t),
                             "x_y = e^{t r_y}"))
        steps.append(d.equal(f"n={n}: f'(t) = E_tilt r - E r", d_dt(f),
                             expectation(tilted, r) - expectation(pd, r), "derivative of log Z"))
        tilted_moment = [expectation(pd, [r[i] ** k * x[i] for i in range(n)]) / expectation(pd, x)
                         for k in (1, 2)]
        steps.append(d.equal(f"n={n}: f''(t) = Var_tilt(r)", d_dt(tilted_moment[0]),
                             tilted_moment[1] - tilted_moment[0] ** 2, "derivative of the tilted mean"))
        steps.append(d.equal(f"n={n}: f'(0) = 0", (expectation(tilted, r) - expectation(pd, r)).subs(
            {x[i]: 1 for i in range(n)}), 0, "the tilt at t = 0 is p_D"))
    # Small beta, in gap coordinates r_y = r* - g_y: A = {1} and A = {1, 2}.
    gaps = positive_vector("g", 3)
    for label, gap_vec in (("A = {1}", (0, gaps[1], gaps[2])), ("A = {1,2} (tie)", (0, 0, gaps[2]))):
        pd = prob_vector("d", 3)
        r = [rstar - g for g in gap_vec]
        mass = pd[0] if gap_vec[1] != 0 else pd[0] + pd[1]
        z_gap = sum(pi * sp.exp(-t * g) for pi, g in zip(pd, gap_vec))
        steps.append(d.equal(f"{label}: factor e^{{t r*}} out of Z", partition(pd, r, 1 / t),
                             sp.exp(t * rstar) * z_gap, "e^{t(r* - g)} = e^{t r*} e^{-t g}"))
        f_gap = t * rstar + sp.log(z_gap) - t * expectation(pd, r)
        steps.append(d.equal(f"{label}: log of the factored Z",
                             sp.log(sp.exp(t * rstar) * z_gap) - t * expectation(pd, r), f_gap,
                             "C1 = log Z - t E r with Z as just factored; log(e^{t r*} W) = t r* + log W"))
        steps.append(d.limit(f"{label}: W -> p_D(A) as beta -> 0", z_gap, mass, t, sp.oo,
                             "e^{-t g} -> 0 off A"))
        steps.append(d.equal(f"{label}: C1 - claimed small-beta form = log W - log p_D(A)",
                             f_gap - small_beta(rstar - expectation(pd, r), t, mass),
                             sp.log(z_gap) - sp.log(mass),
                             "-> 0 as beta -> 0 by the limit above and continuity of log at p_D(A) > 0"))
    # The regularized optimum from p_D is the logit shift theta* + r/beta = NPG for time 1/beta.
    for n in (2, 3):
        pd, r = prob_vector("d", n), real_vector("r", n)
        shifted = [sp.exp(sp.log(pd[i]) + r[i] / beta) for i in range(n)]
        total = sum(shifted)
        steps.append(d.equal(f"n={n}: softmax(log p_D + r/beta) = p_RL", sp.Matrix([x / total for x in shifted]),
                             sp.Matrix(tilt(pd, r, beta)), "exp(log p + r/beta) = p e^{r/beta}"))
        ones = sp.Matrix([c] * n)
        steps.append(d.equal(f"n={n}: natural gradient F^+ F r = r + const",
                             fisher_matrix(pd) * (sp.Matrix(r) + ones), fisher_matrix(pd) * sp.Matrix(r),
                             "the null space of F is the constants, so the NPG flow is theta' = r"))
    pd3 = prob_vector("d", 3)
    simplices += [pd3]
    return d.verify("thm31.beta", steps, simplices=list(dict.fromkeys(map(tuple, simplices))),
                    ranges={m1: (-1, 1), m2: (0, 2), m3: (-2, 2)})


def check_local(half=sp.Rational(1, 2)) -> d.Result:
    """L(theta* + eta d) - L* = half * eta^2 sum_x q d^T F d + O(eta^3); > 0 iff r non-constant."""
    steps, simplices = [], []
    mgf = 1 + m1 * eta + m2 * eta ** 2 / 2
    steps.append(d.series("cumulant series", sp.log(mgf) - m1 * eta, half * eta ** 2 * (m2 - m1 ** 2),
                          eta, 3, "log(1 + m1 e + m2 e^2/2) = m1 e + (m2 - m1^2) e^2/2 + O(e^3)"))
    for n, prompts in ((2, 1), (3, 1), (2, 2)):
        weights = _weights(prompts)
        simplices += [weights] if prompts > 1 else []
        change, probability_form, quadratic = [], [], []
        for x in range(prompts):
            tag = "ab"[x]
            pd, v = prob_vector(f"d{tag}", n), real_vector(f"v{tag}", n)
            simplices.append(pd)
            moved = exp_tilt(pd, [eta * vi for vi in v])
            change.append(sft_loss(pd, moved) - sft_loss(pd, pd))
            probability_form.append(sp.log(partition(pd, [eta * vi for vi in v], 1)) - eta * expectation(pd, v))
            quadratic.append(half * eta ** 2 * (sp.Matrix(v).T * fisher_matrix(pd) * sp.Matrix(v))[0])
        label = f"n={n}, {prompts} prompt{'s' * (prompts > 1)}"
        steps.append(d.equal(f"{label}: probability coordinates", weighted(weights, change),
                             weighted(weights, probability_form),
                             "theta* = log p_D, so softmax(theta* + eta d) = p_D e^{eta d}/E e^{eta d}"))
        if (n, prompts) == (2, 1):   # one direct series cross-checks the moment-coordinate route
            steps.append(d.series(f"{label}: L - L* = half eta^2 E_x d^T F d + O(eta^3), directly",
                                  weighted(weights, probability_form), weighted(weights, quadratic), eta, 3,
                                  "series of log E e^{eta d} - eta E d"))
        moments = []
        for x in range(prompts):
            pd, v = prob_vector(f"d{'ab'[x]}", n), real_vector(f"v{'ab'[x]}", n)
            moments.append(partition(pd, [eta * vi for vi in v], 1)
                           - (1 + eta * expectation(pd, v) + eta ** 2 * expectation(pd, [vi ** 2 for vi in v]) / 2))
            steps.append(d.series(f"{label}, prompt {x + 1}: E e^{{eta d}} has the moments of p_D",
                                  moments[-1], 0, eta, 3, "Taylor series of exp"))
            steps.append(d.equal(f"{label}, prompt {x + 1}: m2 - m1^2 = d^T F d",
                                 expectation(pd, [vi ** 2 for vi in v]) - expectation(pd, v) ** 2,
                                 (sp.Matrix(v).T * fisher_matrix(pd) * sp.Matrix(v))[0], "softmax.fisher"))
    for n in (2, 3):
        pd, r = prob_vector("d", n), real_vector("r", n)
        f = fisher_matrix(pd)
        pg = q * f * sp.Matrix(r)
        steps.append(d.equal(f"n={n}: constant reward gives a zero policy gradient",
                             q * f * sp.Matrix([c] * n), sp.zeros(n, 1), "F 1 = 0"))
        steps.append(d.equal(f"n={n}: the policy gradient sums to 0", (sp.ones(1, n) * pg)[0], 0,
                             "1^T F = 0: a constant F r is zero, so d^T F d > 0 iff F r != 0 iff r non-constant"))
        steps.append(d.equal(f"n={n}: r^T F r = Var(r)", (sp.Matrix(r).T * f * sp.Matrix(r))[0],
                             variance(pd, r), "zero iff r is constant on the full support"))
        p = prob_vector("p", n)
        simplices += [pd, p]
        steps.append(d.equal(f"n={n}: L(theta) - L* = KL(p_D || p_theta)", sft_loss(pd, p) - sft_loss(pd, pd),
                             kl(pd, p), "so every RL procedure leaves L >= L*"))
    # Any n: m2 - m1^2 = d^T F d, and L(theta) - L* = KL(p_D || p_theta) >= 0 (so L >= L* always).
    from theory.softmax import fisher_entry
    dd, v = g.expert, g.vec
    D = g.per_prompt(dd)
    quad = sums.vsum(lambda i: sums.vsum(lambda j: v[g.x, i] * fisher_entry(lambda a: dd[g.x, a], i, j)
                                         * v[g.x, j], g.n), g.n)
    kw = dict(facts=g.FACTS, sizes=g.SIZES, probs=g.PROBS)
    steps += [
        d.sum_equal("any n, any prompts: m2 - m1^2 = d^T F d", g.E_x(sums.vsum(lambda i: dd[g.x, i] * v[g.x, i] ** 2, g.n)
                    - sums.vsum(lambda i: dd[g.x, i] * v[g.x, i], g.n) ** 2), g.E_x(quad), "softmax.fisher", **kw),
        d.sum_equal("any n, any prompts: L(theta) - L* = E_x KL(p_D || p_theta)",
                    g.E_x(sft_loss(D, g.per_prompt(g.pol)) - sft_loss(D, D)), g.E_x(kl(D, g.per_prompt(g.pol))),
                    "L = E_x[H(p_D) + KL]", **kw),
        *g.kl_nonnegative(D, g.per_prompt(g.pol), "L >= L* for every theta"),
    ]
    return d.verify("thm31.local", steps, simplices=list(dict.fromkeys(map(tuple, simplices))),
                    ranges={m1: (-1, 1), m2: (0, 2)})


_ONE_MINUS_EXP = g.opaque_nonnegative("one_minus_exp", lambda a: 1 - sp.exp(-a))
_u = sp.Symbol("u", nonnegative=True)


def _threshold_any_n() -> list:
    S, D, R = g.per_prompt(g.sft), g.per_prompt(g.expert), g.per_prompt(g.rew)
    p_rl = _explicit_tilt(g.sft, g.rew, beta)
    change = g.E_x(sft_loss(D, p_rl) - sft_loss(D, S))
    steps = [
        d.sum_equal("any n, any prompts: Delta L = E_x KL(p_D||p_RL) - E_x KL(p_D||p_SFT)", change,
                    g.E_x(kl(D, p_rl) - kl(D, S)), "L = E_x[H(p_D) + KL(p_D || p)] and H(p_D) cancels",
                    facts=g.FACTS, sizes=g.SIZES, probs=g.PROBS),
        d.sum_equal("any n, any prompts: Delta L = E_x log E_SFT e^{r/beta} - E_x E_D r / beta", change,
                    g.E_x(identity_rhs(S, D, R, beta)), "thm31.identity",
                    facts=g.FACTS, sizes=g.SIZES, probs=g.PROBS),
    ]
    # Reward-maximal expert: r = r* - g with g >= 0 and sum_i p_D(i) g(i) = 0 (p_D lives where g = 0).
    on_argmax = sums.known_sum("expert on the argmax set", lambda i: g.expert[g.x, i] * g.gaps[g.x, i],
                               lambda i: sp.Integer(0))
    facts = (*g.FACTS, on_argmax)
    R_gap = sums.Vec(lambda i: rstar - g.gaps[g.x, i], g.n)
    off = sums.vsum(lambda i: g.sft[g.x, i] * (1 - sp.exp(-g.gaps[g.x, i] / beta)), g.n)
    steps += [
        d.sum_equal("reward-maximal expert, any n: Delta L = log(1 - sum_i s_i (1 - e^{-g_i/beta}))",
                    identity_rhs(S, D, R_gap, beta), sp.log(1 - off),
                    "e^{r/beta} = e^{r*/beta} e^{-g/beta}, E_D r = r*, sum s = 1",
                    facts=facts, sizes=(g.n,), probs=g.PROBS, sample=False),
        d.equal("1 - e^{-u} = 0 at u = 0", (1 - sp.exp(-_u)).subs(_u, 0), 0, "value at 0"),
        d.nonnegative("d/du (1 - e^{-u}) = e^{-u} >= 0", sp.diff(1 - sp.exp(-_u), _u),
                      "so 1 - e^{-u} >= 0 for u >= 0"),
        d.sum_nonnegative("sum_i s_i (1 - e^{-g_i/beta}) >= 0, so Delta L = log(1 - that) <= log 1 = 0",
                          sums.vsum(lambda i: g.sft[g.x, i] * _ONE_MINUS_EXP(g.gaps[g.x, i] / beta), g.n),
                          "s > 0 and 1 - e^{-u} >= 0 termwise; log is increasing",
                          facts=facts, sizes=(g.n,), probs=g.PROBS),
    ]
    return steps


THRESHOLD_EXAMPLE = {"before": "0.511", "beta=0.2": "0.406", "beta=1": "0.446", "beta=5": "0.493"}


def check_threshold(var_coefficient=sp.Rational(1, 2),
                    example: Mapping[str, str] = THRESHOLD_EXAMPLE) -> d.Result:
    """RL lowers L iff E_x KL(p_D||p_RL) < E_x KL(p_D||p_SFT); large-beta form; worked example."""
    steps, simplices = _threshold_any_n(), []
    for n, prompts in ((3, 1), (2, 2)):
        weights = _weights(prompts)
        simplices += [weights] if prompts > 1 else []
        change, kl_diff, via_identity = [], [], []
        for x in range(prompts):
            tag = "ab"[x]
            s, pd, r = prob_vector(f"s{tag}", n), prob_vector(f"d{tag}", n), real_vector(f"r{tag}", n)
            simplices += [s, pd]
            p_rl = tilt(s, r, beta)
            change.append(sft_loss(pd, p_rl) - sft_loss(pd, s))
            kl_diff.append(kl(pd, p_rl) - kl(pd, s))
            via_identity.append(identity_rhs(s, pd, r, beta))
        label = f"n={n}, {prompts} prompt{'s' * (prompts > 1)}"
        steps.append(d.equal(f"{label}: Delta L = E_x KL(p_D||p_RL) - E_x KL(p_D||p_SFT)",
                             weighted(weights, change), weighted(weights, kl_diff),
                             "L = E_x[H(p_D) + KL(p_D || p)] and H(p_D) cancels"))
        steps.append(d.equal(f"{label}: Delta L = E_x log E_SFT e^{{r/beta}} - E_x E_D r / beta",
                             weighted(weights, change), weighted(weights, via_identity),
                             "thm31.identity: Delta L < 0 iff the threshold inequality holds"))
    # Large beta: beta * Delta L = (E_SFT r - E_D r) + Var_SFT(r)/(2 beta) + O(beta^-2).
    m_d = m_D
    mgf = 1 + m1 * t + m2 * t ** 2 / 2
    steps.append(d.series("large beta: Delta L in moment coordinates", sp.log(mgf) - t * m_d,
                          t * (m1 - m_d) + var_coefficient * (m2 - m1 ** 2) * t ** 2, t, 3,
                          "so Delta L < 0 iff E_D r - E_SFT r > Var_SFT(r)/(2 beta) + O(beta^-2)"))
    # Reward-maximal expert (supported where r = r*): Delta L = log E_SFT e^{-t g} <= 0.
    s3, g3 = prob_vector("s", 3), prob_vector("h", 2)
    gap = gap_off
    simplices += [s3, g3]
    r = (rstar, rstar, rstar - gap)
    delta_l = identity_rhs(s3, (g3[0], g3[1], 0), r, beta)
    steps.append(d.equal("reward-maximal expert, n=3 cross-check: Delta L = log(1 - s_3 (1 - e^{-g/beta}))",
                         delta_l, sp.log(1 - s3[2] * (1 - sp.exp(-gap / beta))),
                         "the any-n form at n = 3, |A| = 2"))
    # Worked example: p_SFT = (0.6, 0.3, 0.1), r = (1, 1, 0), expert = response 1.
    sft = (sp.Rational(3, 5), sp.Rational(3, 10), sp.Rational(1, 10))
    rew = (1, 1, 0)
    steps.append(d.approx("example: CE before RL", -sp.log(sft[0]), example["before"], "-log 0.6"))
    for b, key in ((sp.Rational(1, 5), "beta=0.2"), (sp.Integer(1), "beta=1"), (sp.Integer(5), "beta=5")):
        after = -sp.log(tilt(sft, rew, b)[0])
        steps.append(d.approx(f"example: CE after RL, {key}", after, example[key],
                              "-log p_RL(1), p_RL = p_SFT e^{r/beta}/Z"))
    return d.verify("threshold.kl", steps, simplices=list(dict.fromkeys(map(tuple, simplices))),
                    ranges={m1: (-1, 1), m2: (0, 2), m_d: (-1, 1)})
