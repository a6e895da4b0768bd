"""Generic-size symbols and shared lemmas for the any-n proofs (docs/theory.md §8).

Sizes are symbols: ``n`` responses, ``m`` prompts. Per-prompt vectors are ``IndexedBase`` entries
``s[x, i]`` (prompt x, response i); prompt weights are ``qw[x]``. ``E_x`` builds Σ_x q(x)·f(x).
``kl_nonnegative`` is the proof of KL ≥ 0 through h(u) = u − 1 − log u ≥ 0, reused by every
claim whose inequality is a KL (thm31.c1, thm41.gibbs, threshold.kl).
"""

from __future__ import annotations

import sympy as sp

from theory import derivation as d
from theory import sums
from theory.sums import Vec

n = sp.Symbol("n", integer=True, positive=True)        # responses
m = sp.Symbol("m", integer=True, positive=True)        # prompts
x = sp.Symbol("x", integer=True, positive=True)        # a prompt (the outer index)
y = sp.Symbol("y", integer=True, positive=True)        # one fixed response (a free index)
u = sp.Symbol("u", positive=True)

qw = sp.IndexedBase("q", positive=True)                # prompt weights
sft = sp.IndexedBase("s", positive=True)               # p_SFT(i | x)
expert = sp.IndexedBase("d", positive=True)            # p_D(i | x)
pol = sp.IndexedBase("p", positive=True)               # a policy p(i | x)
ref = sp.IndexedBase("pi", positive=True)              # pi_ref(i | x)
rew = sp.IndexedBase("r", real=True)                   # r(x, i)
vec = sp.IndexedBase("v", real=True)                   # a direction / test vector
gaps = sp.IndexedBase("g", nonnegative=True)           # reward gaps r* - r(x, i) >= 0
PROBS = (qw, sft, expert, pol, ref)
FACTS = tuple(sums.sums_to_one(b, m if b is qw else n) for b in PROBS)
SIZES = (n, m)

def opaque_nonnegative(name: str, fn):
    """fn as an opaque function known only to be >= 0 (proved separately by the caller's steps):
    a positive combination of its values is then >= 0 by sympy's assumptions. Numerically it is
    fn, so the cross-checks at concrete sizes evaluate the real thing."""
    def _eval_evalf(self, prec):
        return sp.sympify(fn(self.args[0])).evalf(prec)
    return type(name, (sp.Function,), {"is_nonnegative": True, "is_real": True, "_eval_evalf": _eval_evalf})


_NONNEG = opaque_nonnegative("hbar", lambda a: h(a))


def per_prompt(base: sp.IndexedBase) -> Vec:
    return Vec.of(base, n, (x,))


def E_x(f) -> sp.Sum:
    """E_x[f(x)] = Σ_x q(x) f(x) (f an expression in the prompt symbol x)."""
    return sp.Sum(qw[x] * f, (x, 1, m))


def h(arg):
    """h(u) = u − 1 − log u, >= 0 for u > 0 with equality only at u = 1."""
    return arg - 1 - sp.log(arg)


def h_nonnegative(label: str = "") -> list[d.Step]:
    """h(u) = u − 1 − log u ≥ 0: h(1) = 0, h′(1) = 0 and h″(u) = 1/u² ≥ 0, so h is convex and lies
    above its tangent at 1, which is the zero line."""
    pre = f"{label}: " if label else ""
    return [
        d.equal(f"{pre}h(1) = 0", h(u).subs(u, 1), 0, "h(u) = u - 1 - log u"),
        d.equal(f"{pre}h'(1) = 0", sp.diff(h(u), u).subs(u, 1), 0, "h'(u) = 1 - 1/u"),
        d.nonnegative(f"{pre}h''(u) = 1/u^2 >= 0", sp.diff(h(u), u, 2),
                      "h convex with a zero tangent at u = 1, hence h >= 0"),
    ]


def kl_nonnegative(p: Vec, q: Vec, label: str, facts=FACTS, outer: bool = True) -> list[d.Step]:
    """KL(p ‖ q) ≥ 0 for any n (and E_x of it for any prompts when ``outer``):
    KL = Σ p h(q/p) (Σ p = Σ q = 1), h ≥ 0, and a positive combination of non-negatives."""
    wrap = E_x if outer else (lambda f: f)
    kl_sum = sums.vsum(lambda i: p(i) * sp.log(p(i) / q(i)), n)
    via_h = sums.vsum(lambda i: p(i) * h(q(i) / p(i)), n)
    generic = sums.vsum(lambda i: p(i) * _NONNEG(q(i) / p(i)), n)
    return [
        d.sum_equal(f"{label}: KL = sum p h(q/p)", wrap(kl_sum), wrap(via_h),
                    "sum p (q/p - 1 - log(q/p)) = sum q - sum p + KL, and both sum to 1",
                    facts=facts, sizes=SIZES, probs=PROBS),
        *h_nonnegative(label),
        d.sum_nonnegative(f"{label}: a positive combination of h >= 0 is >= 0", wrap(generic),
                          "p > 0, q(x) > 0 and h >= 0 termwise", facts=facts, sizes=SIZES, probs=PROBS),
    ]
