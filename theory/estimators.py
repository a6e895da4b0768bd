"""Exact facts about the policy-gradient and KL estimators the trainers use (docs/theory.md §6).

Claims: ``grpo.baseline``, ``grpo.onpolicy``, ``kl.k3``.

Simplifications:
- expectations over a group of G i.i.d. samples are computed exactly by enumerating all n^G
  outcomes (n = 2, 3 responses, G = 2, 3), in logits of a tabular softmax policy, whose score
  is grad log p(y) = e_y - p;
- the std-normalised GRPO advantage is shown biased on one exact instance (its expectation is
  not parallel to grad J), not characterised in general;
- the clipped objective's gradient at ratio 1 is checked exactly on the unclipped branch and by
  central finite differences of the full min/clip expression.

Each check takes the claimed statement as a parameter (the true one by default).
"""

from __future__ import annotations

import itertools
from typing import Callable

import sympy as sp

from theory import derivation as d
from theory import generic as g
from theory import sums
from theory.objectives import kl
from theory.softmax import fisher_matrix
from theory.symbols import (adv, eps, logp, logp_old, prob_vector, real_vector, ref_logp, seq_adv, seq_weight,
                            token_logp, token_old, xk)


def _group_expectation(p, advantage: Callable) -> sp.Matrix:
    """E over y_1..y_G ~ p of (1/G) sum_i A_i (e_{y_i} - p), A = advantage(sampled indices)."""
    n = len(p)
    total = sp.zeros(n, 1)
    g_size = advantage.group_size
    for ys in itertools.product(range(n), repeat=g_size):
        prob = sp.Mul(*[p[y] for y in ys])
        adv = advantage(ys)
        score = sum((a * (sp.Matrix([int(k == y) for k in range(n)]) - sp.Matrix(p))
                     for a, y in zip(adv, ys)), sp.zeros(n, 1))
        total += prob * score / g_size
    return total


def _baseline(r, g_size: int, kind: str) -> Callable:
    def advantage(ys):
        rs = [r[y] for y in ys]
        if kind == "mean":            # group mean, the sample itself included
            mean = sum(rs) / g_size
            return [ri - mean for ri in rs]
        return [ri - (sum(rs) - ri) / (g_size - 1) for ri in rs]   # leave-one-out (RLOO)
    advantage.group_size = g_size
    return advantage


def _baseline_any_g(factor: Callable) -> list:
    """Any n, any G. With s_i = grad log p(y_i) (score) and independent samples:
    E[r_i s_i] = grad J, E[r_j s_i] = E[r_j] E[s_i] = J * S for j != i, and S = E[s] = 0 for any n."""
    G_, i = sp.Symbol("G", integer=True, positive=True), sp.Dummy("i", integer=True, positive=True)
    pp, w = sp.IndexedBase("p", positive=True), sp.Symbol("w", integer=True, positive=True)
    score_mean = sums.vsum(lambda y: pp[y] * (sp.KroneckerDelta(y, w) - pp[w]), g.n)
    gJ, J_, S_ = sp.Symbol("grad_J", real=True), sp.Symbol("J", real=True), sp.Symbol("S", real=True)
    # E[(r_i - mean_j r_j) s_i]: the self term r_i s_i/G and G - 1 cross terms r_j s_i/G.
    mean_baseline = sp.Sum(gJ - (gJ + (G_ - 1) * J_ * S_) / G_, (i, 1, G_)) / G_
    loo_baseline = sp.Sum(gJ - (G_ - 1) * J_ * S_ / (G_ - 1), (i, 1, G_)) / G_
    return [
        d.sum_equal("any n: the score has mean 0, S = sum_y p_y (delta_yw - p_w) = 0", score_mean, 0,
                    "grad log softmax_y = e_y - p; sum p = 1",
                    facts=(sums.sums_to_one(pp, g.n),), sizes=(g.n, w), probs=(pp,)),
        d.sum_equal("any G: group-mean baseline gives factor(G) grad J", mean_baseline.subs(S_, 0),
                    factor(G_) * gJ, "the sample's own reward sits in its baseline with weight 1/G", sizes=(G_,)),
        d.sum_equal("any G: leave-one-out baseline is unbiased", loo_baseline.subs(S_, 0), gJ,
                    "the baseline is independent of y_i", sizes=(G_,)),
    ]


