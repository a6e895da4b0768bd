"""A small normalizer for finite sums with a symbolic number of terms (docs/theory.md §8).

Identities that are sums over responses, prompts or group members are proved here for a
*symbolic* size n: every quantity is an ``IndexedBase`` entry at a generic index (``p[i]``, or
``p[x, i]`` for a prompt x), a sum is ``sympy.Sum(summand, (i, 1, n))``, and a derivative of θ_j
by θ_i is ``KroneckerDelta(i, j)``. ``reduce`` applies, bottom-up, only rules that are valid for
every n ≥ 1:

- linearity: Σ (a + b) = Σ a + Σ b;
- factors free of the index move out: Σ c·a = c·Σ a, and Σ c = c·(hi − lo + 1);
- delta contraction: Σ_i f(i) δ_{ij} = f(j) (j in the range, which every caller guarantees);
- known sums (``Fact``): Σ_i p_i = 1 for a probability vector, Σ_i π_i e^{r_i/β} = Z, ...;
- logarithms of products of positive factors are split (``expand_log`` on positive symbols).

``is_zero(expr)`` reduces ``expr``, merges the sums that have the same range into one sum of their
summands (with canonical index names), and requires each merged summand, and what is left outside
the sums, to expand to 0. ``split(sum, k)`` splits a range at k (Σ_1^n = Σ_1^k + Σ_{k+1}^n).
No ``simplify`` is ever called on a ``Sum`` (slow and brittle).

The rules are sound (each maps an expression to an equal one), so ``is_zero`` returning True is a
proof; returning False only means "not shown", and the caller reports a failure.
"""

from __future__ import annotations

import dataclasses
from typing import Callable, Sequence

import sympy as sp

# Canonical index names by nesting height (an innermost sum binds _k0, the one around it _k1, ...).
_CANON = tuple(sp.Symbol(f"_k{h}", integer=True, positive=True) for h in range(8))


@dataclasses.dataclass(frozen=True)
class Fact:
    """A known sum: ``match(summand, index)`` returns its value, or None when it does not apply."""

    name: str
    match: Callable[[sp.Expr, sp.Symbol], sp.Expr | None]
    upper: object = None   # the fact holds for Σ_{i=1}^{upper} only (None: any range starting at 1)


def _last(e) -> sp.Expr | None:
    """The last index of an ``Indexed`` entry (the summed one, by convention)."""
    return e.indices[-1] if isinstance(e, sp.Indexed) else None


def sums_to_one(base: sp.IndexedBase, size) -> Fact:
    """Σ_{i=1}^{size} base[..., i] = 1: a probability vector (per prompt when base has two indices)."""
    def match(summand, index):
        if isinstance(summand, sp.Indexed) and summand.base == base and _last(summand) == index:
            return sp.Integer(1)
        return None
    return Fact(f"sum {base} = 1", match, size)


def known_sum(name: str, summand_of: Callable[[sp.Symbol], sp.Expr], value_of: Callable[[sp.Symbol], sp.Expr],
              size=None) -> Fact:
    """Σ_i summand_of(i) = value_of(i): e.g. Σ_i π_i e^{r_i/β} = Z (value free of i). Free
    indices in the summand (a prompt x) are matched as given: the caller uses the same symbol."""
    probe = sp.Symbol("_probe", integer=True, positive=True)
    pattern = sp.expand(summand_of(probe))

    def match(summand, index):
        if sp.expand(summand.xreplace({index: probe})) == pattern:
            return value_of(index)
        return None
    return Fact(name, match, size)


def _independent(term, index):
    """Split a product into (factor free of index, factor depending on it)."""
    free, dep = [], []
    for f in sp.Mul.make_args(term):
        (dep if f.has(index) else free).append(f)
    return sp.Mul(*free), sp.Mul(*dep)


def _contract(dep, index):
    """Σ_i f(i) δ_{i j} = f(j); returns None when dep has no delta in the index."""
    for f in sp.Mul.make_args(dep):
        if isinstance(f, sp.KroneckerDelta) and index in f.args:
            other = f.args[0] if f.args[1] == index else f.args[1]
            if other.has(index):
                continue
            rest = sp.Mul(*[g for g in sp.Mul.make_args(dep) if g is not f])
            return rest.xreplace({index: other})
    return None


def _expand(e):
    return _delta_canonical(sp.expand(sp.expand_log(e, deep=True)))


def _delta_canonical(e):
    """δ(a, b) f(a, b) = δ(a, b) f(a, a) (a the first name in sorted order): one canonical form per
    term, so that e^{θ_w} δ(w, y) and e^{θ_y} δ(w, y) compare equal."""
    if not e.has(sp.KroneckerDelta):
        return e
    out = []
    for term in sp.Add.make_args(e):
        factors = sp.Mul.make_args(term)
        deltas = [f for f in factors if isinstance(f, sp.KroneckerDelta)]
        if not deltas:
            out.append(term)
            continue
        rest = sp.Mul(*[f for f in factors if not isinstance(f, sp.KroneckerDelta)])
        for dl in deltas:
            a, b = sorted(dl.args, key=sp.default_sort_key)
            if isinstance(b, sp.Symbol):
                rest = rest.xreplace({b: a})
        out.append(rest * sp.Mul(*deltas))
    return sp.Add(*out)


