"""Tabular contextual bandit policy: one free logit vector per prompt (docs/theory.md §1, §2).

    p_θ(y|x) = softmax(θ_x)_y,   θ ∈ ℝ^{X×Y}.

Parameters are a plain array ``theta[X, Y]``. Every function here is pure and shape-polymorphic over
leading batch axes, so it can be vmapped over instances. Probabilities may contain exact zeros (a
deterministic expert); ``logits_from_probs`` then returns -inf logits, which the objectives treat
with the convention 0·log 0 = 0.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp


def log_probs(theta: jax.Array) -> jax.Array:
    """log p_θ(y|x) for every (x, y): a log-softmax over the last axis."""
    return jax.nn.log_softmax(theta, axis=-1)


def probs(theta: jax.Array) -> jax.Array:
    """p_θ(y|x): a softmax over the last axis."""
    return jax.nn.softmax(theta, axis=-1)


def logits_from_probs(p: jax.Array) -> jax.Array:
    """The normalized logits log p (so that softmax(log p) = p); -inf where p = 0."""
    return jnp.log(p)


def fisher(p: jax.Array) -> jax.Array:
    """F = diag(p) − p pᵀ, the Fisher matrix of the softmax in its logits (claim softmax.fisher).

    ``p[..., Y]`` -> ``F[..., Y, Y]``. F is the Hessian of −log p_y in θ for every y and the
    Jacobian of p in θ.
    """
    return jnp.einsum("...i,ij->...ij", p, jnp.eye(p.shape[-1])) - p[..., :, None] * p[..., None, :]


def variance(p: jax.Array, v: jax.Array) -> jax.Array:
    """Var_{y∼p}[v_y] over the last axis; equals vᵀ F v (claim softmax.fisher)."""
    mean = jnp.sum(p * v, axis=-1, keepdims=True)
    return jnp.sum(p * (v - mean) ** 2, axis=-1)


def covariance(p: jax.Array, u: jax.Array, v: jax.Array) -> jax.Array:
    """Cov_{y∼p}(u_y, v_y) over the last axis; equals uᵀ F v."""
    mu = jnp.sum(p * u, axis=-1, keepdims=True)
    mv = jnp.sum(p * v, axis=-1, keepdims=True)
    return jnp.sum(p * (u - mu) * (v - mv), axis=-1)
