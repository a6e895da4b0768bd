"""Qwen3 in NNX: padding invariance, KV cache == cache-free, remat, bf16, chunked log-probs, training."""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

from llm_check.config import preset
from llm_check.logprobs import token_logprobs, token_logprobs_and_entropy
from llm_check.model import Qwen3, default_positions, rope
from tests.jaxprs import CHECKPOINT, count, equations

pytestmark = pytest.mark.usefixtures("f32")

CFG = dataclasses.replace(preset("tiny"), vocab_size=128, hidden_size=32, intermediate_size=64,
                          num_attention_heads=4, num_key_value_heads=2, head_dim=16)
B, T = 3, 10


def make_model(cfg=CFG, seed=0, **kw):
    return Qwen3(cfg, rngs=nnx.Rngs(seed), init_std=0.3, **kw)


def batch(seed=1):
    ids = jax.random.randint(jax.random.key(seed), (B, T), 0, CFG.vocab_size, dtype=jnp.int32)
    lengths = np.array([T, T - 3, T - 6])
    left = (np.arange(T)[None] >= T - lengths[:, None]).astype(np.int32)  # left-padded
    return ids, jnp.asarray(left), lengths


@nnx.jit
def forward(model, ids, mask):
    return model(ids, attention_mask=mask)


def test_logits_are_float32_and_padding_side_does_not_matter():
    model = make_model()
    ids, left, lengths = batch()
    out_left = forward(model, ids, left)
    assert out_left.dtype == jnp.float32 and out_left.shape == (B, T, CFG.vocab_size)
    # the same sequences right-padded: real tokens first, so (causal) the unpadded logits
    ids_right = jnp.stack([jnp.roll(ids[b], -(T - n)) for b, n in enumerate(lengths)])
    out_right = forward(model, ids_right, left[:, ::-1])
    for b, n in enumerate(lengths):
        np.testing.assert_allclose(out_left[b, T - n:], out_right[b, :n], rtol=0, atol=2e-5)
    assert np.abs(np.asarray(out_left[0])).mean() > 0.5  # non-trivial logits


def test_kv_cache_decoding_matches_cache_free_forward_at_every_position():
    model = make_model()
    ids, left, _ = batch()
    p = 6  # prefill the first 6 columns (prompts of lengths 6, 3, 0+...), decode the rest
    out, left = decode_all(model, ids, left, p)  # every prompt ends at column p-1
    full = forward(model, ids, left)
    real = np.asarray(left[:, :p]).astype(bool)
    np.testing.assert_allclose(np.asarray(out[:, :p])[real], np.asarray(full[:, :p])[real],
                               rtol=0, atol=2e-5)
    np.testing.assert_allclose(out[:, p:], full[:, p:], rtol=0, atol=2e-5)


def _ce(model, ids, mask):
    lp = token_logprobs(model, ids, mask, chunk_size=4)
    return -(lp * mask[:, 1:]).sum() / mask[:, 1:].sum()


def test_chunked_logprobs_entropy_and_remat_gradients_equal_the_full_softmax():
    model = make_model()
    ids, left, _ = batch()
    logp = jax.nn.log_softmax(forward(model, ids, left), axis=-1)
    want = jnp.take_along_axis(logp[:, :-1], ids[:, 1:, None], axis=-1)[..., 0]
    want_ent = -(jnp.exp(logp) * logp).sum(-1)[:, :-1]
    lp, ent = nnx.jit(token_logprobs_and_entropy, static_argnames="chunk_size")(
        model, ids, left, chunk_size=4)  # 4 does not divide T - 1 = 9: a padded last chunk
    assert lp.shape == (B, T - 1) and lp.dtype == jnp.float32
    np.testing.assert_allclose(lp, want, rtol=0, atol=2e-5)
    np.testing.assert_allclose(ent, want_ent, rtol=0, atol=2e-5)

    def full_ce(model, ids, mask):
        logp = jax.nn.log_softmax(model(ids, attention_mask=mask), axis=-1)
        lp = jnp.take_along_axis(logp[:, :-1], ids[:, 1:, None], axis=-1)[..., 0]
        return -(lp * mask[:, 1:]).sum() / mask[:, 1:].sum()

    # chunked and checkpointed LM head, with nnx.remat on every layer, against the plain softmax
    l_full, g_full = nnx.jit(nnx.value_and_grad(full_ce))(model, ids, left)
    l_chunk, g_chunk = nnx.jit(nnx.value_and_grad(_ce))(make_model(remat=True), ids, left)
    np.testing.assert_allclose(l_chunk, l_full, rtol=1e-6, atol=0)
    for a, b in zip(jax.tree.leaves(g_chunk), jax.tree.leaves(g_full)):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)


