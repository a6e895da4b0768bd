"""KV-cache sampling: greedy == argmax of the cache-free model on a left-padded batch of prompts
of different lengths (the cache-free model is itself padding-invariant, test_llm_model.py), eos
stop and mask, determinism, top-p and temperature limits, bad settings."""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from llm_check.config import preset
from llm_check.model import Qwen3
from llm_check.sampling import sample
from theory.errors import InputError

pytestmark = pytest.mark.usefixtures("f32")

CFG = dataclasses.replace(preset("tiny"), vocab_size=128, hidden_size=32, intermediate_size=64,
                          num_attention_heads=4, num_key_value_heads=2, head_dim=16)
P, N = 7, 6
PAD = 0


@pytest.fixture(scope="module")
def model():
    with jax.enable_x64(False):
        yield Qwen3(CFG, rngs=nnx.Rngs(0), init_std=0.3)


def prompts():
    """Three LEFT-padded prompts of lengths 7, 4 and 1."""
    ids = np.asarray(jax.random.randint(jax.random.key(5), (3, P), 1, CFG.vocab_size), np.int32)
    lengths = np.array([7, 4, 1])
    mask = (np.arange(P)[None] >= P - lengths[:, None]).astype(np.int32)
    return np.where(mask == 1, ids, PAD), mask, lengths


def test_greedy_equals_argmax_of_the_cache_free_forward(model):
    ids, mask, _ = prompts()
    out = sample(model, ids, mask, jax.random.key(0), max_new_tokens=N, greedy=True,
                 eos_id=CFG.vocab_size - 1, pad_id=PAD)
    assert out.tokens.shape == (3, P + N) and out.completion.shape == (3, N)
    assert out.tokens.dtype == jnp.int32
    assert len(jax.tree.leaves(out)) == 6  # SampleOutput is a pytree
    np.testing.assert_array_equal(out.tokens[:, :P], ids)
    full_mask = np.concatenate([mask, np.ones((3, N), np.int32)], axis=1)
    logits = nnx.jit(lambda m, t, k: m(t, attention_mask=k))(model, out.tokens, full_mask)
    keep = np.asarray(out.completion_mask).astype(bool)  # row 2 hits the eos at step 3
    assert keep.sum() > 2 * N
    np.testing.assert_array_equal(np.argmax(logits[:, P - 1:-1], -1)[keep],
                                  np.asarray(out.completion)[keep])


def test_each_sequence_stops_at_its_first_eos(model):
    ids, mask, _ = prompts()
    free = sample(model, ids, mask, jax.random.key(0), max_new_tokens=N, greedy=True,
                  eos_id=-1, pad_id=PAD)  # -1: never emitted, so no sequence stops
    comp = np.asarray(free.completion)
    # make the token that sequence 0 emits at step 2 the eos; other rows stop where it first occurs
    eos = int(comp[0, 2])
    out = sample(model, ids, mask, jax.random.key(0), max_new_tokens=N, greedy=True, eos_id=eos,
                 pad_id=PAD)
    for b in range(3):
        hits = np.flatnonzero(comp[b] == eos)
        stop = hits[0] + 1 if hits.size else N
        np.testing.assert_array_equal(out.completion[b, :stop], comp[b, :stop])
        np.testing.assert_array_equal(out.completion[b, stop:], PAD)
        np.testing.assert_array_equal(out.completion_mask[b], np.arange(N) < stop)
        assert int(out.lengths[b]) == stop
    assert int(out.lengths[0]) <= 3 < N  # row 0 stopped early


def test_sampling_is_deterministic_per_key_and_varies_across_keys(model):
    ids, mask, _ = prompts()
    kw = dict(max_new_tokens=N, temperature=1.5, eos_id=CFG.vocab_size - 1)
    a = sample(model, ids, mask, jax.random.key(1), **kw)
    b = sample(model, ids, mask, jax.random.key(1), **kw)
    c = sample(model, ids, mask, jax.random.key(2), **kw)
    np.testing.assert_array_equal(a.completion, b.completion)
    assert not np.array_equal(a.completion, c.completion)


def test_tiny_top_p_or_temperature_reduce_to_greedy(model):
    ids, mask, _ = prompts()
    kw = dict(max_new_tokens=N, eos_id=CFG.vocab_size - 1)
    greedy = sample(model, ids, mask, jax.random.key(0), greedy=True, **kw).completion
    top = sample(model, ids, mask, jax.random.key(9), top_p=1e-6, temperature=2.0, **kw).completion
    cold = sample(model, ids, mask, jax.random.key(9), temperature=1e-4, **kw).completion
    np.testing.assert_array_equal(top, greedy)
    np.testing.assert_array_equal(cold, greedy)
    wide = sample(model, ids, mask, jax.random.key(9), top_p=0.999, temperature=2.0, **kw)
    assert not np.array_equal(wide.completion, greedy)


