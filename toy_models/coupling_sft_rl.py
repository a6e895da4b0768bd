"""SFT then RL: the quantities of docs/theory.md §3, per instance (vmap over a batch of instances).

Claims implemented: thm31.identity, thm31.c1, thm31.beta, thm31.local, threshold.kl. Everything is
a closed form on probabilities; the numeric checks compare these with the trainers and with
autodiff. Simplification: RL is taken to reach its regularized optimum exactly, as in the paper.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from toy_models import objectives as obj
from toy_models.instance import Instance
from toy_models.tabular import variance


def expected(p: jax.Array, v: jax.Array) -> jax.Array:
    """E_{y∼p}[v_y] over the last axis."""
    return jnp.sum(p * v, axis=-1)


def rl_optimum_from(log_start: jax.Array, inst: Instance) -> jax.Array:
    """log p_RL: the regularized optimum when the reference is the policy RL starts from."""
    return obj.regularized_optimum(log_start, inst.reward, inst.beta)


def sft_loss_change_identity(inst: Instance) -> jax.Array:
    """thm31.identity: L(p_RL) − L(p_SFT) = E_x[log E_{p_SFT} e^{r/β} − E_{p_D}[r]/β]."""
    log_z = obj.log_partition(jnp.log(inst.sft_policy), inst.reward, inst.beta)
    return jnp.sum(inst.q * (log_z - expected(inst.expert, inst.reward) / inst.beta))


def c1_closed_form(inst: Instance) -> jax.Array:
    """thm31.c1: C1(β) = E_x[log Z_β(x) − E_{p_D}[r]/β], Z_β under p_D."""
    log_z = obj.log_partition(jnp.log(inst.expert), inst.reward, inst.beta)
    return jnp.sum(inst.q * (log_z - expected(inst.expert, inst.reward) / inst.beta))


def c1_as_kl(inst: Instance) -> jax.Array:
    """thm31.c1: the same number as E_x KL(p_D ‖ p_RL), p_RL the optimum with reference p_D."""
    log_expert = jnp.log(inst.expert)
    return obj.kl(log_expert, rl_optimum_from(log_expert, inst), inst.q)


def cumulants(p: jax.Array, r: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array]:
    """(mean, variance, third cumulant) of r under p, over the last axis."""
    mean = expected(p, r)
    centered = r - mean[..., None]
    return mean, expected(p, centered**2), expected(p, centered**3)


def c1_large_beta_series(inst: Instance) -> jax.Array:
    """thm31.beta: C1 ≈ E_x[Var_{p_D}(r)/(2β²) + κ₃/(6β³)], error O(β⁻⁴)."""
    _, var, k3 = cumulants(inst.expert, inst.reward)
    return jnp.sum(inst.q * (var / (2 * inst.beta**2) + k3 / (6 * inst.beta**3)))


def c1_small_beta_asymptote(inst: Instance) -> jax.Array:
    """thm31.beta: as β → 0, C1 ≈ E_x[(r*_D − E_{p_D} r)/β + log p_D(A_x)].

    r*_D is the largest reward on supp p_D and A_x the set of supported responses attaining it.
    The error is exponentially small in 1/β.
    """
    on_support = inst.expert > 0
    r_star = jnp.max(jnp.where(on_support, inst.reward, -jnp.inf), axis=-1)
    in_a = on_support & (inst.reward >= r_star[..., None])
    mass_a = jnp.sum(jnp.where(in_a, inst.expert, 0.0), axis=-1)
    mean = expected(inst.expert, inst.reward)
    return jnp.sum(inst.q * ((r_star - mean) / inst.beta + jnp.log(mass_a)))


def local_sft_increase(q: jax.Array, p: jax.Array, direction: jax.Array, eta) -> jax.Array:
    """thm31.local: L(θ* + η d) − L* ≈ (η²/2) Σ_x q(x) d_xᵀ F_x d_x = (η²/2) Σ_x q(x) Var_{p}(d_x)."""
    return 0.5 * eta**2 * jnp.sum(q * variance(p, direction))


def policy_gradient_direction(q: jax.Array, p: jax.Array, reward: jax.Array) -> jax.Array:
    """softmax.pg: ∇_{θ_x} J = q(x) F_x r_x, entry y = q(x) p_y (r_y − E_p r)."""
    return q[..., None] * p * (reward - expected(p, reward)[..., None])


def threshold_sides(inst: Instance) -> tuple[jax.Array, jax.Array]:
    """threshold.kl: (E_x E_{p_D}[r]/β, E_x log E_{p_SFT} e^{r/β}); RL lowers L iff left > right."""
    left = jnp.sum(inst.q * expected(inst.expert, inst.reward)) / inst.beta
    right = jnp.sum(inst.q * obj.log_partition(jnp.log(inst.sft_policy), inst.reward, inst.beta))
    return left, right


def threshold_large_beta_sides(inst: Instance) -> tuple[jax.Array, jax.Array]:
    """threshold.kl, large β: (E_x[E_{p_D} r − E_{p_SFT} r], E_x Var_{p_SFT}(r)/(2β)); the exact
    criterion differs from "left > right" by O(β⁻²) in these units."""
    gap = jnp.sum(inst.q * (expected(inst.expert, inst.reward) - expected(inst.sft_policy, inst.reward)))
    var = jnp.sum(inst.q * variance(inst.sft_policy, inst.reward))
    return gap, var / (2 * inst.beta)