def test_training_through_the_cache_free_path_lowers_the_loss():
    model = make_model(seed=3)
    ids, left, _ = batch(seed=4)
    opt = nnx.Optimizer(model, optax.adamw(3e-3), wrt=nnx.Param)

    @nnx.jit
    def train_step(model, opt, ids, mask):
        loss, grads = nnx.value_and_grad(_ce)(model, ids, mask)
        opt.update(model, grads)
        return loss

    losses = [float(train_step(model, opt, ids, left)) for _ in range(30)]
    assert losses[-1] < 0.3 * losses[0], losses


def test_bf16_compute_keeps_float32_weights_and_logits():
    ids, left, _ = batch()
    ref = forward(make_model(), ids, left)
    model = make_model(dtype=jnp.bfloat16)
    assert model.embed_tokens[...].dtype == jnp.float32
    out = forward(model, ids, left)
    assert out.dtype == jnp.float32
    real = np.asarray(left).astype(bool)
    err = np.abs(np.asarray(out) - np.asarray(ref))[real].max()
    assert err < 0.05 * np.abs(np.asarray(ref))[real].max(), err  # bf16 rounding, not a bug


def test_rope_angles_are_float32_even_for_bf16_inputs():
    x = jnp.ones((1, 2, 1, 16), jnp.bfloat16)
    out = rope(x, jnp.array([[256, 257]]), 1e6)
    assert out.dtype == jnp.bfloat16
    assert not np.array_equal(np.asarray(out[0, 0], np.float32), np.asarray(out[0, 1], np.float32))


@pytest.mark.slow
def test_qwen3_06b_preset_forward_and_training_step_on_cpu():
    """Real size (596M parameters, random weights), 1 x 256 tokens: a forward pass and one AdamW
    step (jit, donated buffers, chunked LM head). Needs about 10 GB; prints time and peak RSS."""
    import resource
    import time

    from llm_check.bench import jax_train_step

    cfg = preset("qwen3-0.6b")
    step, graphdef, params, opt_state = jax_train_step(cfg, donate=True)  # memory
    model = nnx.merge(graphdef, params)
    ids = jax.random.randint(jax.random.key(0), (1, 256), 0, cfg.vocab_size, dtype=jnp.int32)
    mask = jnp.ones_like(ids)
    fwd = nnx.jit(lambda m, x, k: token_logprobs(m, x, k))
    t0 = time.perf_counter()
    lp = fwd(model, ids, mask).block_until_ready()
    t_fwd_first = time.perf_counter() - t0
    t0 = time.perf_counter()
    lp = fwd(model, ids, mask).block_until_ready()
    t_fwd = time.perf_counter() - t0
    del model  # the step owns (and donates) the parameters from here on
    t0 = time.perf_counter()
    params, opt_state, loss0 = step(params, opt_state, ids, mask)
    loss0.block_until_ready()
    t_step_first = time.perf_counter() - t0
    t0 = time.perf_counter()
    params, opt_state, loss1 = step(params, opt_state, ids, mask)
    loss1.block_until_ready()
    t_step = time.perf_counter() - t0
    peak_gb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    print(f"\nqwen3-0.6b 1x256 f32: forward {t_fwd:.1f} s (first call {t_fwd_first:.1f} s), "
          f"train step {t_step:.1f} s (first call {t_step_first:.1f} s), peak RSS {peak_gb:.1f} GB")
    assert np.isfinite(np.asarray(lp)).all()
    np.testing.assert_allclose(-float(lp.mean()), float(loss0), rtol=1e-4, atol=0)
    assert float(loss1) < float(loss0)  # one AdamW step on the same batch lowers its loss