def test_bad_settings_raise_input_error(model):
    ids, mask, _ = prompts()
    kw = dict(max_new_tokens=N, eos_id=1)
    with pytest.raises(InputError, match="LEFT-padded"):
        sample(model, ids, mask[:, ::-1], jax.random.key(0), **kw)
    with pytest.raises(InputError, match="temperature"):
        sample(model, ids, mask, jax.random.key(0), temperature=0.0, **kw)
    with pytest.raises(InputError, match="top_p"):
        sample(model, ids, mask, jax.random.key(0), top_p=1.5, **kw)
    with pytest.raises(InputError, match="max_new_tokens"):
        sample(model, ids, mask, jax.random.key(0), max_new_tokens=0, eos_id=1)


@pytest.mark.parametrize("temperature", [1.0, 0.7])
def test_sampler_logprobs_and_entropy_are_those_of_the_law_it_drew_from(model, temperature):
    """The per-token log-probs the sampler returns equal a cache-free scoring of the sampled
    sequences at the same temperature, log softmax(z / T); 0 after a sequence stopped."""
    from llm_check.logprobs import token_logprobs_and_entropy

    ids, mask, _ = prompts()
    eos = 3
    out = sample(model, ids, mask, jax.random.key(2), max_new_tokens=N, temperature=temperature,
                 eos_id=eos, pad_id=PAD)
    attn = jnp.concatenate([jnp.asarray(mask), out.completion_mask], axis=1)
    lp, ent = token_logprobs_and_entropy(model, out.tokens, attn, temperature=temperature)
    m = np.asarray(out.completion_mask, bool)
    np.testing.assert_allclose(np.asarray(out.logprobs)[m], np.asarray(lp[:, P - 1:])[m],
                               rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(np.asarray(out.entropy)[m], np.asarray(ent[:, P - 1:])[m],
                               rtol=1e-5, atol=1e-5)
    assert np.all(np.asarray(out.logprobs)[~m] == 0)


def test_one_prefill_per_prompt_equals_repeated_prompts(model):
    """repeat=G prefills each prompt once and copies its cache: the same completions (same key)
    and log-probs as sampling the prompts repeated G times."""
    ids, mask, _ = prompts()
    kw = dict(max_new_tokens=N, temperature=0.9, eos_id=3, pad_id=PAD)
    once = sample(model, ids, mask, jax.random.key(4), repeat=3, **kw)
    rows = sample(model, np.repeat(ids, 3, axis=0), np.repeat(mask, 3, axis=0),
                  jax.random.key(4), **kw)
    np.testing.assert_array_equal(once.tokens, rows.tokens)
    np.testing.assert_array_equal(once.completion_mask, rows.completion_mask)
    np.testing.assert_allclose(once.logprobs, rows.logprobs, rtol=1e-5, atol=1e-5)
    assert once.tokens.shape == (9, P + N)
    assert len({tuple(r) for r in np.asarray(once.completion)}) > 3  # the copies differ


@pytest.mark.parametrize("temperature", [1.0, 0.8])
def test_grouped_logprobs_equal_the_full_forward_with_gradients(model, temperature):
    """One prompt pass per group (KV cache copied to the G rows) gives the log-probs, entropies
    and parameter gradients of the full forward over the concatenated sequences."""
    from llm_check.logprobs import grouped_completion_logprobs, token_logprobs_and_entropy

    ids, mask, _ = prompts()
    g = 3
    out = sample(model, ids, mask, jax.random.key(9), max_new_tokens=N, temperature=1.0,
                 eos_id=3, pad_id=PAD, repeat=g)
    attn = jnp.concatenate([jnp.repeat(jnp.asarray(mask), g, axis=0), out.completion_mask], 1)
    cm = out.completion_mask.astype(jnp.float32)
    graphdef, params = nnx.split(model)

    @jax.jit  # compiled: op by op, the first parametrization took ~20 s
    def full(q):
        lp, ent = token_logprobs_and_entropy(nnx.merge(graphdef, q), out.tokens, attn,
                                             temperature=temperature)
        return lp[:, P - 1:], ent[:, P - 1:]

    @jax.jit
    def grouped(q):
        return grouped_completion_logprobs(nnx.merge(graphdef, q), jnp.asarray(ids),
                                           jnp.asarray(mask), out.completion,
                                           temperature=temperature, with_entropy=True)

    (lp_a, ent_a), (lp_b, ent_b) = full(params), grouped(params)
    m = np.asarray(out.completion_mask, bool)
    np.testing.assert_allclose(np.asarray(lp_b)[m], np.asarray(lp_a)[m], rtol=2e-5, atol=2e-5)
    np.testing.assert_allclose(np.asarray(ent_b)[m], np.asarray(ent_a)[m], rtol=2e-5, atol=2e-5)
    ga = jax.grad(lambda q: jnp.sum(full(q)[0] * cm))(params)
    gb = jax.grad(lambda q: jnp.sum(grouped(q)[0] * cm))(params)
    for x, y in zip(jax.tree.leaves(ga), jax.tree.leaves(gb)):
        np.testing.assert_allclose(np.asarray(y), np.asarray(x), rtol=1e-4, atol=1e-5)
