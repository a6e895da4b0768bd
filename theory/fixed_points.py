"""Where sampled RL converges, per prompt, with exact expectations (docs/theory.md §6 [grpo.fixedpoint]).

Claim: ``grpo.fixedpoint`` [extension].

The expected update of one prompt's logits (weights q(x) scale every term alike, so prompts
decouple) for an advantage with expected effect c·∇J (c = 1 for RLOO, 1 − 1/G for the group mean,
grpo.baseline; m(s) for std division, below) and a KL term of weight β:

- exact KL gradient (k2 as a loss, or k1 in the reward; kl.grad): U_j = c p_j (r_j − J) − β ∇_j KL(p‖ref);
- k3 as a loss (kl.grad): U_j = c p_j (r_j − J) − β (p_j − ref_j) = c p_j (r_j − J) − β ∇_j KL(ref‖p).

Proved for a **symbolic number of responses n** and symbolic G (``theory.sums``):

(a) RLOO + exact KL: U = 0 at the Gibbs tilt p* = ref e^{r/β}/Z (in log form: log p_i − log ref_i =
    r_i/β − log Z); (b) group mean: U = 0 at the tilt at β G/(G − 1); (c) k3: U = 0 at
    p_y = β ref_y/(β + J − r_y), a distribution iff J = E_p r, and the stationary point of the
    strictly concave J − β KL(ref‖p) on the simplex (Lagrange condition r_y + β ref_y/p_y = β + J);
(d) std division with binary reward b_i ∈ {0, 1}: if A_i depends on y_i only through r_i (with
    conditional means a1, a0 given r_i = 1, 0), E[A_i ∇_j log p(y_i)] = (a1 − a0) ∇_j s, s = Σ_i p_i b_i
    (symbolic n); the conditional-independence premise is checked by enumerating all n^G groups
    (n = 3, G = 2, 3; n = 2, G = 4) with the std-divided advantage (ddof 1 and 0, eps floor 1e-4),
    against m(s) ∇J with m(s) from the binomial sum. Hence β' = β/m(s) and (a)/(c) apply with β'.

The NumPy closed forms (``theory.closed_forms``) are cross-checked against these expressions at
numbers: each returned fixed point makes the sympy update vanish (|U| ≤ 1e-10).

Each check takes the claimed fixed points as parameters (the true ones by default).
"""

from __future__ import annotations

import itertools
from math import comb
from typing import Callable

import numpy as np
import sympy as sp

from theory import closed_forms as cf
from theory import derivation as d
from theory.kl_gradients import (any_n, expected_loss_gradient, i, j, k2, k3, p, ref, rw, score,
                                 total)
from theory.objectives import tilt
from theory.symbols import G, beta, prob_vector

k = sp.Symbol("k", integer=True, positive=True)
bprime = sp.Symbol("beta_prime", positive=True)   # the effective KL weight of a fixed point
logz = sp.Symbol("logZ", real=True)
cgain = sp.Symbol("c", positive=True)             # the expected policy-gradient factor of the advantage
bin_ = sp.IndexedBase("b", real=True)             # binary reward indicator b_i ∈ {0, 1}
a0, a1 = sp.symbols("a0 a1", real=True)


def _update(c, kl_gradient):
    """U_j = c p_j (r_j − J) − β ∇_j(KL)."""
    expected_pg = total(p[i] * rw[i] * score(i, j))     # E_p[r ∇log p] = ∇J (softmax.pg)
    return c * expected_pg - beta * kl_gradient


def tilt_log_ratio(b):
    """log p_i − log ref_i at the tilt with KL weight b."""
    return rw[i] / b - logz


def _at_tilt(expr, b):
    """Substitute log p_i = log ref_i + r_i/b − log Z everywhere (p is then the tilt at b)."""
    return sp.expand(sp.expand_log(expr, force=True)).xreplace({sp.log(p[i]): sp.log(ref[i]) + tilt_log_ratio(b)})


