"""A tiny derivation engine: named steps, each checked exactly and cross-checked numerically.

A derivation is a sequence of ``Step``s (lhs, rhs, justification). Each kind of step is checked
as follows (the numeric part first, so that a false statement is rejected before any slow
simplification), and the result says which step failed and why:

- ``equal``: ``lhs - rhs`` is reduced to 0 exactly (``expand``, then ``cancel``, then
  ``simplify``, after splitting logarithms of positive quantities and applying the
  sum-to-one constraint of every probability vector), *and* lhs and rhs agree at random generic
  points (float64, seeded).
- ``series``: ``lhs = rhs + O(var**order)`` at ``var -> 0``: the Taylor coefficients of
  ``lhs - rhs`` below ``order`` are exactly 0, and numerically ``|lhs - rhs| / var**order`` stays
  bounded along ``var = 0.04, 0.02, 0.01, 0.005`` at every random point.
- ``limit``: ``lhs - rhs -> 0`` as ``var -> point`` by sympy's ``limit``, and numerically
  ``|lhs - rhs|`` shrinks along ``var = 8, 16, 32`` (point = oo).
- ``at_least``: an inequality sympy cannot decide in closed form (the PL bounds; Jensen and
  Pinsker are now proved), stated symbolically and checked numerically: ``lhs >= rhs`` at many
  random points.
- ``nonnegative``: sympy's assumptions prove ``lhs >= 0`` (a sum of products of non-negative
  symbols), cross-checked at random points.
- ``close``: two closed-form constants (no free symbols) agree to 30 digits when evaluated with
  50-digit arithmetic; used where ``simplify`` is slow on nested exponentials of numbers.
- ``approx``: an exact (or 30-digit) value rounds to a number printed in docs/theory.md; the
  tolerance is half a unit in the last printed digit (``"0.7376"`` -> 5e-5, ``"1.11e-4"`` ->
  5e-7).

Random points: every probability vector (given in ``simplices``, all its symbols positive) is
drawn from Dirichlet(2, ..., 2); other symbols from a range set by their assumptions (positive:
[0.25, 2], non-negative: [0, 2], real: [-2, 2]) unless ``ranges`` overrides it.
"""

from __future__ import annotations

import dataclasses
import time
from decimal import Decimal
from typing import Sequence

import numpy as np
import sympy as sp

KINDS = ("equal", "series", "limit", "at_least", "nonnegative", "approx", "close", "sum_equal", "sum_nonnegative")
# Kinds whose exact part is a proof for every size (theory.sums); the others prove fixed instances,
# and ``at_least`` proves nothing (it is sampled).
ANY_SIZE_KINDS = ("sum_equal", "sum_nonnegative")
SUM_SIZES = (3,)   # the size at which a sum step is cross-checked numerically (n = 2..4 instances are separate steps)
EQUAL_POINTS = 24
INEQUALITY_POINTS = 4000


@dataclasses.dataclass(frozen=True)
class Step:
    """One named step of a derivation: ``lhs`` (relation) ``rhs``, because ``why``."""

    name: str
    lhs: object
    rhs: object
    why: str
    kind: str = "equal"
    var: sp.Symbol | None = None
    point: object = 0
    order: int = 0
    facts: tuple = ()       # sum steps: the known sums (theory.sums.Fact) the proof may use
    sizes: tuple = ()       # sum steps: the size symbols (n, prompts m, G, ...)
    probs: tuple = ()       # sum steps: the IndexedBases that are probability vectors
    sample: bool = True     # sum steps: False when random entries cannot meet the step's hypotheses
    at: tuple = ()          # sum steps: the sizes to cross-check at ({symbol: value} each); () = n = 3


def sum_equal(name, lhs, rhs, why, *, facts=(), sizes=(), probs=(), sample=True, at=()) -> Step:
    """``lhs = rhs`` for every value of the size symbols: proved by ``theory.sums``, and cross-checked
    numerically with random entries at n = 3 (the other size symbols at 2), or at each assignment
    of ``at`` (``sample=False``: when a fact is a hypothesis that random entries do not meet; the
    caller then adds a fixed-size instance as cross-check)."""
    return Step(name, lhs, rhs, why, kind="sum_equal", facts=tuple(facts), sizes=tuple(sizes), probs=tuple(probs),
                sample=sample, at=tuple(at))