def check_baseline(factor: Callable = lambda g: 1 - sp.Integer(1) / g) -> d.Result:
    """E[sum_i (r_i - mean r) grad log p(y_i)]/G = factor(G) grad J; RLOO is unbiased; std biases."""
    steps, simplices = _baseline_any_g(factor), []
    for n, g_size in ((2, 2), (3, 2), (2, 3), (3, 3)):
        p, r = prob_vector("p", n), real_vector("r", n)
        simplices.append(p)
        grad_j = fisher_matrix(p) * sp.Matrix(r)
        steps.append(d.equal(f"n={n}, G={g_size}: group-mean baseline",
                             _group_expectation(p, _baseline(r, g_size, "mean")), factor(sp.Integer(g_size)) * grad_j,
                             "E[r_j s_i] = E r E s = 0 for j != i, so only the 1/G self-term survives"))
        steps.append(d.equal(f"n={n}, G={g_size}: leave-one-out baseline",
                             _group_expectation(p, _baseline(r, g_size, "rloo")), grad_j,
                             "the baseline is independent of y_i"))
    # Dividing by the group std: one exact instance where the expectation is not parallel to grad J.
    p = (sp.Rational(1, 2), sp.Rational(1, 3), sp.Rational(1, 6))
    r = (sp.Integer(1), sp.Rational(1, 2), sp.Integer(0))

    def std_advantage(ys):
        rs = [r[y] for y in ys]
        mean = sum(rs) / sp.Integer(2)
        sd = sp.sqrt(sum((x - mean) ** 2 for x in rs) / sp.Integer(2))
        return [sp.Integer(0) if sd.is_zero else (x - mean) / sd for x in rs]
    std_advantage.group_size = 2
    expected = _group_expectation(p, std_advantage)
    grad_j = fisher_matrix(p) * sp.Matrix(r)
    minor = expected[0] * grad_j[1] - expected[1] * grad_j[0]
    steps.append(d.at_least("std-normalised advantage (G=2) is not parallel to grad J", sp.Abs(minor),
                            sp.Rational(1, 1000), "a further bias beyond 1 - 1/G: stated, not hidden"))
    return d.verify("grpo.baseline", steps, simplices=simplices)


def check_onpolicy(gradient: Callable = lambda adv, clip: adv) -> d.Result:
    """At ratio 1 the clipped GRPO gradient is A grad log p (``gradient(A, eps)`` is the claim)."""
    old = logp_old
    ratio = sp.exp(logp - old)
    clipped = sp.Max(sp.Min(ratio, 1 + eps), 1 - eps)
    objective = sp.Min(ratio * adv, clipped * adv)
    steps = [
        d.equal("ratio = 1 on-policy", ratio.subs(logp, old), 1, "one inner iteration: logp_old = logp"),
        d.equal("unclipped branch: d(rho A)/d logp at rho = 1", sp.diff(ratio * adv, logp).subs(logp, old),
                gradient(adv, eps), "d rho / d logp = rho"),
        d.equal("clipped branch: d(clip(rho, 1 - eps, 1 + eps) A)/d logp at rho = 1",
                sp.diff(clipped * adv, logp).subs(logp, old), gradient(adv, eps),
                "1 - eps < 1 < 1 + eps: the clip is the identity near rho = 1 (differentiated through Max/Min)"),
        d.equal("clipped branch: same value as the unclipped one at rho = 1",
                (clipped * adv).subs(logp, old), (ratio * adv).subs(logp, old), "clip(1) = 1"),
        d.equal("full min(rho A, clip(rho) A) objective: slope at rho = 1",
                sp.diff(objective, logp).subs(logp, old), gradient(adv, eps),
                "two branches with equal value and equal slope A: their min has slope A"),
    ]
    # Aggregation: sum_i w_i sum_t rho_it A_i has gradient w_i A_i in logp_it at ratio 1, the gradient
    # of the weighted log-likelihood sum_i w_i A_i sum_t logp_it (w_i: 1/(G |y_i|) or 1/sum|y|, ...).
    lp, lo, ws, advs = token_logp, token_old, seq_weight, seq_adv
    token_of = (0, 0, 1)                 # sequence 1 has two tokens, sequence 2 one
    surrogate = sum(ws[token_of[k]] * advs[token_of[k]] * sp.exp(lp[k] - lo[k]) for k in range(3))
    likelihood = sum(ws[token_of[k]] * advs[token_of[k]] * lp[k] for k in range(3))
    steps.append(d.equal("aggregated: grad of the GRPO surrogate = grad of the weighted log-likelihood",
                         sp.Matrix([sp.diff(surrogate, x) for x in lp]).subs(dict(zip(lp, lo))),
                         sp.Matrix([sp.diff(likelihood, x) * gradient(1, eps) for x in lp]).subs(dict(zip(lp, lo))),
                         "no KL term; any aggregation weights w_i"))
    return d.verify("grpo.onpolicy", steps, ranges={eps: (0.05, 0.5)})


