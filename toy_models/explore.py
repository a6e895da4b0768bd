"""Counterexample search for one claim: random draws, gradient refinement, then shrinking.

    search(claim_id, seed, budget) -> ExploreResult

1. Random search: ``budget`` random cases (``margins.MARGINS[claim].sample``), margins vmapped and
   jitted in chunks.
2. Gradient refinement: the ``REFINE`` lowest-margin cases are decoded from unconstrained
   parameters (logits of every probability vector, log β; symmetric matrices projected to
   eigenvalues ≥ ``EIG_FLOOR`` for landscape cases) and their margin is minimized with optax Adam.
3. Shrinking (tabular cases): the smallest readable instance that still violates: one prompt if
   one suffices, then two responses if a pair suffices, then probabilities, rewards and β rounded
   to one decimal (two if one decimal loses the violation).

A violation is a margin < 0; margins are tolerance-scaled (see ``margins``), so a violation of a
true claim would be a real one, not round-off. The count of cases tried is reported either way.
"""

from __future__ import annotations

import dataclasses
import functools
import itertools
import sys
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np
import optax

from toy_models.instance import Instance
from toy_models.margins import MARGINS

# Small arrays evaluated a few times: compile time dominates, so compile with less optimization.
jit = functools.partial(jax.jit, compiler_options={"xla_backend_optimization_level": 0})
CHUNK = 512
REFINE = 16
REFINE_STEPS = 100
EIG_FLOOR = 0.05
SHRINK_CANDIDATES = 4


@dataclasses.dataclass(frozen=True)
class ExploreResult:
    claim: str
    found: bool
    tried: int
    best_margin: float
    counterexample: dict | None  # the shrunk instance, JSON-ready
    counterexample_margin: float | None


def _log(p):
    return jnp.log(jnp.maximum(p, 1e-30))


def _encode(case):
    if isinstance(case, Instance):
        return {"q": _log(case.q), "expert": _log(case.expert), "reward": case.reward,
                "reference": _log(case.reference), "sft_policy": _log(case.sft_policy),
                "log_beta": jnp.log(case.beta)}
    return case


def _psd(mat):
    sym = 0.5 * (mat + mat.T)
    lam, vec = jnp.linalg.eigh(sym)
    return (vec * jnp.maximum(lam, EIG_FLOOR)) @ vec.T


def _decode(raw):
    if isinstance(raw, dict):
        sm = lambda z: jax.nn.softmax(z, axis=-1)
        return Instance(q=sm(raw["q"]), expert=sm(raw["expert"]), reward=raw["reward"],
                        reference=sm(raw["reference"]), sft_policy=sm(raw["sft_policy"]),
                        beta=jnp.exp(raw["log_beta"]))
    quad = dataclasses.replace(raw.quad, A=_psd(raw.quad.A), B=_psd(raw.quad.B))
    pos = lambda v: jnp.abs(v) + 1e-6
    return dataclasses.replace(raw, quad=quad, t=pos(raw.t), eta=pos(raw.eta), weight=pos(raw.weight))


def _refine(margin_fn: Callable, cases):
    """Adam on the margin of each case (vmapped), from its unconstrained encoding."""
    loss = lambda raw: margin_fn(_decode(raw))
    opt = optax.adam(0.05)

    def one(raw):
        def step(carry, _):
            prm, state = carry
            g = jax.grad(loss)(prm)
            g = jax.tree.map(lambda a: jnp.where(jnp.isfinite(a), a, 0.0), g)
            upd, state = opt.update(g, state, prm)
            return (optax.apply_updates(prm, upd), state), None

        (raw, _), _ = jax.lax.scan(step, (raw, opt.init(raw)), length=REFINE_STEPS)
        return raw

    refined = jit(jax.vmap(one))(jax.vmap(_encode)(cases))
    decoded = jax.vmap(_decode)(refined)
    return decoded, jit(jax.vmap(margin_fn))(decoded)


def _take(batch, i):
    return jax.tree.map(lambda a: a[i], batch)


def instance_to_json(inst: Instance) -> dict:
    as_list = lambda a: np.asarray(a).tolist()
    return {"prompt_weights": as_list(inst.q), "expert": as_list(inst.expert),
            "reward": as_list(inst.reward), "reference": as_list(inst.reference),
            "sft_policy": as_list(inst.sft_policy), "beta": float(inst.beta)}


def _round_probs(p: np.ndarray, decimals: int) -> np.ndarray:
    """Round each row to ``decimals`` and put the rounding error on its largest entry."""
    r = np.round(p, decimals)
    r = np.maximum(r, 0.0)
    idx = np.argmax(r, axis=-1)
    rows = np.arange(r.shape[0]) if r.ndim == 2 else None
    if r.ndim == 1:
        r[idx] += 1.0 - r.sum()
    else:
        r[rows, idx] += 1.0 - r.sum(-1)
    return np.round(r, decimals + 2)


def _round_sig(x: float, digits: int) -> float:
    return float(f"{x:.{digits}g}")


def _digits(inst: Instance) -> int:
    """How many decimals the instance's numbers need in all (its readability score), and its size."""
    total = inst.expert.size
    for value in np.concatenate([np.ravel(np.asarray(v)) for v in dataclasses.asdict(inst).values()]):
        for d in range(7):
            if abs(round(float(value), d) - float(value)) < 1e-12:
                total += d
                break
        else:
            total += 7
    return total


