"""The two claims beyond the paper's statements in docs/theory.md §3-§4: thm41.repaired [corrected]
and thm31.robust [extension].

- ``thm41.repaired``: the unregularized reading of Theorem 4.1. In the paper's KL direction,
  KL(p ‖ p_RL) with p_RL on the argmax set is infinite off that set (vacuous band for a unique
  argmax) and can be positive at no cost in J under ties (false). In the other direction it holds
  for any n: J(p_RL) − J(p) ≥ δ(1 − e^{−KL(p_RL ‖ p)}), so a per-prompt band KL ≥ a gives
  C₂ = δ_min (1 − e^{−a}).
- ``thm31.robust``: for p_SFT only TV-close to p_D, exact regularized RL raises L by at least
  C1 + E_x log(1 − (e^{Δr/β} − 1) TV_x) (when the log's argument is positive).

Each check takes the claimed statement as a parameter (the true one by default).
"""

from __future__ import annotations

from typing import Callable

import sympy as sp

from theory import derivation as d
from theory import generic as g
from theory import sums
from theory.objectives import expectation, kl, sft_loss
from theory.rl_then_sft import range_tv_steps
from theory.symbols import beta, delta, prob_vector, real_vector, rmin, rstar

R = sp.Rational
eps = sp.Symbol("varepsilon", positive=True)
a_band = sp.Symbol("a", positive=True)
_u = sp.Symbol("u", nonnegative=True)


def repaired_bound(gap, kl_value):
    """thm41.repaired: J(p_RL) − J(p) ≥ δ (1 − e^{−KL(p_RL ‖ p)})."""
    return gap * (1 - sp.exp(-kl_value))


def check_repaired(bound: Callable = repaired_bound, stated_kl: str = "0.130812") -> d.Result:
    i = sp.Dummy("i", integer=True, positive=True)
    pp, e = sp.IndexedBase("p", positive=True), sp.IndexedBase("e", nonnegative=True)
    facts = (sums.sums_to_one(pp, g.n),)
    kw = dict(facts=facts, sizes=(g.n,), probs=(pp,))
    kl_true = -sp.log(pp[1])          # KL(point mass at response 1 || p) = log(1/p_1)
    j_p = pp[1] * rstar + sp.Sum(pp[i] * (rstar - delta - e[i]), (i, 2, g.n))   # split at the unique argmax
    remainder = sp.Sum(pp[i] * e[i], (i, 2, g.n))
    p2 = (R(3, 4), R(1, 4), 0)
    rl2 = (R(1, 2), R(1, 2), 0)
    a1 = sp.Symbol("alpha", positive=True)   # mass that p puts off a unique argmax, in (0, 1)
    steps = [
        # The paper's direction.
        d.limit("paper's direction, unique argmax: KL(p || p_RL) -> oo as p_RL -> the point mass",
                1 / kl((1 - a1, a1), (1 - eps, eps)), 0, eps, 0,
                "p_RL = (1 - eps, eps) -> e_1 while p keeps mass alpha > 0 off A: the band a > 0 is met "
                "only by p off A, where KL is infinite (vacuous)"),
        d.equal("paper's direction, ties: J is unchanged", expectation(p2, (rstar, rstar, rstar - delta)),
                expectation(rl2, (rstar, rstar, rstar - delta)), "p moves inside A = {1, 2}"),
        d.approx("paper's direction, ties: yet KL(p || p_RL) = 0.130812 > 0", kl(p2, rl2), stated_kl,
                 "a finite, positive KL inside the band a = 0.1 <= KL <= A = 0.2 (false)"),
        # The other direction, any n.
        d.equal("other direction: KL(p_RL || p) = -log p(a*)", sp.log(1 / pp[1]), kl_true,
                "p_RL is the point mass on the unique argmax a* = 1"),
        d.sum_equal("any n: J(p_RL) - J(p) - claimed bound = sum_{i != a*} p_i e_i",
                    rstar - j_p - bound(delta, kl_true), remainder,
                    "r* - r_i = delta + e_i off a*; e^{-KL} = p(a*); sum p = 1 (split at a*)", **kw),
        d.sum_nonnegative("any n: the remainder is >= 0", remainder, "p > 0, e_i >= 0", **kw),
        d.nonnegative("1 - e^{-u} is increasing", sp.diff(1 - sp.exp(-_u), _u),
                      "so KL_x >= a gives 1 - e^{-KL_x} >= 1 - e^{-a}"),
        d.equal("the constant: C2 = delta_min (1 - e^{-a}) is the bound at KL = a", bound(delta, a_band),
                delta * (1 - sp.exp(-a_band)), "E_x delta(x)(1 - e^{-KL_x}) >= delta_min (1 - e^{-a}) > 0"),
    ]
    return d.verify("thm41.repaired", steps, ranges={a1: (0.05, 0.95)})