def k3_estimator(logp, ref):
    """kl.k3: e^{ref - logp} - (ref - logp) - 1."""
    return sp.exp(ref - logp) - (ref - logp) - 1


def check_k3(k3: Callable = k3_estimator) -> d.Result:
    """k3 >= 0 pointwise and E_p[k3] = KL(p || ref); k1 = logp - ref is unbiased but can be < 0."""
    P, PI = g.per_prompt(g.pol), g.per_prompt(g.ref)
    kw = dict(facts=g.FACTS, sizes=g.SIZES, probs=g.PROBS)
    steps, simplices = [
        d.sum_equal("any n, any prompts: E_p[k3] = KL(p || ref)",
                    g.E_x(sums.vsum(lambda i: P(i) * k3(sp.log(P(i)), sp.log(PI(i))), g.n)), g.E_x(kl(P, PI)),
                    "E_p[ref/p] = sum ref = 1", **kw),
        d.sum_equal("any n, any prompts: E_p[k1] = KL(p || ref)",
                    g.E_x(sums.vsum(lambda i: P(i) * (sp.log(P(i)) - sp.log(PI(i))), g.n)), g.E_x(kl(P, PI)),
                    "the definition of KL", **kw),
    ], []
    for n in (2, 3, 4):
        p, ref = prob_vector("p", n), prob_vector("pi", n)
        simplices += [p, ref]
        steps.append(d.equal(f"n={n}: E_p[k3] = KL(p || ref)",
                             sum(pi * k3(sp.log(pi), sp.log(ri)) for pi, ri in zip(p, ref)), kl(p, ref),
                             "E_p[ref/p] = sum ref = 1"))
        steps.append(d.equal(f"n={n}: E_p[k1] = KL(p || ref)",
                             sum(pi * (sp.log(pi) - sp.log(ri)) for pi, ri in zip(p, ref)), kl(p, ref),
                             "the definition of KL"))
    ref, x = ref_logp, xk
    steps += [
        d.equal("k3 = h(u) with u = ref/p = e^{ref - logp}", k3(logp, ref), g.h(sp.exp(ref - logp)),
                "h(u) = u - 1 - log u"),
        *g.h_nonnegative("k3 >= 0 pointwise"),
        d.equal("e^x - x - 1 is stationary at x = 0", sp.diff(sp.exp(x) - x - 1, x).subs(x, 0), 0,
                "and (e^x)'' = e^x > 0, so x = 0 is its minimum, value 0"),
        d.nonnegative("k1 < 0 is possible: p = (3/4, 1/4), ref = (1/2, 1/2), y = 2: -k1 = log 2 >= 0",
                      -(sp.log(sp.Rational(1, 4)) - sp.log(sp.Rational(1, 2))), "k1 = log(1/2) < 0"),
    ]
    return d.verify("kl.k3", steps, simplices=simplices, ranges={logp: (-4, 0), ref: (-4, 0)})