def shrink(margin_fn: Callable, inst: Instance) -> Instance:
    """The smallest, roundest instance found from ``inst`` whose margin stays < 0."""
    margin_jit = jit(margin_fn)
    violates = lambda c: bool(margin_jit(c) < 0)
    arr = lambda c: {k: np.asarray(v, np.float64) for k, v in dataclasses.asdict(c).items()}
    build = lambda d: Instance(**{k: jnp.asarray(v) for k, v in d.items()})
    cur = arr(inst)
    # one prompt
    for x in range(cur["q"].shape[0]):
        cand = {k: (v[x:x + 1] if v.ndim == 2 else v) for k, v in cur.items()}
        cand["q"] = np.ones(1)
        if violates(build(cand)):
            cur = cand
            break
    # two responses
    num_y = cur["expert"].shape[1]
    if num_y > 2:
        for pair in itertools.combinations(range(num_y), 2):
            cand = dict(cur)
            for key in ("expert", "reference", "sft_policy"):
                sub = cur[key][:, list(pair)]
                cand[key] = sub / sub.sum(-1, keepdims=True)
            cand["reward"] = cur["reward"][:, list(pair)]
            if violates(build(cand)):
                cur = cand
                break
    # plainer fields: uniform reference, SFT policy = expert, rewards affinely mapped onto [0, 1]
    num_y = cur["expert"].shape[1]
    r_lo, r_hi = cur["reward"].min(-1, keepdims=True), cur["reward"].max(-1, keepdims=True)
    simpler = {"reference": np.full_like(cur["reference"], 1.0 / num_y),
               "sft_policy": cur["expert"],
               "reward": (cur["reward"] - r_lo) / np.where(r_hi > r_lo, r_hi - r_lo, 1.0)}
    for key, value in simpler.items():
        cand = dict(cur, **{key: value})
        if violates(build(cand)):
            cur = cand
    # round numbers
    for decimals in (1, 2, 3):
        cand = dict(cur)
        for key in ("expert", "reference", "sft_policy"):
            cand[key] = _round_probs(cur[key], decimals)
        cand["q"] = _round_probs(cur["q"], decimals)
        if np.any(cand["q"] <= 0) or np.any((cand["reference"] == 0) & (cand["expert"] > 0)):
            continue
        cand["reward"] = np.round(cur["reward"], decimals)
        cand["beta"] = np.asarray(max(_round_sig(float(cur["beta"]), decimals), 10.0**-decimals))
        if violates(build(cand)):
            cur = cand
            break
    return build(cur)


def search(claim: str, seed: int = 0, budget: int = 4096, progress: Callable[[str], None] | None = None,
           refine: bool = True) -> ExploreResult:
    """Search for a case with margin < 0 for ``claim`` (a key of ``margins.MARGINS``).

    ``refine=False`` skips the gradient refinement when the random search already found a
    violation (the shrinking still runs); ``coupling verify`` uses it to save its compilation.
    """
    spec = MARGINS[claim]
    margin_batch = jit(jax.vmap(spec.margin))
    rng = np.random.default_rng(seed)
    best_cases, best_margins, tried = None, None, 0
    while tried < budget:
        n = min(CHUNK, budget - tried)
        cases = spec.sample(rng, CHUNK)  # a fixed chunk shape: one compilation
        m = np.asarray(margin_batch(cases))[:n]
        m = np.where(np.isnan(m), np.inf, m)
        tried += n
        order = np.argsort(m)[:REFINE]
        chunk_best = _take(cases, order)
        if best_cases is None:
            best_cases, best_margins = chunk_best, m[order]
        else:
            both = jax.tree.map(lambda a, b: jnp.concatenate([a, b]), best_cases, chunk_best)
            bm = np.concatenate([best_margins, m[order]])
            keep = np.argsort(bm)[:REFINE]
            best_cases, best_margins = _take(both, keep), bm[keep]
        if progress:
            progress(f"{claim}: random search {tried}/{budget}, lowest margin {best_margins[0]:.3g}")
    all_cases, all_m = best_cases, best_margins
    if refine or best_margins[0] >= 0:
        if progress:
            progress(f"{claim}: gradient refinement of the {len(best_margins)} lowest-margin cases")
        refined, refined_m = _refine(spec.margin, best_cases)
        refined_m = np.where(np.isnan(np.asarray(refined_m)), np.inf, np.asarray(refined_m))
        tried += len(refined_m)
        all_m = np.concatenate([best_margins, refined_m])
        all_cases = jax.tree.map(lambda a, b: jnp.concatenate([a, b]), best_cases, refined)
    i = int(np.argmin(all_m))
    best = float(all_m[i])
    if best >= 0:
        return ExploreResult(claim, False, tried, best, None, None)
    if spec.tabular:
        if progress:
            progress(f"{claim}: shrinking the counterexample")
        # shrink the few most violating cases (random and refined) and keep the plainest result
        candidates = [int(j) for j in np.argsort(all_m)[:SHRINK_CANDIDATES] if all_m[j] < 0]
        margin_jit = jit(spec.margin)
        shrunk = [shrink(spec.margin, _take(all_cases, j)) for j in candidates]
        scored = [(_digits(c), float(margin_jit(c)), c) for c in shrunk]
        _, margin, case = min(scored, key=lambda t: (t[0], t[1]))
        return ExploreResult(claim, True, tried, best, instance_to_json(case), margin)
    case = _take(all_cases, i)
    as_json = jax.tree.map(lambda a: np.asarray(a).tolist(), dataclasses.asdict(case))
    return ExploreResult(claim, True, tried, best, as_json, float(jit(spec.margin)(case)))


def stderr_progress(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)