def sum_nonnegative(name, expr, why, *, facts=(), sizes=(), probs=(), sample=True) -> Step:
    """``expr >= 0`` for every size: after ``theory.sums.reduce`` every term is a non-negative
    factor times a sum of non-negative summands; cross-checked at n = 3."""
    return Step(name, expr, sp.Integer(0), why, kind="sum_nonnegative", facts=tuple(facts),
                sizes=tuple(sizes), probs=tuple(probs), sample=sample)


def equal(name, lhs, rhs, why) -> Step:
    return Step(name, lhs, rhs, why)


def series(name, lhs, rhs, var, order, why) -> Step:
    """``lhs = rhs + O(var**order)`` as ``var -> 0``."""
    return Step(name, lhs, rhs, why, kind="series", var=var, order=order)


def limit(name, lhs, rhs, var, point, why) -> Step:
    """``lhs - rhs -> 0`` as ``var -> point`` (point may be ``sympy.oo``)."""
    return Step(name, lhs, rhs, why, kind="limit", var=var, point=point)


def at_least(name, lhs, rhs, why) -> Step:
    """``lhs >= rhs``, checked numerically at many random points."""
    return Step(name, lhs, rhs, why, kind="at_least")


def nonnegative(name, expr, why) -> Step:
    """``expr >= 0``, proved by sympy's assumptions and cross-checked numerically."""
    return Step(name, expr, sp.Integer(0), why, kind="nonnegative")


def close(name, lhs, rhs, why) -> Step:
    """Two constants agree to 30 digits (50-digit evaluation)."""
    return Step(name, lhs, rhs, why, kind="close")


def approx(name, expr, stated: str, why) -> Step:
    """``expr`` rounds to ``stated`` (a decimal string as printed in docs/theory.md)."""
    return Step(name, expr, stated, why, kind="approx")


@dataclasses.dataclass(frozen=True)
class StepResult:
    name: str
    kind: str
    ok: bool
    reason: str
    seconds: float
    sampled: bool = False   # an inequality checked only at random points (no proof), see ``verify``


@dataclasses.dataclass(frozen=True)
class Result:
    title: str
    steps: tuple[StepResult, ...]

    @property
    def ok(self) -> bool:
        return bool(self.steps) and all(s.ok for s in self.steps)

    @property
    def failed(self) -> StepResult | None:
        return next((s for s in self.steps if not s.ok), None)

    def summary(self) -> str:
        if not self.steps:
            return f"{self.title}: no steps"
        bad = [s for s in self.steps if not s.ok]
        if not bad:
            kinds = sorted({s.kind for s in self.steps})
            return f"{len(self.steps)} steps verified ({', '.join(kinds)})"
        first = bad[0]
        return (f"{len(bad)}/{len(self.steps)} steps failed; first: '{first.name}' "
                f"({first.kind}): {first.reason}")


# ----------------------------------------------------------------------------------------------
# Exact checks


def _entries(x) -> list:
    if isinstance(x, sp.MatrixBase):
        return list(x)
    if isinstance(x, (list, tuple)):
        return [e for item in x for e in _entries(item)]
    return [sp.sympify(x)]


def _is_zero(expr, constraint: dict) -> bool:
    """Exact zero test: cheap normal forms first, ``simplify`` last.

    Each normal form is tried on the expression with logarithms split and as given, with and
    then without the sum-to-one constraints (most identities need them; a few simplify faster
    without).
    """
    expr = sp.sympify(expr)
    if expr == 0:
        return True
    variants = []
    for e in (sp.expand_log(expr, deep=True), expr):
        for c in (constraint, {}):
            v = e.xreplace(c) if c else e
            if v not in variants:
                variants.append(v)
    for reduce in (sp.expand, lambda z: sp.cancel(sp.together(z)), sp.simplify):
        for e in variants:
            try:
                if reduce(e) == 0:
                    return True
            except (TypeError, ValueError, NotImplementedError, sp.PolynomialError):
                continue
    return False