def check_fixedpoint(group_beta: Callable = lambda b, g: b * g / (g - 1),
                     k3_point: Callable = cf.k3_fixed_point,
                     multiplier: Callable = cf.std_division_multiplier) -> d.Result:
    """(a)–(d) of the module docstring; ``group_beta(beta, G)`` is the claimed effective KL weight of
    the group mean, ``k3_point(ref, r, beta)`` the claimed k3 fixed point (NumPy), ``multiplier(s, G,
    ddof, std_floor)`` the claimed m(s)."""
    probs = (p,)
    steps = []
    exact_kl = expected_loss_gradient(k2)          # = ∇KL(p‖ref) (kl.grad)
    # (a) RLOO (c = 1) at the tilt at beta.
    steps.append(any_n("(a) RLOO + exact KL gradient: U = 0 at the tilt p* = ref e^{r/beta}/Z (symbolic n)",
                       _at_tilt(_update(1, exact_kl), beta), 0,
                       "U_j = p_j (r_j - J) - beta p_j (r_j/beta - log Z - E_p[r/beta - log Z]) = 0",
                       probs=probs))
    # (b) group mean (c = 1 - 1/G) at the tilt at the claimed beta'.
    steps.append(any_n("(b) group mean: U = 0 at the tilt at the claimed beta' (symbolic n, G)",
                       _at_tilt(_update(1 - 1 / G, exact_kl), group_beta(beta, G)), 0,
                       "U_j = p_j (r_j - J)(1 - 1/G - beta/beta'), zero iff beta' = beta G/(G - 1)",
                       probs=probs))
    # (c) k3 as a loss (RLOO): ref_y = p_y (beta + J - r_y)/beta is the claimed form, solved for ref.
    jv = total(p[k] * rw[k], k)
    ref_of_p = {ref[i]: p[i] * (beta + jv - rw[i]) / beta}
    k3_grad = expected_loss_gradient(k3)
    steps.append(any_n("(c) k3 loss: U = 0 at p_y = beta ref_y/(beta + J - r_y) (symbolic n)",
                       sp.expand(_update(1, k3_grad)).xreplace(ref_of_p), 0,
                       "E grad k3 = p_j - ref_j (kl.grad); p_j (r_j - J) - beta p_j + p_j (beta + J - r_j) = 0",
                       probs=probs))
    steps.append(any_n("(c) that ref sums to 1 iff J = E_p r (symbolic n)",
                       total(p[i] * (beta + jv - rw[i]) / beta), 1,
                       "sum_i p_i (beta + J - r_i) = beta + J - E_p r", probs=probs))
    steps.append(any_n("(c) Lagrange: d/dp_y [E_p r - beta KL(ref||p)] = r_y + beta ref_y/p_y = beta + J",
                       (rw[j] + beta * ref[j] / p[j]).xreplace({ref[j]: p[j] * (beta + jv - rw[j]) / beta}),
                       beta + jv, "constant in y: stationary on the simplex; the Hessian -beta ref_y/p_y^2 "
                       "is negative definite, so it is the unique maximizer", probs=probs))
    # (d) std division: the conditional-independence identity for symbolic n ...
    grad_s = total(bin_[i] * p[i] * score(i, j))   # ∇_j Σ_i p_i b_i through the softmax Jacobian
    steps.append(any_n("(d) E[A_i grad log p(y_i)] = (a1 - a0) grad s when A_i depends on y_i via r_i only",
                       total(p[i] * (a0 + (a1 - a0) * bin_[i]) * score(i, j)), (a1 - a0) * grad_s,
                       "A = a0 + (a1 - a0) b exactly for b in {0, 1}; E[score] = 0 kills a0", probs=probs))
    steps.append(any_n("(d) ... and then beta' = beta/m: U = 0 at the tilt at beta/m (symbolic n)",
                       _at_tilt(_update(cgain, exact_kl), beta / cgain), 0,
                       "(b) with c = m(s*) evaluated at the fixed point", probs=probs))
    return d.verify("grpo.fixedpoint", steps + _std_enumeration(multiplier)
                    + _closed_form_steps(group_beta, k3_point, multiplier),
                    simplices=[prob_vector("e", 3), prob_vector("f", 2)])


