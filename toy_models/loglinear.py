"""Log-linear policy with features shared across prompts (docs/theory.md §1, §7: "parameters shared
across prompts").

    p_w(y|x) ∝ exp(φ(x, y) · w),   φ ∈ ℝ^{X×Y×D},  w ∈ ℝ^D.

Unlike the tabular policy, one parameter vector serves every prompt, so an RL step on one prompt
moves the others and the SFT optimum need not reproduce p_D (it does only when p_D is in the
family). It is the smallest model with the LLM's failure of tabular independence. Its Hessian of
the SFT loss is Σ_x q(x) φ_xᵀ F_x φ_x, still independent of p_D, so the local statements of §3
(thm31.local) keep their form with this Hessian.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp


def log_probs(w: jax.Array, features: jax.Array) -> jax.Array:
    """log p_w(y|x): ``w[D]``, ``features[X, Y, D]`` -> ``[X, Y]``."""
    return jax.nn.log_softmax(features @ w, axis=-1)


def sft_hessian(w: jax.Array, features: jax.Array, q: jax.Array) -> jax.Array:
    """∇²_w L = Σ_x q(x) φ_xᵀ (diag p_x − p_x p_xᵀ) φ_x, ``[D, D]`` (does not involve p_D)."""
    p = jnp.exp(log_probs(w, features))
    mean_feat = jnp.einsum("xy,xyd->xd", p, features)
    centered = features - mean_feat[:, None, :]
    return jnp.einsum("x,xy,xyd,xye->de", q, p, centered, centered)
