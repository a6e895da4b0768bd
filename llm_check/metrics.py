"""The local second-order theory, measured on the LLM (docs/theory.md §7, [thm31.local], [pl.threshold]).

- ``local_ce_prediction``: for an update theta -> theta + delta, the prediction
      Delta CE ~= grad CE . delta + 1/2 delta^T H delta,
  with H delta a Hessian-vector product computed as jax.jvp of jax.grad (forward-over-reverse; the
  primal output of that jvp is grad CE itself, so one call gives both terms). Compared with the
  measured CE(theta + delta) - CE(theta) it has an O(|delta|^3) error, so the relative error of the
  prediction should shrink linearly with the step size (``lr_sweep`` in the pipeline checks this).
- ``tree_cos``: cos(grad CE, grad J), the gradient misalignment; grad J is GRPO's on-policy
  estimate (minus the gradient of the GRPO loss) on the step's rollouts.
- ``heldout_ce``: CE on held-out expert responses as a function of the params: the mean over
  responses of -log p(y|x) (nats per response, summed over the completion tokens and <|im_end|>),
  which is docs/theory.md's L and what ``sft/ce_heldout`` reports.

Parameters are pytrees (the model's nnx.Param state); everything is a pure function.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from llm_check.logprobs import completion_nll


def tree_vdot(a, b) -> jax.Array:
    """Sum over leaves of <a_leaf, b_leaf>, accumulated in float32."""
    parts = jax.tree.leaves(jax.tree.map(
        lambda x, y: jnp.vdot(x.astype(jnp.float32), y.astype(jnp.float32)), a, b))
    return sum(parts, jnp.float32(0.0))


def tree_sub(a, b):
    return jax.tree.map(lambda x, y: x - y, a, b)


def tree_cos(a, b) -> jax.Array:
    """Cosine between two pytrees taken as flat vectors (0 when either is zero)."""
    na = jnp.sqrt(tree_vdot(a, a))
    nb = jnp.sqrt(tree_vdot(b, b))
    return tree_vdot(a, b) / jnp.maximum(na * nb, 1e-30)


def heldout_ce(graphdef, rest, params, prompt, pmask, completion, cmask, *, rows: int):
    """Mean over held-out responses of -log p(y|x) (nats per response) at ``params``: the
    ``data.SplitBatch`` arrays, ``rows`` rows at a time, logits at the completion positions only
    (``logprobs.completion_nll``)."""
    model = nnx.merge(graphdef, params, rest)
    return completion_nll(model, prompt, pmask, completion, cmask, rows=rows).mean()


def local_ce_prediction(ce, params, delta):
    """(grad CE . delta, 1/2 delta^T H delta, grad CE) at ``params`` for the update ``delta``."""
    grad, hvp = jax.jvp(jax.grad(ce), (params,), (delta,))
    return tree_vdot(grad, delta), 0.5 * tree_vdot(delta, hvp), grad


def relative_error(predicted: float, measured: float) -> float:
    """|pred - meas| / |meas| (inf when the measured change is exactly 0)."""
    return abs(predicted - measured) / abs(measured) if measured != 0 else float("inf")