def _first_nonzero_taylor(expr, var, order: int, constraint: dict) -> int | None:
    """The first power k < order whose Taylor coefficient at var = 0 is not exactly 0, else None.

    Coefficients are k-th derivatives at 0 (faster than ``sympy.series`` for the analytic
    expressions used here); if a derivative is not finite at 0, fall back to ``sympy.series``.
    """
    current = expr
    for k in range(order):
        coefficient = current.subs(var, 0)
        if coefficient.has(sp.nan, sp.zoo, sp.oo, -sp.oo):
            trunc = sp.series(expr, var, 0, order).removeO()
            return None if _is_zero(trunc, constraint) else k
        if not _is_zero(coefficient, constraint):
            return k
        current = sp.diff(current, var)
    return None


def _exact(step: Step, constraint: dict) -> tuple[bool, str]:
    if step.kind == "equal":
        lhs, rhs = _entries(step.lhs), _entries(step.rhs)
        if len(lhs) != len(rhs):
            return False, f"shapes differ ({len(lhs)} vs {len(rhs)} entries)"
        for k, (a, b) in enumerate(zip(lhs, rhs)):
            if not _is_zero(a - b, constraint):
                where = f" (entry {k})" if len(lhs) > 1 else ""
                return False, f"lhs - rhs does not simplify to 0{where}"
        return True, "simplifies to 0"
    if step.kind == "series":
        for k, (a, b) in enumerate(zip(_entries(step.lhs), _entries(step.rhs))):
            power = _first_nonzero_taylor(sp.sympify(a - b), step.var, step.order, constraint)
            if power is not None:
                return False, (f"the {step.var}^{power} coefficient of lhs - rhs is not 0"
                               + (f" (entry {k})" if k else ""))
        return True, f"lhs - rhs = O({step.var}^{step.order})"
    if step.kind == "limit":
        d = sp.sympify(step.lhs - step.rhs)
        lim = sp.limit(d.xreplace(constraint) if constraint else d, step.var, step.point)
        if not _is_zero(lim, constraint):
            return False, f"limit of lhs - rhs is {lim}, not 0"
        return True, f"limit as {step.var} -> {step.point} is 0"
    if step.kind == "nonnegative":
        expr = sp.expand(sp.sympify(step.lhs))
        if expr.is_nonnegative is not True:
            return False, "sympy cannot show it is >= 0"
        return True, "non-negative by assumptions"
    if step.kind == "approx":
        value = sp.N(sp.sympify(step.lhs), 30)
        stated = Decimal(step.rhs)
        tol = Decimal(5) * Decimal(10) ** (stated.as_tuple().exponent - 1)
        err = abs(Decimal(str(value)) - stated)
        if err > tol:
            return False, f"value {sp.N(value, 8)} does not round to {step.rhs} (tolerance {tol})"
        return True, f"{sp.N(value, 8)} rounds to {step.rhs}"
    if step.kind == "at_least":
        return True, "stated symbolically"
    if step.kind == "close":
        diff = sp.N(sp.sympify(step.lhs) - sp.sympify(step.rhs), 50)
        if not diff.is_number or abs(diff) > sp.Float("1e-30"):
            return False, f"lhs - rhs = {sp.N(diff, 5)} at 50 digits"
        return True, "agree to 30 digits"
    if step.kind == "sum_equal":
        from theory import sums
        if not sums.is_zero(sp.sympify(step.lhs) - sp.sympify(step.rhs), step.facts):
            return False, "lhs - rhs does not reduce to 0 for symbolic size"
        return True, "reduces to 0 for every size"
    if step.kind == "sum_nonnegative":
        from theory import sums
        if not sums.nonnegative(step.lhs, step.facts):
            return False, "not shown >= 0 for symbolic size"
        return True, ">= 0 for every size (sum of non-negative terms)"
    raise ValueError(f"unknown step kind {step.kind!r}; expected one of {KINDS}")


