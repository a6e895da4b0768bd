"""SFT: masked token cross-entropy on the completion (and the closing <|im_end|>), AdamW.

The loss is docs/theory.md §1's L(theta) = E[-log p_theta(y|x)] on the expert's responses, written per
token: over a batch, sum_{i,t} m_{i,t} (-log p(y_{i,t} | x_i, y_{i,<t})) / sum m, with m the
completion mask (``data.TokenBatch``). Log-probs come from ``llm_check.logprobs``: with the step's
``window`` (what the pipeline passes), the LM head runs only on the W positions that hold each
row's completion (``window_logprobs``); without it, on every position (``token_logprobs``). Both
work in chunks, so [B, T, V] f32 logits are never held at once.

The training state is functional: ``params`` (the model's ``nnx.Param`` state) and an optax state,
with the module structure (``graphdef``) and the non-trainable rest closed over. One step is one
pure jitted function ``(params, opt_state, batch) -> (params, opt_state, metrics)``. Gradient
accumulation: the batch carries a leading micro-batch axis [A, B, T]; gradients of the summed NLL
are added over micro-batches and divided by the total number of completion tokens, so the update
equals that of one [A*B, T] batch (an exact global token mean).

Optimizer: global-norm clipping, then AdamW with linear warmup and cosine or constant decay; weight
decay on matrices only (not on norms).

Also here, because SFT and evaluation share it: ``sequence_nll`` (the per-response CE in nats,
summed over the completion tokens, i.e. -log p(y|x)), the quantity ``sft/ce_heldout`` averages.
"""

from __future__ import annotations

from functools import partial

import jax
import jax.numpy as jnp
import optax
from flax import nnx

from llm_check.logprobs import token_logprobs, window_logprobs
from llm_check.run_config import OptimConfig  # noqa: F401  (re-exported)
from theory.errors import InputError


def make_optimizer(cfg: OptimConfig) -> optax.GradientTransformation:
    """clip_by_global_norm -> adamw(schedule), the weight decay on the matrices only: not on the
    RMSNorm weights, which are 2-D too when the layers are stacked (``scan_layers``)."""
    if cfg.schedule == "cosine":
        decay_steps = max(cfg.total_steps, cfg.warmup_steps + 1)
        sched = optax.warmup_cosine_decay_schedule(
            init_value=0.0 if cfg.warmup_steps else cfg.lr, peak_value=cfg.lr,
            warmup_steps=cfg.warmup_steps, decay_steps=decay_steps,
            end_value=cfg.lr * cfg.final_lr_frac)
    elif cfg.warmup_steps:
        sched = optax.linear_schedule(0.0, cfg.lr, cfg.warmup_steps)
        sched = optax.join_schedules([sched, optax.constant_schedule(cfg.lr)], [cfg.warmup_steps])
    else:
        sched = optax.constant_schedule(cfg.lr)
    return optax.chain(
        optax.clip_by_global_norm(cfg.clip_norm),
        optax.adamw(sched, b1=cfg.b1, b2=cfg.b2, eps=cfg.eps, weight_decay=cfg.weight_decay,
                    mask=_decayed),
    )


def _decayed(params):
    """True for the parameters weight decay acts on: every matrix but the (stacked) norm weights."""
    return jax.tree_util.tree_map_with_path(
        lambda path, x: x.ndim >= 2 and "norm" not in jax.tree_util.keystr(path), params)


def split_model(model: nnx.Module):
    """(graphdef, params, rest): the trainable nnx.Param state and everything else."""
    return nnx.split(model, nnx.Param, ...)


def completion_logprobs(graphdef, params, rest, tokens, attention_mask, chunk_size: int):
    """[B, T-1] log p(tokens[:, t+1] | tokens[:, :t+1]) of the model with these params."""
    model = nnx.merge(graphdef, params, rest)
    return token_logprobs(model, tokens, attention_mask, chunk_size=chunk_size)


def nll_sums(graphdef, params, rest, tokens, attention_mask, completion_mask, chunk_size: int,
             window: int | None = None):
    """(per-sequence summed NLL over the completion [B], number of completion tokens [B]).

    With ``window`` (``data.completion_window`` of the rows, or more), the LM head runs only on
    the window that holds each row's completion (``logprobs.window_logprobs``); the sums are the
    same."""
    if window is not None:
        model = nnx.merge(graphdef, params, rest)
        logp, m = window_logprobs(model, tokens, attention_mask, completion_mask, window,
                                  chunk_size=chunk_size)
        return -(logp * m).sum(-1), m.sum(-1)
    logp = completion_logprobs(graphdef, params, rest, tokens, attention_mask, chunk_size)
    m = completion_mask[:, 1:].astype(logp.dtype)
    return -(logp * m).sum(-1), m.sum(-1)


def make_sft_step(graphdef, rest, optimizer, *, chunk_size: int = 64):
    """The jitted SFT step over a batch with a leading micro-batch axis [A, B, T] (module docstring).
    ``step(params, opt_state, tokens, attn, cmask, window=None)``: ``window`` (static) limits the LM
    head to each row's completion (``nll_sums``)."""

    def summed_nll(params, tokens, attn, cmask, window):
        nll, n = nll_sums(graphdef, params, rest, tokens, attn, cmask, chunk_size, window)
        return nll.sum(), n.sum()

    grad_fn = jax.value_and_grad(summed_nll, has_aux=True)

    @partial(jax.jit, static_argnames="window")
    def step(params, opt_state, tokens, attn, cmask, window=None):
        def micro(carry, xs):
            g_acc, l_acc, n_acc = carry
            (l, n), g = grad_fn(params, *xs, window)
            return (jax.tree.map(jnp.add, g_acc, g), l_acc + l, n_acc + n), None

        zeros = jax.tree.map(jnp.zeros_like, params)
        (g, total, count), _ = jax.lax.scan(micro, (zeros, 0.0, 0.0), (tokens, attn, cmask))
        count = jnp.maximum(count, 1.0)
        grads = jax.tree.map(lambda x: x / count, g)
        updates, opt_state = optimizer.update(grads, opt_state, params)
        params = optax.apply_updates(params, updates)
        metrics = {"loss": total / count, "grad_norm": optax.tree.norm(grads)}
        return params, opt_state, metrics

    return step


def stack_micro(batch, accum: int):
    """Reshape a data.TokenBatch of A*B rows to arrays [A, B, T] for ``make_sft_step``."""
    n = len(batch)
    if n % accum:
        raise InputError(f"setting grad_accum={accum}: does not divide the batch of {n} rows")
    shape = (accum, n // accum, batch.tokens.shape[1])
    return (batch.tokens.reshape(shape), batch.attention_mask.reshape(shape),
            batch.completion_mask.reshape(shape))
