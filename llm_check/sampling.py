"""Autoregressive sampling with the KV cache: greedy, temperature and top-p (nucleus).

- Prompts are LEFT-padded ``[B, P]`` with a mask, so every prompt ends at column ``P - 1`` and
  generated token ``i`` goes to cache slot ``P + i`` for the whole batch. Positions follow each
  sequence's own length (``len_b + i``), so padding does not change what a sequence samples.
- ``repeat=G`` samples G completions of every prompt: the prompt is prefilled ONCE and its KV
  cache and last logits are copied G times (rows grouped: prompt i gives rows i*G .. i*G+G-1), so
  a GRPO group costs one prefill, not G.
- One prefill over the prompt, then ``max_new_tokens - 1`` single-token decode steps in a
  ``jax.lax.scan``. Everything has a static shape: the function is compiled once per
  (model graph, batch, prompt length, max_new_tokens, greedy/top-p mode) and reused.
- The model enters ``jax.jit`` as the pytree it is (Flax NNX modules are pytrees): flattening it
  takes ~0.3 ms a call, where ``nnx.split`` took ~5 ms at the benchmark's 6 layers.
- Per-sequence stop: after a sequence emits ``eos_id`` its later tokens are ``pad_id`` and its
  completion mask is 0. ``completion_mask`` is 1 up to and including the first eos.
- Deterministic for a given key: step ``i`` draws with ``jax.random.fold_in(key, i)``.
- The sampler also returns, per generated token, its log-probability and the entropy of the law it
  was drawn from (log softmax(z / T) at temperature T; 0 after the sequence stopped), so an
  on-policy RL step needs no second forward pass of the sampling policy.

Top-p keeps the smallest set of most likely tokens whose probability reaches ``top_p`` (the first
token always stays); tokens tied with the cut-off logit are kept too. It needs a sort over the
vocabulary each step, so it is only traced when ``top_p < 1``.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial

import jax
import jax.numpy as jnp
import numpy as np

from llm_check.model import default_positions
from llm_check.sharding import to_host
from theory.errors import InputError


@jax.tree_util.register_dataclass
@dataclass(frozen=True)
class SampleOutput:  # a pytree: it can cross jit boundaries and be device_put
    tokens: jax.Array           # int32 [B, P + N]: prompt (as given) then completion
    completion: jax.Array       # int32 [B, N]; pad_id after the first eos
    completion_mask: jax.Array  # int32 [B, N]: 1 up to and including the first eos
    lengths: jax.Array          # int32 [B]: completion_mask.sum(-1)
    logprobs: jax.Array         # float32 [B, N]: log p(token) at the sampling temperature
    entropy: jax.Array          # float32 [B, N]: entropy of the law each token was drawn from


def sample(model, prompt_tokens, prompt_mask, key, *, max_new_tokens: int,
           temperature: float = 1.0, top_p: float = 1.0, greedy: bool = False,
           eos_id: int, pad_id: int | None = None, repeat: int = 1) -> SampleOutput:
    """Sample ``max_new_tokens`` tokens after each left-padded prompt (see module docstring)."""
    prompt_tokens = jnp.asarray(prompt_tokens, jnp.int32)
    prompt_mask = jnp.asarray(prompt_mask, jnp.int32)
    if prompt_tokens.ndim != 2 or prompt_mask.shape != prompt_tokens.shape:
        raise InputError(f"sample: prompt_tokens {prompt_tokens.shape} and prompt_mask "
                         f"{prompt_mask.shape} must both be [B, P]")
    if max_new_tokens < 1:
        raise InputError(f"sample: max_new_tokens must be >= 1, got {max_new_tokens}")
    if not greedy and not temperature > 0:
        raise InputError(f"sample: temperature must be > 0 (or greedy=True), got {temperature}")
    if not 0 < top_p <= 1:
        raise InputError(f"sample: top_p must be in (0, 1], got {top_p}")
    if repeat < 1:
        raise InputError(f"sample: repeat must be >= 1, got {repeat}")
    if not np.all(to_host(prompt_mask)[:, -1] == 1):
        raise InputError("sample: prompts must be LEFT-padded (prompt_mask[:, -1] must be 1)")
    tokens, completion, cmask, lp, ent = _sample(
        model, prompt_tokens, prompt_mask, key, jnp.float32(temperature),
        jnp.float32(top_p), jnp.int32(eos_id), jnp.int32(eos_id if pad_id is None else pad_id),
        max_new_tokens=int(max_new_tokens), greedy=bool(greedy), use_top_p=bool(top_p < 1),
        repeat=int(repeat))
    return SampleOutput(tokens, completion, cmask, cmask.sum(-1), lp, ent)


def _pick(logits, key, temperature, top_p, *, greedy: bool, use_top_p: bool):
    """Next token [B] from float32 logits [B, V]."""
    if greedy:
        return jnp.argmax(logits, axis=-1).astype(jnp.int32)
    z = logits / temperature
    if use_top_p:
        zs = jnp.sort(z, axis=-1)[:, ::-1]
        probs = jax.nn.softmax(zs, axis=-1)
        mass_before = jnp.cumsum(probs, axis=-1) - probs
        cutoff = jnp.min(jnp.where(mass_before < top_p, zs, jnp.inf), axis=-1, keepdims=True)
        z = jnp.where(z >= cutoff, z, -jnp.inf)
    return jax.random.categorical(key, z, axis=-1).astype(jnp.int32)


@partial(jax.jit, static_argnames=("max_new_tokens", "greedy", "use_top_p", "repeat"))
def _sample(model, prompt_tokens, prompt_mask, key, temperature, top_p, eos_id, pad_id,
            *, max_new_tokens, greedy, use_top_p, repeat):
    b0, p = prompt_tokens.shape
    n = max_new_tokens
    key_mask = jnp.concatenate([prompt_mask, jnp.ones((b0, n), jnp.int32)], axis=1)
    cache = model.init_cache(b0, p + n)
    h, cache = model.forward_cached(prompt_tokens, default_positions(prompt_mask), key_mask,
                                    cache, 0)
    logits = model.logits(h[:, -1])
    if repeat > 1:  # one prefill per prompt, copied to its G rows (batch is axis -4 of k and v)
        rep = partial(jnp.repeat, repeats=repeat)
        cache = jax.tree.map(lambda x: rep(x, axis=x.ndim - 4), cache)
        logits, key_mask = rep(logits, axis=0), rep(key_mask, axis=0)
        prompt_tokens, prompt_mask = rep(prompt_tokens, axis=0), rep(prompt_mask, axis=0)
    b = b0 * repeat
    prompt_len = prompt_mask.sum(-1)
    pick = partial(_pick, temperature=temperature, top_p=top_p, greedy=greedy,
                   use_top_p=use_top_p)

    def choose(logits, i, done):
        tok = jnp.where(done, pad_id, pick(logits, jax.random.fold_in(key, i)))
        logq = jax.nn.log_softmax(logits / (1.0 if greedy else temperature), axis=-1)
        lp = jnp.take_along_axis(logq, tok[:, None], axis=-1)[:, 0]
        ent = -jnp.sum(jnp.exp(logq) * logq, axis=-1)
        live = ~done
        return (tok, done | (tok == eos_id), live.astype(jnp.int32), jnp.where(live, lp, 0.0),
                jnp.where(live, ent, 0.0))

    def step(carry, i):
        cache, logits, done = carry
        tok, done_next, valid, lp, ent = choose(logits, i, done)
        h, cache = model.forward_cached(tok[:, None], (prompt_len + i)[:, None], key_mask,
                                        cache, p + i)
        return (cache, model.logits(h[:, 0]), done_next), (tok, valid, lp, ent)

    done = jnp.zeros((b,), jnp.bool_)
    (cache, logits, done), (toks, valid, lps, ents) = jax.lax.scan(
        step, (cache, logits, done), jnp.arange(n - 1))
    last, _, last_valid, last_lp, last_ent = choose(logits, n - 1, done)
    cat = lambda xs, x: jnp.concatenate([xs.T, x[:, None]], axis=1)  # noqa: E731
    completion, cmask = cat(toks, last), cat(valid, last_valid)
    return (jnp.concatenate([prompt_tokens, completion], axis=1), completion, cmask,
            cat(lps, last_lp), cat(ents, last_ent))