# -- attention through jax.nn.dot_product_attention, and the layer scan -------------------------

# the odd shapes: GQA ratio 3 (6 query heads on 2 key/value heads), head_dim 20 != 48 / 6, 3 layers
ODD = dataclasses.replace(CFG, hidden_size=48, num_attention_heads=6, num_key_value_heads=2,
                          head_dim=20, num_hidden_layers=3)


def odd_batch(seed=1):
    """Left-padded rows and one right-padded row (pad queries and pad keys on both sides)."""
    ids = jax.random.randint(jax.random.key(seed), (4, T), 0, ODD.vocab_size, dtype=jnp.int32)
    mask = np.ones((4, T), np.int32)
    mask[1, :3] = 0
    mask[2, :6] = 0
    mask[3, 7:] = 0  # right padding
    return ids, jnp.asarray(mask)


def decode_all(model, ids, mask, p):
    """Prefill columns [0, p) into the KV cache, then decode one column at a time: logits [B, T, V]."""
    b, t = ids.shape
    mask = mask.at[:, p - 1].set(1)
    key_mask = jnp.concatenate([mask[:, :p], jnp.ones((b, t - p), jnp.int32)], axis=1)
    positions = default_positions(mask)

    @nnx.jit
    def step(model, tok, pos, cache, slot):
        h, cache = model.forward_cached(tok, pos, key_mask, cache, slot)
        return model.logits(h), cache

    logits, cache = step(model, ids[:, :p], positions[:, :p], model.init_cache(b, t), 0)
    out = [logits]
    for i in range(p, t):
        logits, cache = step(model, ids[:, i:i + 1], positions[:, i:i + 1], cache, i)
        out.append(logits)
    return jnp.concatenate(out, axis=1), mask


@pytest.mark.parametrize("scan", [False, True], ids=["unrolled", "scan"])
def test_dot_product_attention_matches_the_einsum_path_on_odd_shapes(scan):
    ids, mask = odd_batch()
    ref_model = make_model(ODD)
    model = make_model(ODD, attention="dot_product", scan_layers=scan)
    ref, out = forward(ref_model, ids, mask), forward(model, ids, mask)
    assert np.abs(np.asarray(ref)).mean() > 0.5
    np.testing.assert_allclose(out, ref, rtol=0, atol=1e-5)  # every position, pads included
    ref_dec, m = decode_all(ref_model, ids, mask, p=6)
    out_dec, _ = decode_all(model, ids, mask, p=6)
    np.testing.assert_allclose(out_dec, ref_dec, rtol=0, atol=1e-5)
    # and the cache path still computes the cache-free logits at real tokens
    real = np.asarray(m).astype(bool)
    np.testing.assert_allclose(np.asarray(out_dec)[real], np.asarray(forward(model, ids, m))[real],
                               rtol=0, atol=2e-5)


def test_dot_product_attention_in_bf16_stays_close_to_the_einsum_path():
    ids, mask = odd_batch()
    ref = forward(make_model(ODD, dtype=jnp.bfloat16), ids, mask)
    out = forward(make_model(ODD, dtype=jnp.bfloat16, attention="dot_product"), ids, mask)
    assert out.dtype == jnp.float32
    # the same bf16 matmuls with float32 scores and softmax on both sides: equal up to rounding
    assert np.abs(np.asarray(out - ref)).max() < 0.02 * np.abs(np.asarray(ref)).max()