def _numeric_sizes(step: Step, rng: np.random.Generator) -> tuple[bool, str]:
    """Cross-check a sum step at a concrete size: the first size symbol (n) at 3, the others
    (prompts, ...) at 2; one random point. (The exact proof is for every size; this only catches a
    wrong statement fast and guards the normalizer.)"""
    from theory import sums
    if not step.sample:
        return True, "no random cross-check (hypotheses); see the fixed-size instance"
    if step.at:
        points = step.at
        labels = [", ".join(f"{sym} = {v}" for sym, v in p.items()) for p in points]
    else:
        points = [{sym: (size if k == 0 else 2) for k, sym in enumerate(step.sizes)} for size in SUM_SIZES]
        labels = [f"size {size}" for size in SUM_SIZES]
    for sizes, where in zip(points, labels):
        lhs, rhs = sums.evaluate_at([step.lhs, step.rhs], sizes, step.probs, rng)
        if not (np.isfinite(lhs) and np.isfinite(rhs)):
            return False, f"not finite at {where}"
        if step.kind == "sum_equal" and abs(lhs - rhs) > 1e-9 * (1.0 + abs(lhs) + abs(rhs)):
            return False, f"lhs and rhs differ at {where}: {lhs:.6g} vs {rhs:.6g}"
        if step.kind == "sum_nonnegative" and lhs < -1e-12:
            return False, f"negative at {where}: {lhs:.6g}"
    if step.at:
        return True, "cross-checked at " + "; ".join(labels)
    return True, f"cross-checked at n = {', '.join(map(str, SUM_SIZES))}"


# ----------------------------------------------------------------------------------------------
# Numeric cross-checks


def _sample(symbols: Sequence[sp.Symbol], simplices, ranges: dict, size: int,
            rng: np.random.Generator) -> dict:
    values = {}
    for group in simplices:
        draw = rng.dirichlet(np.full(len(group), 2.0), size=size)
        for k, sym in enumerate(group):
            values[sym] = draw[:, k]
    for sym in sorted(symbols, key=str):
        if sym in values:
            continue
        if sym in ranges:
            lo, hi = ranges[sym]
        elif sym.is_positive:
            lo, hi = 0.25, 2.0
        elif sym.is_nonnegative:
            lo, hi = 0.0, 2.0
        else:
            lo, hi = -2.0, 2.0
        values[sym] = rng.uniform(lo, hi, size=size)
    return values


def _evaluate(exprs: list, values: dict, size: int) -> np.ndarray:
    syms = sorted(set().union(*[sp.sympify(e).free_symbols for e in exprs]), key=str)
    fn = sp.lambdify(syms, exprs, modules="numpy", docstring_limit=0)
    with np.errstate(all="ignore"):
        out = fn(*[values[s] for s in syms])
    return np.stack([np.broadcast_to(np.asarray(o, dtype=float), (size,)) for o in out])


