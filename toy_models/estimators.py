"""Sampled policy-gradient and KL estimators of docs/theory.md §6 (grpo.baseline, grpo.onpolicy, kl.k3).

For a policy with log-probabilities ``logp[X, Y]`` (any parametrization; gradients flow through
``logp``), each prompt gets a group of G sampled responses. The estimators are *surrogate
objectives* whose gradient is the estimate:

- advantages: ``none`` (REINFORCE, A = r), ``mean`` (group-mean baseline including the sample:
  E[grad] = (1 − 1/G) ∇J), ``rloo`` (leave-one-out baseline: unbiased), ``grpo`` ((r − r̄)/(std + ε),
  std with ddof=1 as in TRL: a further, state-dependent bias);
- the GRPO surrogate min(ρA, clip(ρ, 1 − ε, 1 + ε)A) with ρ = p/p_old and p_old = stop_gradient(p)
  (one inner iteration, so ρ ≡ 1), minus β times a KL estimator to the reference:
  k1 = logp − ref (unbiased, can be negative), k2 = ½(logp − ref)² (biased), and
  k3 = e^{ref − logp} − (ref − logp) − 1 (≥ 0 and unbiased for KL(p ‖ ref) under y ∼ p).

Aggregation: the mean over the group, q(x)-weighted over prompts (so that the estimate targets
∇J of docs/theory.md §1; every prompt is visited, only responses are sampled).
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp


@dataclasses.dataclass(frozen=True)
class EstimatorConfig:
    group_size: int = 8
    advantage: str = "grpo"  # none | mean | rloo | grpo
    clip_low: float = 0.2
    kl_estimator: str = "k3"  # k1 | k2 | k3
    beta: float = 0.0  # weight of the sampled KL penalty to the reference
    std_floor: float = 1e-4


def sample_groups(key: jax.Array, logp: jax.Array, group_size: int) -> jax.Array:
    """``[X, G]`` responses, y ∼ p(·|x) independently."""
    return jax.random.categorical(key, logp[:, None, :], axis=-1, shape=(logp.shape[0], group_size))


def advantages(rewards: jax.Array, kind: str, std_floor: float = 1e-4) -> jax.Array:
    """Advantages of a ``[X, G]`` reward array, per group (see the module docstring)."""
    g = rewards.shape[-1]
    mean = jnp.mean(rewards, axis=-1, keepdims=True)
    if kind == "none":
        return rewards
    if kind == "mean":
        return rewards - mean
    if kind == "rloo":
        return rewards - (g * mean - rewards) / (g - 1)
    if kind == "grpo":
        std = jnp.std(rewards, axis=-1, keepdims=True, ddof=1)
        return (rewards - mean) / (std + std_floor)
    raise ValueError(f"unknown advantage {kind!r}")


def kl_estimate(logp: jax.Array, log_ref: jax.Array, kind: str) -> jax.Array:
    """Per-sample estimators of KL(p ‖ ref) from y ∼ p (elementwise in the sampled log-probs)."""
    if kind == "k1":
        return logp - log_ref
    if kind == "k2":
        return 0.5 * (logp - log_ref) ** 2
    if kind == "k3":
        d = log_ref - logp
        return jnp.expm1(d) - d
    raise ValueError(f"unknown KL estimator {kind!r}")


def surrogate(logp, ys, rewards, q, log_ref, cfg: EstimatorConfig, beta=None) -> jax.Array:
    """The clipped GRPO surrogate (to maximize) for sampled ``ys[X, G]`` with rewards ``[X, G]``.

    ``logp`` must carry gradients; the old policy is ``stop_gradient(logp)`` (one inner iteration).
    The KL weight is ``beta`` when given (it may be a traced value, e.g. an instance's β), else
    ``cfg.beta``.
    """
    lp = jnp.take_along_axis(logp, ys, axis=-1)
    lp_old = jax.lax.stop_gradient(lp)
    adv = advantages(rewards, cfg.advantage, cfg.std_floor)
    ratio = jnp.exp(lp - lp_old)
    clipped = jnp.clip(ratio, 1 - cfg.clip_low, 1 + cfg.clip_low)
    per_sample = jnp.minimum(ratio * adv, clipped * adv)
    if beta is not None or cfg.beta:
        weight = cfg.beta if beta is None else beta
        per_sample = per_sample - weight * kl_estimate(lp, jnp.take_along_axis(log_ref, ys, axis=-1),
                                                       cfg.kl_estimator)
    return jnp.sum(q * jnp.mean(per_sample, axis=-1))


def weighted_loglik(logp, ys, weights, q) -> jax.Array:
    """Σ_x q(x) mean_i w_i log p(y_i|x): its gradient is the advantage-weighted score (grpo.onpolicy)."""
    return jnp.sum(q * jnp.mean(weights * jnp.take_along_axis(logp, ys, axis=-1), axis=-1))


def sampled_gradient(key, log_probs_fn, params, reward, q, log_ref, cfg: EstimatorConfig, beta=None):
    """One sampled gradient estimate of the (regularized) reward in ``params``: sample with the
    current policy, then differentiate the surrogate."""
    ys = sample_groups(key, jax.lax.stop_gradient(log_probs_fn(params)), cfg.group_size)
    rewards = jnp.take_along_axis(reward, ys, axis=-1)
    return jax.grad(lambda prm: surrogate(log_probs_fn(prm), ys, rewards, q, log_ref, cfg, beta))(params)
