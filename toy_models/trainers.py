"""Trainers built on optax, float64, for any policy given as ``log_probs_fn(params) -> logp[X, Y]``.

- ``minimize``: the flat loop (a ``lax.scan``) of an optax optimizer on a differentiable loss; SFT
  is ``minimize`` of L, exact policy gradient is ``minimize`` of −J_β.
- ``natural_direction`` / ``natural_ascent``: natural policy gradient, the gradient preconditioned by
  the pseudo-inverse of the q-weighted Fisher matrix of the policy in its parameters. For the
  tabular softmax the natural direction of J_β is r − β(log p − log π_ref) up to a constant per
  prompt (thm31.beta: NPG on J for time 1/β is the logit shift θ* + r/β).
- ``sampled_ascent``: REINFORCE / RLOO / GRPO steps from ``estimators.sampled_gradient``.

Each returns the final parameters and, when given ``metrics_fn(params) -> dict``, the metrics after
every step stacked along a leading axis. Simplification: no minibatching over prompts (every prompt
is visited each step; only responses are sampled).
"""

from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp
import optax
from jax.flatten_util import ravel_pytree

from toy_models import estimators


def minimize(loss_fn: Callable, params, optimizer: optax.GradientTransformation, steps: int,
             metrics_fn: Callable | None = None):
    """``steps`` optax updates on ∇loss_fn; returns (params, metrics stacked per step or None)."""

    def step(carry, _):
        prm, state = carry
        grads = jax.grad(loss_fn)(prm)
        updates, state = optimizer.update(grads, state, prm)
        prm = optax.apply_updates(prm, updates)
        return (prm, state), (metrics_fn(prm) if metrics_fn else None)

    (params, _), history = jax.lax.scan(step, (params, optimizer.init(params)), length=steps)
    return params, history


def fisher_matrix(log_probs_fn: Callable, params, q: jax.Array) -> jax.Array:
    """G = Σ_x q(x) Σ_y p(y|x) ∇log p(y|x) ∇log p(y|x)ᵀ in the flattened parameters."""
    flat, unravel = ravel_pytree(params)
    jac = jax.jacobian(lambda f: log_probs_fn(unravel(f)))(flat)  # [X, Y, P]
    p = jnp.exp(log_probs_fn(params))
    return jnp.einsum("x,xy,xyi,xyj->ij", q, p, jac, jac)


def natural_direction(log_probs_fn: Callable, params, grads, q: jax.Array, rcond: float = 1e-10):
    """pinv(G) ∇, returned with the structure of ``params``."""
    flat_g, unravel = ravel_pytree(grads)
    g_mat = fisher_matrix(log_probs_fn, params, q)
    return unravel(jnp.linalg.pinv(g_mat, rtol=rcond, hermitian=True) @ flat_g)


def natural_ascent(objective_fn: Callable, log_probs_fn: Callable, params, q: jax.Array,
                   learning_rate: float, steps: int, metrics_fn: Callable | None = None):
    """Natural policy gradient ascent on ``objective_fn`` with optax SGD (step = lr · pinv(G)∇)."""
    optimizer = optax.sgd(learning_rate)

    def step(carry, _):
        prm, state = carry
        nat = natural_direction(log_probs_fn, prm, jax.grad(objective_fn)(prm), q)
        updates, state = optimizer.update(jax.tree.map(jnp.negative, nat), state, prm)
        prm = optax.apply_updates(prm, updates)
        return (prm, state), (metrics_fn(prm) if metrics_fn else None)

    (params, _), history = jax.lax.scan(step, (params, optimizer.init(params)), length=steps)
    return params, history


def sampled_ascent(key: jax.Array, log_probs_fn: Callable, params, reward, q, log_ref,
                   cfg: estimators.EstimatorConfig, optimizer: optax.GradientTransformation,
                   steps: int, metrics_fn: Callable | None = None, beta=None):
    """Sampled RL (REINFORCE / RLOO / GRPO per ``cfg``): each step samples fresh groups. ``beta``
    overrides ``cfg.beta`` as the KL weight (it may be traced)."""

    def step(carry, k):
        prm, state = carry
        grads = estimators.sampled_gradient(k, log_probs_fn, prm, reward, q, log_ref, cfg, beta)
        updates, state = optimizer.update(jax.tree.map(jnp.negative, grads), state, prm)
        prm = optax.apply_updates(prm, updates)
        return (prm, state), (metrics_fn(prm) if metrics_fn else None)

    (params, _), history = jax.lax.scan(step, (params, optimizer.init(params)),
                                        jax.random.split(key, steps))
    return params, history
