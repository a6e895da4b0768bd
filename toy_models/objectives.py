"""The objectives of docs/theory.md §1 on a policy given by its log-probabilities ``logp[X, Y]``.

Working on log-probabilities lets one set of functions serve every policy of this package
(tabular, autoregressive over enumerated sequences, log-linear) and keeps zero probabilities exact
(log 0 = -inf, with the convention 0·log 0 = 0). Sums over prompts are q-weighted.

- SFT loss       L = Σ_x q(x) Σ_y p_D(y|x)(−log p(y|x))
- raw reward     J = Σ_x q(x) Σ_y p(y|x) r(x, y)
- KL             E_x KL(p ‖ π_ref)
- regularized    J_β = J − β E_x KL(p ‖ π_ref)
- exact optima:  the regularized optimum log p* = log softmax(log π_ref + r/β) and the SFT
                 optimum p = p_D (a tabular policy reaches it at finite θ iff p_D has full support).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp


def xlogy(x: jax.Array, logy: jax.Array) -> jax.Array:
    """x·log y with 0·(−inf) = 0, elementwise."""
    return jnp.where(x > 0, x * logy, 0.0)


def sft_loss(logp: jax.Array, q: jax.Array, expert: jax.Array) -> jax.Array:
    """L = Σ_x q(x) Σ_y p_D(y|x)(−log p(y|x))."""
    return -jnp.sum(q * jnp.sum(xlogy(expert, logp), axis=-1))


def raw_reward(logp: jax.Array, q: jax.Array, reward: jax.Array) -> jax.Array:
    """J = Σ_x q(x) E_{p(·|x)}[r(x, ·)]."""
    return jnp.sum(q * jnp.sum(jnp.exp(logp) * reward, axis=-1))


def kl_rows(logp: jax.Array, logp_other: jax.Array) -> jax.Array:
    """KL(p(·|x) ‖ p'(·|x)) for every prompt, ``[X]``."""
    p = jnp.exp(logp)
    return jnp.sum(jnp.where(p > 0, p * (logp - logp_other), 0.0), axis=-1)


def kl(logp: jax.Array, logp_other: jax.Array, q: jax.Array) -> jax.Array:
    """E_x KL(p ‖ p') = Σ_x q(x) KL(p(·|x) ‖ p'(·|x))."""
    return jnp.sum(q * kl_rows(logp, logp_other))


def tv(logp: jax.Array, logp_other: jax.Array, q: jax.Array) -> jax.Array:
    """E_x TV(p, p') = Σ_x q(x) ½ Σ_y |p − p'|."""
    return jnp.sum(q * 0.5 * jnp.sum(jnp.abs(jnp.exp(logp) - jnp.exp(logp_other)), axis=-1))


def regularized_objective(logp, q, reward, log_reference, beta) -> jax.Array:
    """J_β = J − β E_x KL(p ‖ π_ref)."""
    return raw_reward(logp, q, reward) - beta * kl(logp, log_reference, q)


def regularized_optimum(log_reference: jax.Array, reward: jax.Array, beta) -> jax.Array:
    """log p* with p*(y|x) = π_ref(y|x) e^{r(x,y)/β} / Z_β(x): the maximizer of J_β (§1)."""
    return jax.nn.log_softmax(log_reference + reward / beta, axis=-1)


def log_partition(log_base: jax.Array, reward: jax.Array, beta) -> jax.Array:
    """log Z_β(x) = log E_{base}[e^{r/β}] for every prompt, ``[X]`` (stable logsumexp)."""
    return jax.nn.logsumexp(log_base + reward / beta, axis=-1)


def unregularized_optimum_value(q: jax.Array, reward: jax.Array) -> jax.Array:
    """J(p_RL) = E_x max_y r(x, y): the supremum of the raw reward over policies (thm41.argmax)."""
    return jnp.sum(q * jnp.max(reward, axis=-1))
