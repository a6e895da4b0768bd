"""The objectives of docs/theory.md §1 as sympy expressions of one prompt's probability vectors.

A "vector" is a sequence of sympy expressions (probabilities, rewards). Prompt weights are applied
by the caller (``weighted``), so every function here is per prompt. Logarithms are written so
that, with positive symbols, ``expand_log`` splits them (see ``theory.symbols``).
"""

from __future__ import annotations

from typing import Sequence

import sympy as sp

from theory.sums import Vec

# Every function also accepts ``theory.sums.Vec`` vectors of symbolic length n (all arguments Vec),
# and then returns ``Sum`` expressions, for the any-n proofs of docs/theory.md §8.


def expectation(p: Sequence, f: Sequence):
    """E_p[f] = sum_y p_y f_y."""
    if isinstance(p, Vec):
        return _vsum(lambda i: p(i) * f(i), p.n)
    return sum(pi * fi for pi, fi in zip(p, f))


def variance(p: Sequence, f: Sequence):
    """Var_p[f] = E_p[(f - E_p f)^2]."""
    mean = expectation(p, f)
    if isinstance(p, Vec):
        return _vsum(lambda i: p(i) * (f(i) - mean) ** 2, p.n)
    return sum(pi * (fi - mean) ** 2 for pi, fi in zip(p, f))


def covariance(p: Sequence, f: Sequence, g: Sequence):
    mf, mg = expectation(p, f), expectation(p, g)
    return sum(pi * (fi - mf) * (gi - mg) for pi, fi, gi in zip(p, f, g))


def third_cumulant(p: Sequence, f: Sequence):
    mean = expectation(p, f)
    return sum(pi * (fi - mean) ** 3 for pi, fi in zip(p, f))


def kl(p: Sequence, p_ref: Sequence):
    """KL(p || p_ref) = sum_y p_y log(p_y / p_ref_y); terms with p_y = 0 are dropped."""
    if isinstance(p, Vec):
        return _vsum(lambda i: p(i) * sp.log(p(i) / p_ref(i)), p.n)
    return sum(pi * sp.log(pi / ri) for pi, ri in zip(p, p_ref) if pi != 0)


def sft_loss(expert: Sequence, p: Sequence):
    """L for one prompt: sum_y p_D(y)(-log p(y)); terms with p_D(y) = 0 are dropped."""
    if isinstance(expert, Vec):
        return _vsum(lambda i: -expert(i) * sp.log(p(i)), expert.n)
    return sum(-di * sp.log(pi) for di, pi in zip(expert, p) if di != 0)


def reward(p: Sequence, r: Sequence):
    """J for one prompt: E_p[r]."""
    return expectation(p, r)


def regularized_objective(p: Sequence, r: Sequence, p_ref: Sequence, beta):
    """J_beta for one prompt: E_p[r] - beta KL(p || p_ref)."""
    return expectation(p, r) - beta * kl(p, p_ref)


def partition(p_ref: Sequence, r: Sequence, beta):
    """Z_beta = E_{p_ref}[exp(r / beta)]."""
    if isinstance(p_ref, Vec):
        return _vsum(lambda i: p_ref(i) * sp.exp(r(i) / beta), p_ref.n)
    return sum(pi * sp.exp(ri / beta) for pi, ri in zip(p_ref, r))


def tilt(p_ref: Sequence, r: Sequence, beta) -> list:
    """The regularized optimum p*(y) = p_ref(y) exp(r(y)/beta) / Z_beta (docs/theory.md §1)."""
    z = partition(p_ref, r, beta)
    if isinstance(p_ref, Vec):
        return Vec(lambda i: p_ref(i) * sp.exp(r(i) / beta) / z, p_ref.n)
    return [pi * sp.exp(ri / beta) / z for pi, ri in zip(p_ref, r)]


def exp_tilt(p: Sequence, direction: Sequence) -> list:
    """softmax(log p + direction) = p exp(direction) / E_p[exp(direction)]."""
    z = sum(pi * sp.exp(di) for pi, di in zip(p, direction))
    return [pi * sp.exp(di) / z for pi, di in zip(p, direction)]


def _vsum(fn, n):
    i = sp.Dummy("i", integer=True, positive=True)
    return sp.Sum(fn(i), (i, 1, n))


def weighted(weights: Sequence, per_prompt: Sequence):
    """E_x[f(x)] = sum_x q(x) f(x)."""
    return sum(wx * fx for wx, fx in zip(weights, per_prompt))
