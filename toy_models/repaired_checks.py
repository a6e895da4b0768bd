"""Numeric column for thm31.robust [extension] and thm41.repaired [corrected] (docs/theory.md §3-§4).

Float64 NumPy on random tabular instances ; the quantities are
computed from their definitions (the exact regularized optimum as the tilt of p_SFT, the SFT loss as
a cross-entropy), not from the identities the symbolic column proves.
"""

from __future__ import annotations

import numpy as np

from theory.catalogue import CheckResult

SEED = 9
TOL = 1e-12


def _result(parts: list[tuple[bool, str]]) -> CheckResult:
    ok = all(p for p, _ in parts)
    detail = "; ".join(d for _, d in parts) if ok else "; ".join(f"FAIL {d}" for p, d in parts if not p)
    return CheckResult("pass" if ok else "fail", detail)


def _ce(expert, p):
    return -np.sum(expert * np.log(p), axis=-1)


def _simplex(rng, *shape):
    z = 2.0 * rng.standard_normal(shape)
    e = np.exp(z - z.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def robust_margins(q, expert, reward, beta, sft, tv_scale: float = 1.0):
    """Per instance: ΔL − bound where every log argument of the bound is positive (else nan), and
    whether it is. ``tv_scale`` scales the TV term of the bound (< 1 claims a stronger bound).

    Shapes: q [B, X], expert/reward/sft [B, X, Y], beta [B]."""
    b = beta[:, None, None]
    tilt = sft * np.exp(reward / b)
    p_rl = tilt / tilt.sum(-1, keepdims=True)                     # the exact regularized optimum
    change = np.sum(q * (_ce(expert, p_rl) - _ce(expert, sft)), axis=-1)   # by definition
    z_d = np.sum(expert * np.exp(reward / b), axis=-1)
    c1 = np.sum(q * (np.log(z_d) - np.sum(expert * reward, -1) / beta[:, None]), axis=-1)
    tv = 0.5 * np.abs(sft - expert).sum(-1) * tv_scale
    spread = reward.max(-1) - reward.min(-1)
    arg = 1 - (np.exp(spread / beta[:, None]) - 1) * tv
    defined = np.all(arg > 0, axis=-1)
    bound = c1 + np.sum(q * np.log(np.where(arg > 0, arg, 1.0)), axis=-1)
    return np.where(defined, change - bound, np.nan), defined


def check_thm31_robust(tv_scale: float = 1.0) -> CheckResult:
    """ΔL ≥ C1 + E log(1 − (e^{Δr/β} − 1) TV) on 512 random 3×4 instances (probabilities softmaxes of
    Gaussian logits, rewards uniform in [−1, 1], β log-uniform in [0.05, 20]) whose SFT model is the
    expert perturbed by a mixture weight log-uniform in [1e-4, 0.1] (``tv_scale`` < 1 claims a
    stronger bound)."""
    rng = np.random.default_rng(SEED)
    q, expert = _simplex(rng, 512, 3), _simplex(rng, 512, 3, 4)
    reward = rng.uniform(-1.0, 1.0, (512, 3, 4))
    beta = np.exp(rng.uniform(np.log(0.05), np.log(20.0), 512))
    mix = np.exp(rng.uniform(np.log(1e-4), np.log(0.1), (512, 1, 1)))
    sft = (1 - mix) * expert + mix * _simplex(rng, 512, 3, 4)
    margins, defined = robust_margins(q, expert, reward, beta, sft, tv_scale)
    n_def = int(defined.sum())
    worst = float(np.nanmin(margins)) if n_def else float("nan")
    return _result([(n_def >= 100, f"bound defined on {n_def}/512 instances (need >= 100)"),
                    (n_def > 0 and worst >= -TOL, f"min (Delta L - bound) {worst:.3g} over them (>= -{TOL:g})")])


def check_thm41_repaired(kl_scale: float = 1.0) -> CheckResult:
    """The true direction on 4096 random 5-response policies (``kl_scale`` scales the KL in the
    exponent: > 1 claims a stronger bound); the paper's direction with a tie: J unchanged, KL > 0."""
    rng = np.random.default_rng(SEED)
    logits = 2.0 * rng.standard_normal((4096, 5))
    reward = rng.uniform(-1, 1, (4096, 5))
    p = np.exp(logits - logits.max(-1, keepdims=True))
    p /= p.sum(-1, keepdims=True)
    best = reward.argmax(-1)
    r_sorted = np.sort(reward, axis=-1)
    gap = r_sorted[:, -1] - r_sorted[:, -2]
    kl = -np.log(np.take_along_axis(p, best[:, None], -1)[:, 0])
    margins = r_sorted[:, -1] - np.sum(p * reward, -1) - gap * (1 - np.exp(-kl_scale * kl))
    worst = float(margins.min())
    # Ties: p_RL = (1/2, 1/2, 0) on A = {1, 2}; p = (3/4, 1/4, 0) moves inside A.
    r_tie = np.array([1.0, 1.0, 0.0])
    p_rl, p_in = np.array([0.5, 0.5, 0.0]), np.array([0.75, 0.25, 0.0])
    kl_tie = float(np.sum(p_in[:2] * np.log(p_in[:2] / p_rl[:2])))
    dj = float(p_rl @ r_tie - p_in @ r_tie)
    return _result([(worst >= -TOL, f"min of J(p_RL) - J(p) - delta(1 - e^(-KL(p_RL||p))) over 4096 "
                                    f"random policies {worst:.3g} (>= -{TOL:g})"),
                    (abs(dj) <= TOL and kl_tie > 0.1,
                     f"paper's direction with a tie: KL(p||p_RL) = {kl_tie:.6f} > 0 while J moves by {dj:.1g}")])


# ----------------------------------------------------------------- margins for `coupling toy explore`
# Jittable margins on one tabular ``Instance`` (``toy_models.margins``): >= 0 iff the claim holds.
MARGIN_TOL = 1e-9


def robust_margin(inst) -> "jax.Array":
    """thm31.robust with p_SFT = ``inst.sft_policy``: ΔL − bound where the bound is defined, else 1."""
    import jax.numpy as jnp
    tilt = inst.sft_policy * jnp.exp(inst.reward / inst.beta)
    p_rl = tilt / tilt.sum(-1, keepdims=True)
    change = jnp.sum(inst.q * jnp.sum(inst.expert * (jnp.log(inst.sft_policy) - jnp.log(p_rl)), -1))
    z_d = jnp.sum(inst.expert * jnp.exp(inst.reward / inst.beta), -1)
    c1 = jnp.sum(inst.q * (jnp.log(z_d) - jnp.sum(inst.expert * inst.reward, -1) / inst.beta))
    tv = 0.5 * jnp.abs(inst.sft_policy - inst.expert).sum(-1)
    spread = inst.reward.max(-1) - inst.reward.min(-1)
    arg = 1 - (jnp.exp(spread / inst.beta) - 1) * tv
    bound = c1 + jnp.sum(inst.q * jnp.log(jnp.where(arg > 0, arg, 1.0)))
    return jnp.where(jnp.all(arg > 0), change - bound + MARGIN_TOL, 1.0)


def repaired_margin(inst) -> "jax.Array":
    """thm41.repaired, true direction, with p = ``inst.sft_policy`` and the unique argmax per prompt."""
    import jax.numpy as jnp
    r_sorted = jnp.sort(inst.reward, axis=-1)
    gap = r_sorted[:, -1] - r_sorted[:, -2]
    p_best = jnp.take_along_axis(inst.sft_policy, jnp.argmax(inst.reward, -1)[:, None], -1)[:, 0]
    j_p = jnp.sum(inst.sft_policy * inst.reward, -1)
    # KL(p_RL || p) = -log p(a*), so 1 - e^{-KL} = 1 - p(a*)
    return jnp.min(r_sorted[:, -1] - j_p - gap * (1 - jnp.exp(jnp.log(p_best)))) + MARGIN_TOL