def _numeric(step: Step, values: dict, size: int) -> tuple[bool, str]:
    if step.kind in ("approx", "close"):
        return True, "exact evaluation"
    if step.kind in ANY_SIZE_KINDS:
        return _numeric_sizes(step, np.random.default_rng(sum(map(ord, step.name))))
    if step.kind in ("equal", "at_least", "nonnegative"):
        lhs_entries, rhs_entries = _entries(step.lhs), _entries(step.rhs)
        both = _evaluate(lhs_entries + rhs_entries, values, size)
        lhs, rhs = both[: len(lhs_entries)], both[len(lhs_entries):]
        scale = 1.0 + np.abs(lhs) + np.abs(rhs)
        if not (np.all(np.isfinite(lhs)) and np.all(np.isfinite(rhs))):
            return False, "not finite at some random point"
        if step.kind == "equal":
            err = np.max(np.abs(lhs - rhs) / scale)
            if err > 1e-9:
                return False, f"lhs and rhs differ at random points (relative {err:.2e})"
            return True, f"agrees at {size} points (relative {err:.1e})"
        slack = np.min((lhs - rhs) / scale)
        if slack < -1e-12:
            k = int(np.argmin(np.min((lhs - rhs) / scale, axis=0)))
            point = {str(s): round(float(v[k]), 4) for s, v in values.items()
                     if s in set().union(*[sp.sympify(e).free_symbols
                                           for e in _entries(step.lhs) + _entries(step.rhs)])}
            return False, (f"violated at a random point {point} (slack {slack:.3e}): "
                           f"lhs = {float(np.min(lhs[:, k])):.6g}, rhs = {float(np.max(rhs[:, k])):.6g}")
        return True, f"holds at {size} points (min slack {slack:.1e})"
    if step.kind == "series":
        # g(h) = (lhs - rhs)/h^order must stay bounded as h -> 0: |g(0.005)| <= 1.5 max |g(h)|
        # over h = 0.04, 0.02, 0.01. A remainder of lower order doubles g at each halving.
        hs = (0.04, 0.02, 0.01, 0.005)
        ratios = []
        for h in hs:
            vals = dict(values)
            vals[step.var] = np.full(size, h)
            diff = _evaluate([a - b for a, b in zip(_entries(step.lhs), _entries(step.rhs))], vals, size)
            ratios.append(np.where(np.abs(diff) <= 1e-13, 0.0, np.abs(diff)) / h ** step.order)
        bound = 1.5 * np.max(np.stack(ratios[:-1]), axis=0) + 1e-300
        if not (np.all(np.isfinite(ratios[-1])) and np.all(ratios[-1] <= bound)):
            worst = float(np.max(ratios[-1] / bound))
            return False, (f"(lhs - rhs)/{step.var}^{step.order} grows as {step.var} -> 0 "
                           f"(x{worst * 1.5:.2f} at the last halving)")
        return True, f"remainder is O({step.var}^{step.order}) at {size} points"
    if step.kind == "limit":
        if step.point != sp.oo:
            grid = [step.point + h for h in (0.1, 0.01, 0.001)]
        else:
            grid = [8.0, 16.0, 32.0]
        diffs = []
        for v in grid:
            vals = dict(values)
            vals[step.var] = np.full(size, v)
            diffs.append(np.abs(_evaluate([step.lhs - step.rhs], vals, size)))
        if not np.all(diffs[-1] <= 0.5 * diffs[0] + 1e-12):
            return False, "lhs - rhs does not shrink along the limit at some random point"
        return True, f"|lhs - rhs| shrinks to {float(np.max(diffs[-1])):.1e} at {step.var}={grid[-1]}"
    raise ValueError(f"unknown step kind {step.kind!r}")


def verify(title: str, steps: Sequence[Step], *, simplices: Sequence[Sequence[sp.Symbol]] = (),
           ranges: dict | None = None, seed: int = 0) -> Result:
    """Check every step exactly and numerically; return which steps hold and why not."""
    ranges = dict(ranges or {})
    simplices = list(dict.fromkeys(tuple(g) for g in simplices))
    members = [sym for group in simplices for sym in group]
    if len(members) != len(set(members)):
        raise ValueError(f"{title}: a symbol belongs to two probability vectors")
    constraint = {group[-1]: 1 - sum(group[:-1]) for group in simplices}
    symbols = set()
    for step in steps:
        if step.kind in ("approx", "close", *ANY_SIZE_KINDS):
            continue
        for e in _entries(step.lhs) + _entries(step.rhs):
            symbols |= sp.sympify(e).free_symbols
    rng = np.random.default_rng(seed)
    eq_values = _sample(symbols, simplices, ranges, EQUAL_POINTS, rng)
    ineq_values = _sample(symbols, simplices, ranges, INEQUALITY_POINTS, rng)
    results = []
    for step in steps:
        start = time.perf_counter()
        try:
            # Numbers first: a false statement is rejected in milliseconds, and the (slow) exact
            # simplification only runs on statements that already agree at the random points.
            values, size = ((ineq_values, INEQUALITY_POINTS) if step.kind in ("at_least", "nonnegative")
                            else (eq_values, EQUAL_POINTS))
            ok, numeric = _numeric(step, values, size)
            reason = f"numeric cross-check: {numeric}"
            if ok:
                ok, exact = _exact(step, constraint)
                reason = f"{exact}; {numeric}"
        except Exception as e:  # a sympy failure inside one step fails that step, not the run
            ok, reason = False, f"{type(e).__name__}: {e}"
        sampled = step.kind == "at_least" and any(sp.sympify(e).free_symbols
                                                   for e in _entries(step.lhs) + _entries(step.rhs))
        results.append(StepResult(step.name, step.kind, ok, reason, time.perf_counter() - start, sampled))
    return Result(title, tuple(results))