def _height(e) -> int:
    """Nesting height of the sums inside e (0: none)."""
    if isinstance(e, sp.Sum):
        return 1 + _height(e.function)
    return max((_height(a) for a in e.args), default=0)


def _reduce_sum(summand, limits, facts) -> sp.Expr:
    index, lo, hi = limits
    total = sp.Integer(0)
    for term in sp.Add.make_args(_expand(summand)):
        free, dep = _independent(term, index)
        if dep == 1:
            total += free * (hi - lo + 1)
            continue
        contracted = _contract(dep, index)
        if contracted is not None:
            total += free * contracted
            continue
        value = None
        if lo == 1:
            for fact in facts:
                if fact.upper is not None and sp.expand(hi - fact.upper) != 0:
                    continue
                value = fact.match(dep, index)
                if value is not None:
                    break
        if value is not None:
            total += free * value
            continue
        h = _height(dep)
        canon = _CANON[h]
        total += free * sp.Sum(dep.xreplace({index: canon}), (canon, lo, hi))
    return total


def reduce(expr, facts: Sequence[Fact] = ()) -> sp.Expr:
    """Apply the rules bottom-up; the result equals expr for every size."""
    expr = sp.sympify(expr)
    if isinstance(expr, sp.Sum):
        inner = reduce(expr.function, facts)
        result = inner
        for limits in expr.limits:   # innermost limits first, as sympy stores them
            result = _reduce_sum(result, limits, facts)
        return result
    if not expr.args or isinstance(expr, (sp.Indexed, sp.IndexedBase, sp.KroneckerDelta)):
        return expr
    return _expand(expr.func(*[reduce(a, facts) for a in expr.args]))


def split(total: sp.Sum, k) -> sp.Expr:
    """Σ_{i=lo}^{hi} f = Σ_{i=lo}^{k} f + Σ_{i=k+1}^{hi} f (valid for lo - 1 <= k <= hi)."""
    (index, lo, hi), = total.limits
    return sp.Sum(total.function, (index, lo, k)) + sp.Sum(total.function, (index, k + 1, hi))


def _merged(expr):
    """(outside part, {range: merged summand}) of a reduced expression."""
    outside = sp.Integer(0)
    groups: dict = {}
    for term in sp.Add.make_args(sp.expand(expr)):
        factors = sp.Mul.make_args(term)
        sums = [f for f in factors if isinstance(f, sp.Sum)]
        if len(sums) != 1:
            outside += term
            continue
        s = sums[0]
        rest = sp.Mul(*[f for f in factors if f is not s])
        (index, lo, hi), = s.limits
        if rest.has(index):   # cannot move inside without capturing a symbol
            outside += term
            continue
        key = (index, lo, hi)
        groups[key] = groups.get(key, sp.Integer(0)) + rest * s.function
    # Adjacent ranges share terms: Σ_lo^k f + Σ_{k+1}^hi f = Σ_lo^hi f, term by term.
    changed = True
    while changed:
        changed = False
        for a in list(groups):
            for b in list(groups):
                if a == b or a[0] != b[0] or sp.expand(a[2] + 1 - b[1]) != 0:
                    continue
                ta, tb = sp.Add.make_args(sp.expand(groups[a])), sp.Add.make_args(sp.expand(groups[b]))
                common = [t for t in ta if t != 0 and t in set(tb)]
                if not common:
                    continue
                joined = sp.Add(*common)
                groups[a] = sp.expand(groups[a] - joined)
                groups[b] = sp.expand(groups[b] - joined)
                key = (a[0], a[1], b[2])
                groups[key] = groups.get(key, sp.Integer(0)) + joined
                changed = True
                break
            if changed:
                break
    return outside, groups


def is_zero(expr, facts: Sequence[Fact] = (), depth: int = 0) -> bool:
    """True if the rules reduce expr to 0 for every size (a proof); False: not shown."""
    if depth > 6:
        return False
    if depth == 0:
        expr = _entries_as_sums(sp.sympify(expr))
    reduced = reduce(expr, facts)
    outside, groups = _merged(reduced)
    # Joining ranges can create a full-range sum that a fact knows: rebuild and reduce once more.
    rebuilt = outside + sp.Add(*[sp.Sum(f, key) for key, f in groups.items() if f != 0])
    if rebuilt != reduced:
        outside, groups = _merged(reduce(rebuilt, facts))
    if _expand(outside) != 0 and not _rational_zero(outside):
        return False
    return all(_rational_zero(f) if not f.has(sp.Sum) else is_zero(f, facts, depth + 1)
               for f in groups.values())


def _rational_zero(e) -> bool:
    """A summand free of sums is 0 if it expands, or cancels as a rational function, to 0."""
    return _expand(e) == 0 or sp.cancel(sp.together(e)) == 0


