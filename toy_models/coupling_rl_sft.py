"""RL then SFT: the quantities of docs/theory.md §4, per instance (vmap over a batch of instances).

Claims implemented: thm41.gibbs, thm41.local, thm41.argmax, thm41.pinsker, and the one SFT step
from the regularized optimum used by thm41.paper and by ``coupling toy analyze``. The SFT step is
one gradient-descent step on L from the logits of p* (reference =
``inst.reference``), the gradient in θ_x being q(x)(p_x − p_D(·|x)).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from toy_models import objectives as obj
from toy_models.coupling_sft_rl import expected
from toy_models.instance import Instance
from toy_models.tabular import covariance, variance


def rl_optimum(inst: Instance) -> jax.Array:
    """log p* for reference ``inst.reference``."""
    return obj.regularized_optimum(jnp.log(inst.reference), inst.reward, inst.beta)


def objective(logp: jax.Array, inst: Instance) -> jax.Array:
    """J_β(p) with reference ``inst.reference``."""
    return obj.regularized_objective(logp, inst.q, inst.reward, jnp.log(inst.reference), inst.beta)


def sft_step_from_optimum(inst: Instance, eta) -> jax.Array:
    """log p after one SFT gradient step of size η from θ* = log p*: θ* − η q(x)(p* − p_D)."""
    log_star = rl_optimum(inst)
    theta = log_star - eta * inst.q[:, None] * (jnp.exp(log_star) - inst.expert)
    return jax.nn.log_softmax(theta, axis=-1)


def gibbs_gap(logp: jax.Array, inst: Instance) -> tuple[jax.Array, jax.Array]:
    """thm41.gibbs: (J_β(p*) − J_β(p), β E_x KL(p ‖ p*)); the two are equal for every p."""
    log_star = rl_optimum(inst)
    return objective(log_star, inst) - objective(logp, inst), inst.beta * obj.kl(logp, log_star, inst.q)


def local_sft_changes(inst: Instance, eta) -> tuple[jax.Array, jax.Array]:
    """thm41.local: second-order ΔJ_β and first-order ΔJ of one SFT step of size η from θ*.

    ΔJ_β ≈ −(β η²/2) Σ_x q(x)³ Var_{p*}[v_x],   ΔJ ≈ −η Σ_x q(x)² Cov_{p*}(r_x, v_x),
    with v_x = p*(·|x) − p_D(·|x).
    """
    p_star = jnp.exp(rl_optimum(inst))
    v = p_star - inst.expert
    d_obj = -0.5 * inst.beta * eta**2 * jnp.sum(inst.q**3 * variance(p_star, v))
    d_rew = -eta * jnp.sum(inst.q**2 * covariance(p_star, inst.reward, v))
    return d_obj, d_rew


def argmax_gap_and_bound(inst: Instance) -> tuple[jax.Array, jax.Array]:
    """thm41.argmax: (J(p_RL) − J(p_D), E_x[δ(x)(1 − p_D(A_x|x))]); the gap is ≥ the bound.

    p_RL is the unregularized optimum (J = E_x max r); A_x the argmax set; δ(x) the gap to the best
    response outside A_x (0 when r(x, ·) is constant).
    """
    r_max = jnp.max(inst.reward, axis=-1)
    in_a = inst.reward >= r_max[..., None]
    r_next = jnp.max(jnp.where(in_a, -jnp.inf, inst.reward), axis=-1)
    delta = jnp.where(jnp.isfinite(r_next), r_max - r_next, 0.0)
    mass_a = jnp.sum(jnp.where(in_a, inst.expert, 0.0), axis=-1)
    gap = obj.unregularized_optimum_value(inst.q, inst.reward) - jnp.sum(
        inst.q * expected(inst.expert, inst.reward))
    return gap, jnp.sum(inst.q * delta * (1.0 - mass_a))


def pinsker_chain(logp: jax.Array, logp_other: jax.Array, inst: Instance):
    """thm41.pinsker: (|J(p) − J(p')|, Δr·E_x TV, Δr·sqrt(E_x KL(p‖p')/2)), increasing."""
    d_r = jnp.max(inst.reward) - jnp.min(inst.reward)
    d_j = jnp.abs(obj.raw_reward(logp, inst.q, inst.reward) - obj.raw_reward(logp_other, inst.q, inst.reward))
    tv = obj.tv(logp, logp_other, inst.q)
    kl = obj.kl(logp, logp_other, inst.q)
    return d_j, d_r * tv, d_r * jnp.sqrt(jnp.maximum(kl, 0.0) / 2)
