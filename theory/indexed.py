"""Identities for a symbolic number of responses n: sums over one generic index, normalized by rules.

docs/theory.md §8: a claim that is a sum over responses is proved for **symbolic n** as an identity
in one generic index ``i`` (sympy ``IndexedBase`` entries ``p[i]``, ``KroneckerDelta(i, j)``), then
reduced by a small sum normalizer instead of ``simplify`` on ``Sum`` objects. The rules are:

- linearity: ``Σ_i (a + b) = Σ_i a + Σ_i b``; factors free of ``i`` move out of the sum;
- delta contraction: ``Σ_i f(i) δ_{ij} = f(j)`` (j a free index in 1..n);
- normalization: ``Σ_i w[i] = 1`` for every probability vector ``w`` declared as one;
- named sums: ``Σ_i w[i] e^{c r[i]} = Z`` when the caller names that sum (a partition function);
- a constant: ``Σ_i c = n c``.

After the rules, what remains is ``expand``-ed; a normalized difference equal to 0 is a proof for
every n (and every value of the free index j). Each identity is also cross-checked numerically: for
n = 2 and 4 (by default) the sums are expanded (``doit``) and evaluated at random Dirichlet/uniform points for every
j, so a wrong rule cannot pass silently.
"""

from __future__ import annotations

import time
from typing import Mapping, Sequence

import numpy as np
import sympy as sp

from theory.derivation import StepResult

n = sp.Symbol("n", integer=True, positive=True)
i, j = sp.symbols("i j", integer=True, positive=True)


def total(body, index=i):
    """Σ_{index=1}^{n} body."""
    return sp.Sum(body, (index, 1, n))


def _contract_deltas(term, index):
    """Σ_i term with a KroneckerDelta(i, k) factor -> term with i := k (None if no delta)."""
    for f in sp.Mul.make_args(term):
        if isinstance(f, sp.KroneckerDelta) and index in f.free_symbols:
            other = f.args[0] if f.args[1] == index else f.args[1]
            if index in sp.sympify(other).free_symbols:
                continue
            rest = sp.Mul(*[g for g in sp.Mul.make_args(term) if g is not f])
            return rest.xreplace({index: other})
    return None


def _sum_term(term, index, probs: Sequence[sp.IndexedBase], named: Mapping) -> sp.Expr:
    """Σ_index of one product term, by the rules of the module docstring."""
    contracted = _contract_deltas(term, index)
    if contracted is not None:
        return contracted
    inside, outside = [], []
    for f in sp.Mul.make_args(term):
        (inside if index in f.free_symbols else outside).append(f)
    body = sp.Mul(*inside)
    coeff = sp.Mul(*outside)
    if body == 1:
        return coeff * n
    for w in probs:
        if body == w[index]:
            return coeff
    for pattern, value in named.items():
        if sp.expand(body - pattern.xreplace({i: index})) == 0:
            return coeff * value
    return coeff * sp.Sum(body, (index, 1, n))


def _canonical(expr):
    """Rename the index of every remaining top-level sum to ``i`` (bound variables: same sum, same form)."""
    reps = {}
    for s in expr.atoms(sp.Sum):
        (index, lo, hi), = s.limits
        if index != i and i not in s.function.free_symbols:
            reps[s] = sp.Sum(s.function.xreplace({index: i}), (i, lo, hi))
    return expr.xreplace(reps) if reps else expr


def normalize(expr, probs: Sequence[sp.IndexedBase] = (), named: Mapping | None = None, rounds: int = 4):
    """Apply the rules to every ``Sum`` in ``expr`` (innermost first), then expand."""
    named = dict(named or {})
    expr = sp.expand(sp.sympify(expr))
    for _ in range(rounds):
        sums = [s for s in expr.atoms(sp.Sum)]
        if not sums:
            break
        replacements = {}
        for s in sums:
            (index, lo, hi), = s.limits
            if (lo, hi) != (1, n):
                continue
            body = sp.expand(s.function)
            replacements[s] = sp.Add(*[_sum_term(t, index, probs, named) for t in sp.Add.make_args(body)])
        new = _canonical(sp.expand(expr.xreplace(replacements)))
        if new == expr:
            break
        expr = new
    return expr


def _numeric(lhs, rhs, probs, named, sizes, rng, points: int = 3) -> float:
    """max relative |lhs − rhs| over n in ``sizes``, all j, ``points`` random draws."""
    worst = 0.0
    for size in sizes:
        # the sums expanded once per size (they do not depend on the random point)
        expr_pair = [sp.sympify(e).xreplace({n: size}).doit() for e in (lhs, rhs)]
        for _ in range(points):
            values = {}
            for w in probs:
                draw = rng.dirichlet(np.full(size, 2.0))
                values.update({w[k + 1]: float(draw[k]) for k in range(size)})
            syms = {}
            for e in set().union(*[x.atoms(sp.Indexed) for x in expr_pair]):
                if e not in values:
                    syms[e] = float(rng.uniform(-1.5, 1.5))
            for sym in set().union(*[x.free_symbols for x in expr_pair]):
                if isinstance(sym, sp.Symbol) and sym not in (j,) and sym not in syms:
                    syms[sym] = float(rng.uniform(0.3, 2.0)) if sym.is_positive else float(rng.uniform(-1.5, 1.5))
            values_all = {**values, **syms}
            for jj in range(1, size + 1):
                a, b = (sp.N(e.xreplace({j: jj}).xreplace(values_all)) for e in expr_pair)
                a, b = complex(a), complex(b)
                worst = max(worst, abs(a - b) / (1.0 + abs(a) + abs(b)))
    return worst


def identity(name: str, lhs, rhs, why: str, probs: Sequence[sp.IndexedBase] = (),
             named: Mapping | None = None, numeric_subs: Mapping | None = None,
             sizes: Sequence[int] = (2, 4), seed: int = 0) -> StepResult:
    """A ``StepResult``: ``lhs = rhs`` for every n, by the normalizer; cross-checked at n in ``sizes``.

    ``named`` maps a summand pattern in ``i`` (e.g. ``ref[i] exp(r[i]/b)``) to the symbol standing for
    its sum (``Z``); ``numeric_subs`` maps such symbols to their defining sums (in ``i``) for the
    numeric cross-check.
    """
    start = time.perf_counter()
    try:
        rng = np.random.default_rng(seed)
        subs = {k: total(v) for k, v in (numeric_subs or {}).items()}
        err = _numeric(sp.sympify(lhs).xreplace(subs), sp.sympify(rhs).xreplace(subs), probs, named, sizes, rng)
        if not err <= 1e-9:
            ok, reason = False, f"lhs and rhs differ at n in {tuple(sizes)} (relative {err:.2e})"
        else:
            residual = normalize(sp.sympify(lhs) - sp.sympify(rhs), probs, named)
            ok = residual == 0
            reason = (f"normalizes to 0 for symbolic n; agrees at n in {tuple(sizes)} (relative {err:.1e})" if ok
                      else f"normalized lhs - rhs is {sp.sstr(residual)[:120]}, not 0")
    except Exception as e:  # noqa: BLE001 - a failing step, not a crash
        ok, reason = False, f"{type(e).__name__}: {e}"
    return StepResult(name, "equal", ok, reason, time.perf_counter() - start)