# ------------------------------------------------------------------------ (d) by exact enumeration

STD_EPS = sp.Rational(1, 10 ** 4)


def std_advantages(rewards, ddof: int, eps=STD_EPS) -> list:
    """(r_i - mean)/(std + eps) with std over the group with ``ddof`` (exact sympy numbers)."""
    g = len(rewards)
    mean = sp.Rational(sum(rewards), g)
    sd = sp.sqrt(sum((x - mean) ** 2 for x in rewards) / sp.Integer(g - ddof))
    return [(x - mean) / (sd + eps) for x in rewards]


def multiplier_sympy(s, g: int, ddof: int, eps=STD_EPS):
    """m(s) by the binomial sum over the other G − 1 rewards (sympy)."""
    total = 0
    for kk in range(g):
        others = [1] * kk + [0] * (g - 1 - kk)
        a_win = std_advantages([1] + others, ddof, eps)[0]
        a_lose = std_advantages([0] + others, ddof, eps)[0]
        total += comb(g - 1, kk) * s ** kk * (1 - s) ** (g - 1 - kk) * (a_win - a_lose)
    return total


def _std_enumeration(multiplier: Callable) -> list:
    steps = []
    for n, g, ddof in ((3, 2, 1), (3, 3, 1), (2, 4, 1), (3, 3, 0)):
        pv = prob_vector("e", n) if n == 3 else prob_vector("f", 2)
        reward = [1, 1, 0][:n] if n == 3 else [1, 0]
        total = sp.zeros(n, 1)
        for ys in itertools.product(range(n), repeat=g):
            prob = sp.Mul(*[pv[y] for y in ys])
            adv = std_advantages([reward[y] for y in ys], ddof)
            for a, y in zip(adv, ys):
                total += prob * a * (sp.Matrix([int(t == y) for t in range(n)]) - sp.Matrix(pv)) / g
        s = sum(pv[t] for t in range(n) if reward[t] == 1)
        grad_j = sp.Matrix([pv[t] * (reward[t] - s) for t in range(n)])
        steps.append(d.equal(f"(d) enumeration n={n}, G={g}, ddof={ddof}, eps=1e-4: E update = m(s) grad J",
                             total, multiplier_sympy(s, g, ddof) * grad_j,
                             f"all {n}^{g} groups; m(s) is the binomial sum over the other G - 1 rewards"))
        # the NumPy multiplier at numbers
        for sv in (sp.Rational(1, 10), sp.Rational(1, 2), sp.Rational(17, 20)):
            got = float(np.asarray(multiplier(float(sv), g, ddof=ddof, std_floor=1e-4)))
            steps.append(d.at_least(f"closed_forms.std_division_multiplier(s={sv}, G={g}, ddof={ddof}) = m(s)",
                                    sp.Rational(1, 10 ** 10), sp.Abs(sp.Float(got, 20) - multiplier_sympy(sv, g, ddof)),
                                    "|NumPy - sympy| <= 1e-10"))
    return steps


# ------------------------------------------------------------------------ closed forms at numbers

_REF = (sp.Rational(1, 5), sp.Rational(3, 10), sp.Rational(1, 2))
_R = (sp.Integer(1), sp.Integer(0), sp.Rational(1, 2))


def _update_numbers(pv, rv, refv, b, c, kind: str):
    """U_j at numbers, explicit n: c p_j (r_j - J) - b grad KL (forward for k2, reverse for k3)."""
    jv = sum(x * y for x, y in zip(pv, rv))
    out = []
    for jj in range(len(pv)):
        pg = pv[jj] * (rv[jj] - jv)
        if kind == "k3":
            kl_grad = pv[jj] - refv[jj]
        else:
            ell = [sp.log(x) - sp.log(y) for x, y in zip(pv, refv)]
            kl_grad = pv[jj] * (ell[jj] - sum(x * e for x, e in zip(pv, ell)))
        out.append(c * pg - b * kl_grad)
    return out