def _entries_as_sums(expr):
    """p[..., k] at a concrete index k is written Σ_{i=k}^{k} p[..., i], so that it can join a
    neighbouring range (p_1 + Σ_2^n p_i = Σ_1^n p_i = 1)."""
    swaps = {}
    for a in expr.atoms(sp.Indexed):
        k = a.indices[-1]
        if k.is_Integer:
            i = _CANON[0]
            swaps[a] = sp.Sum(a.base[(*a.indices[:-1], i)], (i, k, k))
    return expr.xreplace(swaps) if swaps else expr


def equal(a, b, facts: Sequence[Fact] = ()) -> bool:
    return is_zero(sp.sympify(a) - sp.sympify(b), facts)


def instance(expr, n_symbol: sp.Symbol, n: int, values: dict | None = None) -> sp.Expr:
    """The expression at a concrete size n (``doit`` on every sum): the cross-check route."""
    return sp.sympify(expr).xreplace({n_symbol: n}).doit()


def nonnegative(expr, facts: Sequence[Fact] = ()) -> bool:
    """True if every term is a non-negative factor times a sum of non-negative summands (or is
    non-negative itself, by sympy's assumptions), either as given or after ``reduce``: a proof that
    expr >= 0."""
    return any(_termwise_nonnegative(e) for e in (sp.sympify(expr), reduce(expr, facts)))


def _termwise_nonnegative(expr) -> bool:
    for term in sp.Add.make_args(expr):
        if term.is_nonnegative:
            continue
        factors = sp.Mul.make_args(term)
        sums = [f for f in factors if isinstance(f, sp.Sum)]
        rest = sp.Mul(*[f for f in factors if not isinstance(f, sp.Sum)])
        if not sums or rest.is_nonnegative is not True:
            return False
        if not all(s.function.is_nonnegative or sp.expand(s.function).is_nonnegative for s in sums):
            return False
    return True


class Vec:
    """A vector of symbolic length n: entry i is ``fn(i)`` (``Vec.of(p, n)``: p[i]; with a prefix,
    p[x, i], one vector per prompt x). ``theory.objectives`` turns sums over a Vec into ``Sum``s."""

    def __init__(self, fn: Callable[[sp.Expr], sp.Expr], n):
        self.fn, self.n = fn, n

    @classmethod
    def of(cls, base: sp.IndexedBase, n, prefix: tuple = ()) -> "Vec":
        return cls(lambda i: base[(*prefix, i)], n)

    def __call__(self, i):
        return self.fn(i)

    def map(self, g: Callable[[sp.Expr], sp.Expr]) -> "Vec":
        return Vec(lambda i: g(self.fn(i)), self.n)

    def total(self, g: Callable[[sp.Expr], sp.Expr] = lambda e: e) -> sp.Sum:
        i = sp.Dummy("i", integer=True, positive=True)
        return sp.Sum(g(self.fn(i)), (i, 1, self.n))


def vsum(fn: Callable[[sp.Expr], sp.Expr], n) -> sp.Sum:
    """Σ_{i=1}^{n} fn(i) with a fresh index."""
    i = sp.Dummy("i", integer=True, positive=True)
    return sp.Sum(fn(i), (i, 1, n))


def _unroll(expr):
    """Write out every sum of concrete range term by term (``doit`` without its closed-form search,
    which is slow)."""
    if isinstance(expr, sp.Sum):
        body = expr.function
        for index, lo, hi in expr.limits:
            body = sp.Add(*[body.xreplace({index: k}) for k in range(int(lo), int(hi) + 1)])
        return _unroll(body)
    if not expr.args or isinstance(expr, (sp.Indexed, sp.IndexedBase)):
        return expr
    return expr.func(*[_unroll(a) for a in expr.args])


def evaluate_at(exprs: Sequence, sizes: dict, probs: Sequence[sp.IndexedBase], rng) -> list[float]:
    """The expressions at concrete sizes and one common random point: probability bases drawn from
    Dirichlet(2) along their last index, positive entries and scalars from [0.25, 2], others from
    [-2, 2]."""
    es = [_unroll(sp.sympify(e).xreplace(sizes)) for e in exprs]
    atoms = set().union(*[e.atoms(sp.Indexed) | e.free_symbols for e in es])
    values = {}
    groups: dict = {}
    for a in atoms:
        if isinstance(a, sp.Indexed) and a.base in probs:
            groups.setdefault((a.base, a.indices[:-1]), []).append(a)
    for key in sorted(groups, key=str):
        entries = sorted(groups[key], key=lambda a: int(a.indices[-1]))
        values.update(zip(entries, rng.dirichlet([2.0] * len(entries))))
    for a in sorted(atoms, key=str):
        if a in values or isinstance(a, sp.IndexedBase):
            continue
        values[a] = (rng.uniform(0.25, 2.0) if a.is_positive else
                     rng.uniform(0.0, 2.0) if a.is_nonnegative else rng.uniform(-2.0, 2.0))
    subs = {k: sp.Float(v) for k, v in values.items()}
    return [complex(sp.N(e.xreplace(subs))).real for e in es]
