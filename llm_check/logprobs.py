"""Per-token log-probabilities (and entropies) from hidden states, in sequence chunks.

``token_logprobs(model, tokens, mask)[b, t] = log p(tokens[b, t+1] | tokens[b, :t+1])``, the
quantity behind the SFT cross-entropy and the GRPO ratio. The final hidden states [B, T, D] are
computed once; the LM head, log-softmax and target gather then run over chunks of ``chunk_size``
positions with ``jax.lax.map``, each chunk under ``jax.checkpoint``, so neither the forward nor the
backward pass ever holds the [B, T, V] float32 logits (5 GB at B=16, T=512, V=151,936; docs/qwen3.md).
Entropy is ``H_t = logsumexp(z) - sum_v softmax(z)_v z_v``, in float32.

``temperature`` T scores ``log softmax(z / T)``: the distribution a sampler at temperature T draws
from, so GRPO's ratio and KL are taken under the policy that produced the samples (TRL does the
same). The SFT loss and the held-out CE use T = 1.

Positions whose target is padding get whatever the model says there; callers mask them (the
completion mask of ``tokenizer.example_ids`` / ``sampling.SampleOutput``).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from llm_check.model import default_positions


def _chunked(model, tokens, attention_mask, chunk_size: int, with_entropy: bool,
             temperature: float = 1.0):
    h = model.hidden(tokens, attention_mask=attention_mask)[:, :-1]  # [B, T-1, D]
    return _head_in_chunks(model, h, tokens[:, 1:], chunk_size, with_entropy, temperature)


def _head_in_chunks(model, h, targets, chunk_size: int, with_entropy: bool,
                    temperature: float = 1.0):
    """(log-probs, entropies) [B, N] of ``targets`` [B, N] under the LM head of ``h`` [B, N, D]."""
    b, n = targets.shape
    chunk = max(1, min(chunk_size, n))
    n_chunks = -(-n // chunk)
    pad = n_chunks * chunk - n
    h = jnp.pad(h, ((0, 0), (0, pad), (0, 0)))
    targets = jnp.pad(targets, ((0, 0), (0, pad)))
    # [n_chunks, B, chunk, ...] so lax.map walks the sequence
    h = h.reshape(b, n_chunks, chunk, -1).swapaxes(0, 1)
    targets = targets.reshape(b, n_chunks, chunk).swapaxes(0, 1)

    def one(args):
        hc, tc = args
        z = model.logits(hc)  # f32 [B, chunk, V]
        if temperature != 1.0:
            z = z / temperature
        lse = jax.nn.logsumexp(z, axis=-1)
        lp = jnp.take_along_axis(z, tc[..., None], axis=-1)[..., 0] - lse
        if not with_entropy:
            return lp, jnp.zeros_like(lp)
        ent = lse - jnp.sum(jax.nn.softmax(z, axis=-1) * z, axis=-1)
        return lp, ent

    # Several chunks: recompute each chunk's logits in the backward pass rather than keep them all.
    # One chunk: its logits are the only ones, and they are alive at the end of the forward pass
    # (kept) or at the start of the backward pass (recomputed) alike, so recomputing saves nothing.
    lp, ent = jax.lax.map(jax.checkpoint(one) if n_chunks > 1 else one, (h, targets))
    lp = lp.swapaxes(0, 1).reshape(b, -1)[:, :n]
    ent = ent.swapaxes(0, 1).reshape(b, -1)[:, :n]
    return lp, ent


def token_logprobs(model, tokens, attention_mask=None, *, chunk_size: int = 128,
                   temperature: float = 1.0) -> jax.Array:
    """float32 [B, T-1]: log p(tokens[:, t+1] | tokens[:, :t+1]) at ``temperature``."""
    return _chunked(model, tokens, attention_mask, chunk_size, False, temperature)[0]


def window_logprobs(model, tokens, attention_mask, completion_mask, width: int, *,
                    chunk_size: int = 128) -> tuple[jax.Array, jax.Array]:
    """(log-probs, mask), float32 [B, W]: ``token_logprobs`` at the ``width`` transitions that
    start at each row's first completion target, and the completion mask of their targets.

    The transformer runs over every position (the completion attends to its prompt), but the LM
    head runs only on these W positions, not on all T-1: with a ~100-token prompt and a ~5-token
    answer, that skips nearly all of the head (0.16B of Qwen3-0.6B's 0.6B weights) and its
    [B, T, V] logits. The caller picks ``width`` so that the window covers each row's whole
    completion (``data.completion_window``); positions past the end of a row are masked out.
    """
    t = tokens.shape[1]
    h = model.hidden(tokens, attention_mask=attention_mask)  # [B, T, D]
    target_mask = completion_mask[:, 1:]
    start = jnp.argmax(target_mask > 0, axis=1)  # the first transition with a completion target
    idx = start[:, None] + jnp.arange(width)[None, :]  # [B, W]
    inside = idx < t - 1
    idx = jnp.minimum(idx, t - 2)
    hw = jnp.take_along_axis(h, idx[..., None], axis=1)
    targets = jnp.take_along_axis(tokens[:, 1:], idx, axis=1)
    mask = jnp.take_along_axis(target_mask, idx, axis=1) * inside
    lp, _ = _head_in_chunks(model, hw, targets, chunk_size, False)
    return lp, mask.astype(lp.dtype)


def token_logprobs_and_entropy(model, tokens, attention_mask=None, *, chunk_size: int = 128,
                               temperature: float = 1.0) -> tuple[jax.Array, jax.Array]:
    """(log-probs, entropies), both float32 [B, T-1], of the next-token law at ``temperature``."""
    return _chunked(model, tokens, attention_mask, chunk_size, True, temperature)


def grouped_completion_logprobs(model, prompt_tokens, prompt_mask, completion, *,
                                temperature: float = 1.0, with_entropy: bool = False):
    """Log-probs [P*G, M] of G completions of each of P left-padded prompts, the prompt run ONCE.

    ``prompt_tokens``/``prompt_mask`` are [P, Tp]; ``completion`` is [P*G, M], grouped (prompt i
    owns rows i*G .. i*G+G-1, as ``sampling.sample(repeat=G)`` returns them). The prompt is
    prefilled into a KV cache (``model.forward_cached``), the cache is copied to its G rows, and
    the completions run on top of it: a GRPO group costs one prompt pass, not G, in the forward and
    (this is pure JAX, so it is differentiated like any function) in the backward pass. The result
    equals ``token_logprobs`` of the concatenated sequences at the completion positions (tested).
    Entropies, when asked for, are of the next-token law at ``temperature``. The [P*G, M, V]
    logits are formed at once: M is a completion length (a handful of tokens in GRPO).
    """
    p, tp = prompt_tokens.shape
    n, m = completion.shape
    g = n // p
    key_mask = jnp.concatenate([prompt_mask, jnp.ones((p, m), prompt_mask.dtype)], axis=1)
    cache = model.init_cache(p, tp + m)
    h, cache = model.forward_cached(prompt_tokens, default_positions(prompt_mask), key_mask,
                                    cache, 0)
    first = model.logits(h[:, -1])  # predicts completion token 0
    rep = lambda x, axis=0: jnp.repeat(x, g, axis=axis)  # noqa: E731
    cache = jax.tree.map(lambda x: rep(x, x.ndim - 4), cache)  # batch is axis -4 of k and v
    positions = rep(prompt_mask.sum(-1))[:, None] + jnp.arange(m)[None, :]
    hc, _ = model.forward_cached(completion, positions, rep(key_mask), cache, tp)
    z = jnp.concatenate([rep(first)[:, None], model.logits(hc[:, :-1])], axis=1)  # [N, M, V]
    logq = jax.nn.log_softmax(z.astype(jnp.float32) / temperature, axis=-1)
    lp = jnp.take_along_axis(logq, completion[..., None], axis=-1)[..., 0]
    if not with_entropy:
        return lp
    return lp, -jnp.sum(jnp.exp(logq) * logq, axis=-1)


def completion_nll(model, prompt_tokens, prompt_mask, completion, completion_mask, *,
                   rows: int) -> jax.Array:
    """float32 [N]: -log p(completion | prompt) per row, summed over the masked completion tokens.

    The layout of ``data.SplitBatch``: left-padded prompts [N, Tp], right-padded completions
    [N, M]. Logits are formed only at the M completion positions (``grouped_completion_logprobs``
    with G = 1), never at the prompt's, and ``rows`` rows at a time (``jax.lax.map`` over
    mini-batches, each under ``jax.checkpoint``, so a gradient or Hessian-vector product of the
    result keeps one mini-batch's activations, not all of them). N is padded up to a multiple of
    ``rows`` with copies of row 0 whose mask is 0."""
    n = prompt_tokens.shape[0]
    rows = max(1, min(rows, n))
    chunks = -(-n // rows)
    pad = chunks * rows - n

    def split(x, mode="edge"):
        x = jnp.pad(x, [(0, pad)] + [(0, 0)] * (x.ndim - 1), mode=mode)
        return x.reshape(chunks, rows, *x.shape[1:])

    @jax.checkpoint
    def one(args):
        p, pm, c, cm = args
        lp = grouped_completion_logprobs(model, p, pm, c)
        return -(lp * cm).sum(-1)

    cmask = split(completion_mask.astype(jnp.float32), mode="constant")
    nll = jax.lax.map(one, (split(prompt_tokens), split(prompt_mask), split(completion), cmask))
    return nll.reshape(-1)[:n]