def _max_abs(values):
    """max |x| over numeric sympy expressions, each evaluated to 30 digits first (the inputs are
    20-digit Floats; ``Max`` of unevaluated sqrt/log terms would re-``evalf`` them per comparison)."""
    return sp.Max(*[sp.Abs(sp.N(x, 30)) for x in values])


def _closed_form_steps(group_beta: Callable, k3_point: Callable, multiplier: Callable) -> list:
    steps = []
    ref_np, r_np = np.array([float(x) for x in _REF]), np.array([float(x) for x in _R])
    g = 4
    for b in (sp.Rational(1, 4), sp.Integer(1)):
        bf = float(b)
        cases = [
            ("gibbs_tilt (RLOO, k2)", cf.gibbs_tilt(ref_np, r_np, bf), 1, "k2"),
            ("group_mean_fixed_point (mean, k2)", cf.gibbs_tilt(ref_np, r_np, float(group_beta(bf, g))),
             1 - sp.Rational(1, g), "k2"),
            ("k3_fixed_point (RLOO, k3)", np.asarray(k3_point(ref_np, r_np, bf)), 1, "k3"),
            ("estimator_fixed_point(mean, k3)", cf.estimator_fixed_point(ref_np, r_np, bf, g, "mean", "k3"),
             1 - sp.Rational(1, g), "k3"),
        ]
        for name, pnum, c, kind in cases:
            pv = [sp.Float(x, 20) for x in pnum]
            u = _update_numbers(pv, _R, _REF, b, c, kind)
            steps.append(d.at_least(f"beta={b}, G={g}: {name} makes the sympy update vanish",
                                    sp.Rational(1, 10 ** 10), _max_abs(u), "|U| <= 1e-10"))
        # the exact tilt, sympy vs NumPy
        exact = tilt(_REF, _R, b)
        tilt_np = cf.gibbs_tilt(ref_np, r_np, bf)
        steps.append(d.at_least(f"beta={b}: gibbs_tilt = sympy tilt", sp.Rational(1, 10 ** 12),
                                sp.Max(*[sp.Abs(sp.Float(x, 20) - e) for x, e in zip(tilt_np, exact)]), "|diff| <= 1e-12"))
    # std division with a binary reward: the solver's s* is a root of the stationarity condition
    ref2 = (sp.Rational(3, 10), sp.Rational(3, 10), sp.Rational(2, 5))
    r2 = (1, 0, 0)
    for kind in ("k2", "k3"):
        for b in (sp.Rational(1, 2), sp.Integer(2)):
            pnum = cf.estimator_fixed_point(np.array([float(x) for x in ref2]), np.array(r2, float), float(b), g,
                                            "std", kind)
            s_star = sp.Float(float(pnum[0]), 20)
            m = multiplier_sympy(s_star, g, 1)
            pv = [sp.Float(x, 20) for x in pnum]
            u = _update_numbers(pv, r2, ref2, b, m, kind)
            steps.append(d.at_least(f"std division, {kind}, beta={b}, G={g}: estimator_fixed_point makes "
                                    "m(s*) grad J - beta grad KL vanish", sp.Rational(1, 10 ** 9),
                                    _max_abs(u), "|U| <= 1e-9 (sympy m at the NumPy s*)"))
    # the k3 fixed point is not the tilt (so (c) is not (a) in disguise)
    k3p, tp = cf.k3_fixed_point(ref_np, r_np, 0.25), cf.gibbs_tilt(ref_np, r_np, 0.25)
    steps.append(d.at_least("beta=1/4: k3 fixed point differs from the tilt by >= 0.01", sp.Float(float(np.max(np.abs(k3p - tp))), 20),
                            sp.Rational(1, 100), "different KL directions, different optima"))
    return steps