def test_scanned_layers_hold_the_same_weights_stacked_and_give_the_same_logits_and_grads():
    ids, mask = odd_batch(seed=2)
    unrolled = make_model(ODD)
    scanned = make_model(ODD, scan_layers=True)
    q = scanned.layers.self_attn.q_proj.kernel[...]
    assert q.shape == (3, 48, 6 * 20)
    for i in range(3):
        np.testing.assert_array_equal(q[i], unrolled.layers[i].self_attn.q_proj.kernel[...])
    ref, out = forward(unrolled, ids, mask), forward(scanned, ids, mask)
    np.testing.assert_allclose(out, ref, rtol=0, atol=1e-5)
    ref_dec, _ = decode_all(unrolled, ids, mask, p=5)
    out_dec, _ = decode_all(scanned, ids, mask, p=5)
    np.testing.assert_allclose(out_dec, ref_dec, rtol=0, atol=1e-5)

    grad = nnx.jit(nnx.value_and_grad(_ce))
    l_ref, g_ref = grad(unrolled, ids, mask)
    for model in (scanned, make_model(ODD, scan_layers=True, remat=True)):
        l_out, g_out = grad(model, ids, mask)
        np.testing.assert_allclose(l_out, l_ref, rtol=1e-6, atol=0)
        for i in range(3):
            np.testing.assert_allclose(g_out.layers.mlp.down_proj.kernel[...][i],
                                       g_ref.layers[i].mlp.down_proj.kernel[...],
                                       rtol=1e-4, atol=1e-6)
        np.testing.assert_allclose(g_out.embed_tokens[...], g_ref.embed_tokens[...],
                                   rtol=1e-4, atol=1e-6)


def test_an_unknown_attention_implementation_is_rejected():
    from theory.errors import InputError

    with pytest.raises(InputError, match="attention='flash'"):
        make_model(attention="flash")


def _train_jaxpr(model, ids, mask, chunk_size=64):
    graphdef, params = nnx.split(model, nnx.Param)

    def loss(p):
        lp = token_logprobs(nnx.merge(graphdef, p), ids, mask, chunk_size=chunk_size)
        return -(lp * mask[:, 1:]).sum()

    return jax.make_jaxpr(jax.value_and_grad(loss))(params).jaxpr


@pytest.mark.parametrize("scan", [False, True])
def test_every_product_of_the_training_step_contracts_one_dimension(scan):
    """The projections and the LM head flatten [B, T, in] to [B*T, in], so each weight gradient
    contracts the one N = B*T dimension. Contracting B and T as two dimensions made XLA:CPU write
    a transposed copy of every weight gradient's input first: 13% of the CPU train step
    (docs/benchmarks.md). Attention's products have batch dimensions and contract one too."""
    ids, left, _ = batch()
    dots = [e for e in equations(_train_jaxpr(make_model(scan_layers=scan), ids, left))
            if e.primitive.name == "dot_general"]
    assert len(dots) >= 3 * 9  # forward, input and weight gradients of 7 projections + attention
    for e in dots:
        (lhs_contract, rhs_contract), _ = e.params["dimension_numbers"]
        assert len(lhs_contract) == len(rhs_contract) == 1, e


def test_the_lm_head_is_recomputed_only_when_the_sequence_takes_several_chunks():
    """One chunk: its logits are alive at the end of the forward pass whether kept or recomputed,
    so the backward pass keeps them (no checkpoint); several chunks: each is recomputed."""
    ids, left, _ = batch()
    model = make_model()

    def checkpoints(chunk_size):
        return count(_train_jaxpr(model, ids, left, chunk_size), CHECKPOINT)

    assert checkpoints(T - 1) == 0 and checkpoints(64) == 0
    assert checkpoints(4) >= 1