def robust_bound(c1_value, spread_over_beta, tv):
    """thm31.robust, one prompt: C1 + log(1 − (e^{Δr/β} − 1) TV)."""
    return c1_value + sp.log(1 - (sp.exp(spread_over_beta) - 1) * tv)


def check_robust(bound: Callable = robust_bound, range_constant: Callable = lambda hi, lo: hi - lo) -> d.Result:
    """``bound(C1, Delta r/beta, TV)`` is the claimed bound; ``range_constant(M, m)`` the claimed constant
    of |E_SFT f - E_D f| <= (M - m) TV for m <= f = e^{r/beta} <= M (proved termwise, any n)."""
    S, D, Rv = g.per_prompt(g.sft), g.per_prompt(g.expert), g.per_prompt(g.rew)
    kw = dict(facts=g.FACTS, sizes=g.SIZES, probs=g.PROBS)
    z_s = sums.vsum(lambda i: g.sft[g.x, i] * sp.exp(g.rew[g.x, i] / beta), g.n)
    z_d = sums.vsum(lambda i: g.expert[g.x, i] * sp.exp(g.rew[g.x, i] / beta), g.n)
    p_rl = sums.Vec(lambda i: g.sft[g.x, i] * sp.exp(g.rew[g.x, i] / beta) / z_s, g.n)
    change = sft_loss(D, p_rl) - sft_loss(D, S)
    c1 = sp.log(z_d) - expectation(D, Rv) / beta
    c = sp.Symbol("c", real=True)
    rmax = sp.Symbol("r_max", real=True)
    # n = 3 instance for the sampled end-to-end check
    s3, d3, r3 = prob_vector("s", 3), prob_vector("d", 3), real_vector("r", 3)
    spread3 = sp.Max(*r3) - sp.Min(*r3)
    tv3 = sum(sp.Abs(a - b) for a, b in zip(s3, d3)) / 2
    z3s = sum(si * sp.exp(ri / beta) for si, ri in zip(s3, r3))
    z3d = sum(di * sp.exp(ri / beta) for di, ri in zip(d3, r3))
    change3 = sp.log(z3s) - expectation(d3, r3) / beta
    c13 = sp.log(z3d) - expectation(d3, r3) / beta
    arg3 = 1 - (sp.exp(spread3 / beta) - 1) * tv3
    steps = [
        d.sum_equal("any n, any prompts: Delta L - C1 = E_x log(E_SFT e^{r/beta} / E_D e^{r/beta})",
                    g.E_x(change - c1), g.E_x(sp.log(z_s) - sp.log(z_d)), "thm31.identity minus thm31.c1", **kw),
        *range_tv_steps(g.expert, range_constant, "f = e^{r/beta} (m = e^{r_min/beta}, M = e^{r_max/beta})",
                        "d", "s"),
        d.equal("the constant: (e^{r_max/beta} - e^{r_min/beta}) / e^{r_min/beta} = e^{Delta r/beta} - 1",
                (sp.exp(rmax / beta) - sp.exp(rmin / beta)) / sp.exp(rmin / beta),
                sp.exp((rmax - rmin) / beta) - 1, "divide by Z_D >= e^{r_min/beta}"),
        d.equal("the claimed bound is what the chain gives: C1 + log(1 - (e^{Delta r/beta} - 1) TV)",
                bound(c, (rmax - rmin) / beta, sp.Symbol("TV", positive=True)),
                c + sp.log(1 - (sp.exp(rmax / beta) - sp.exp(rmin / beta)) / sp.exp(rmin / beta)
                           * sp.Symbol("TV", positive=True)),
                "log(Z_S/Z_D) >= log(1 - (M - m) TV / Z_D) with M - m = e^{r_max/beta} - e^{r_min/beta}, "
                "Z_D >= e^{r_min/beta} (pins the constant)"),
        d.equal("the claimed bound at TV = 0 is C1", bound(c, sp.Symbol("w", positive=True), 0), c,
                "p_SFT = p_D recovers thm31.c1"),
        d.at_least("n = 3: Delta L >= claimed bound where its log is defined (sampled)",
                   sp.Piecewise((change3, arg3 > 0), (0, True)),
                   sp.Piecewise((bound(c13, spread3 / beta, tv3), arg3 > 0), (0, True)),
                   "the chain above, end to end, at random instances"),
    ]
    return d.verify("thm31.robust", steps, simplices=[s3, d3],
                    ranges={beta: (0.5, 4.0), rmax: (0.0, 1.0), rmin: (-1.0, 0.0), sp.Symbol("TV", positive=True): (0.0, 0.01)})
