"""On an NVIDIA GPU only (``pytest -m gpu``; skipped elsewhere): cuDNN attention against the einsum
path (forward and KV-cache decoding agree; gradients do not, a known failure), and float32 on the
GPU against the CPU (XLA's default float32 matmuls on the GPU use TF32).

Run by ``scripts/gpu_check.sh`` on a GPU; the figures are in docs/benchmarks.md.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from llm_check.config import preset
from llm_check.logprobs import token_logprobs
from llm_check.model import Qwen3, default_positions

pytestmark = [pytest.mark.gpu, pytest.mark.usefixtures("f32"),
              pytest.mark.skipif(jax.default_backend() != "gpu", reason="needs a GPU")]

# cuDNN's shapes: head_dim a multiple of 8 (here Qwen3-0.6B's 128), GQA ratio 2 as in Qwen3-0.6B,
# an even sequence length (cuDNN's rule for a bias in training)
CFG = dataclasses.replace(preset("tiny"), vocab_size=512, hidden_size=256, intermediate_size=512,
                          num_attention_heads=4, num_key_value_heads=2, head_dim=128,
                          num_hidden_layers=3)
T = 16


def rows(seed=1):
    """Left-padded rows and one right-padded row."""
    ids = jax.random.randint(jax.random.key(seed), (4, T), 0, CFG.vocab_size, dtype=jnp.int32)
    mask = np.ones((4, T), np.int32)
    mask[1, :3] = 0
    mask[2, :8] = 0
    mask[3, 12:] = 0
    return ids, jnp.asarray(mask)


def model(attention, dtype=jnp.bfloat16, scan=False):
    return Qwen3(CFG, rngs=nnx.Rngs(0), init_std=0.3, dtype=dtype, attention=attention,
                 scan_layers=scan)


@nnx.jit
def forward(m, ids, mask):
    return m(ids, attention_mask=mask)


def ce(m, ids, mask):
    lp = token_logprobs(m, ids, mask)
    return -(lp * mask[:, 1:]).sum() / mask[:, 1:].sum()


def _cos(a, b) -> float:
    a, b = np.ravel(np.asarray(a, np.float64)), np.ravel(np.asarray(b, np.float64))
    return float(a @ b / np.linalg.norm(a) / np.linalg.norm(b))


def _loss_and_grad(loss, cfg, attention, dtype, init_std, ids, mask):
    """(loss, every parameter's gradient flattened into one float64 vector) of a fresh model."""
    m = Qwen3(cfg, rngs=nnx.Rngs(0), init_std=init_std, dtype=dtype, attention=attention)
    value, grads = nnx.jit(nnx.value_and_grad(loss))(m, ids, mask)
    return float(value), np.concatenate([np.ravel(x) for x in jax.tree.leaves(grads)]
                                        ).astype(np.float64)


@pytest.mark.parametrize("scan", [False, True], ids=["unrolled", "scan"])
def test_cudnn_attention_matches_the_einsum_path_in_bf16(scan):
    ids, mask = rows()
    ref = np.asarray(forward(model("einsum", scan=scan), ids, mask))
    out = np.asarray(forward(model("cudnn", scan=scan), ids, mask))
    real = np.asarray(mask).astype(bool)
    assert np.isfinite(out[real]).all()
    err = np.abs(out - ref)[real].max() / np.abs(ref[real]).max()
    print(f"cudnn vs einsum, bf16 logits at real tokens: max |diff| / max |logit| = {err:.2e}")
    assert err < 0.02  # measured 1.5e-2 on an H200; the CPU bf16 bound of test_llm_model.py


def test_cudnn_attention_decodes_through_the_kv_cache_like_the_einsum_path():
    ids, mask = rows(seed=2)
    p = 8
    mask = mask.at[:, p - 1].set(1)
    key_mask = jnp.concatenate([mask[:, :p], jnp.ones((4, T - p), jnp.int32)], axis=1)
    pos = default_positions(mask)

    def decode(m):
        @nnx.jit
        def step(m, tok, q_pos, cache, slot):
            h, cache = m.forward_cached(tok, q_pos, key_mask, cache, slot)
            return m.logits(h), cache

        logits, cache = step(m, ids[:, :p], pos[:, :p], m.init_cache(4, T), 0)
        out = [logits[:, -1]]
        for i in range(p, T):  # one query against the cache: cuDNN's non-training shape
            logits, cache = step(m, ids[:, i:i + 1], pos[:, i:i + 1], cache, i)
            out.append(logits[:, -1])
        return np.asarray(jnp.stack(out, 1))

    ref, out = decode(model("einsum")), decode(model("cudnn"))
    assert np.isfinite(out).all()
    err = np.abs(out - ref).max() / np.abs(ref).max()
    print(f"cudnn vs einsum, bf16 KV-cache decode: max |diff| / max |logit| = {err:.2e}")
    assert err < 0.02  # measured 1.7e-2 on an H200


@pytest.mark.xfail(strict=True, reason=(
    "on an H200 with jax 0.11.2 the cuDNN path's gradients were wrong: cosine 0.036 (init_std 0.02) "
    "and 0.097 (0.3) to the float32 gradient, where bf16 einsum gave 0.99995 and 0.9995; the "
    "forward matched (docs/log.md). Strict: a JAX that fixes it fails here, so auto can use cuDNN. "
    "Then the one-chunk LM head ran under jax.checkpoint, which it no longer does: if this XPASSes "
    "while the diagnosis' chunked cases fail, the checkpoint was the trigger"))
@pytest.mark.parametrize("init_std", [0.02, 0.3])
def test_cudnn_attention_gradients_in_bf16_are_as_close_to_float32_as_the_einsum_path(init_std):
    """The reference is the float32 einsum gradient; bf16 cuDNN must be about as close to it as
    bf16 einsum (init_std 0.3 saturates the softmax, where bf16 rounding itself moves gradients)."""
    ids, mask = rows(seed=3)
    cos = _cos

    def g(attention, dtype):
        return _loss_and_grad(ce, CFG, attention, dtype, init_std, ids, mask)

    l32, g32 = g("einsum", jnp.float32)
    le, ge = g("einsum", jnp.bfloat16)
    lc, gc = g("cudnn", jnp.bfloat16)
    print(f"init_std {init_std}: gradient cosine to float32 einsum: bf16 einsum {cos(ge, g32):.6f}, "
          f"bf16 cudnn {cos(gc, g32):.6f}, cudnn to einsum {cos(gc, ge):.6f}; loss rel diff to f32: "
          f"einsum {abs(le - l32) / abs(l32):.2e}, cudnn {abs(lc - l32) / abs(l32):.2e}")
    assert abs(lc - l32) / abs(l32) < 0.01
    assert cos(gc, g32) > cos(ge, g32) - 0.01


@pytest.mark.xfail(strict=False, reason="diagnosis of the failure above: which of these cases "
                   "fail tells where the fault is (run with -rxX to see XPASS/XFAIL per case)")
@pytest.mark.parametrize("layers", [1, 3])
@pytest.mark.parametrize("padded", [False, True], ids=["no-pad", "padded"])
@pytest.mark.parametrize("head", ["chunked", "full"])
def test_cudnn_gradient_diagnosis(layers, padded, head):
    """bf16 cuDNN gradient against the float32 einsum gradient, one hypothesis per axis: several
    cuDNN calls in one graph (layers), query rows that see no key (padded), and the LM head in
    4-position chunks under jax.checkpoint against plain full logits (head)."""
    cfg = dataclasses.replace(CFG, num_hidden_layers=layers)
    ids, mask = rows(seed=5)
    if not padded:
        mask = jnp.ones_like(mask)

    def loss(m, ids, mask):
        if head == "chunked":  # several chunks, so each is under jax.checkpoint (one chunk is not)
            lp = token_logprobs(m, ids, mask, chunk_size=4)
            return -(lp * mask[:, 1:]).sum() / mask[:, 1:].sum()
        logp = jax.nn.log_softmax(m(ids, attention_mask=mask)[:, :-1], axis=-1)
        lp = jnp.take_along_axis(logp, ids[:, 1:, None], axis=-1)[..., 0]
        return -(lp * mask[:, 1:]).sum() / mask[:, 1:].sum()

    _, g32 = _loss_and_grad(loss, cfg, "einsum", jnp.float32, 0.02, ids, mask)
    _, gc = _loss_and_grad(loss, cfg, "cudnn", jnp.bfloat16, 0.02, ids, mask)
    cos = _cos(g32, gc)
    print(f"layers {layers}, {'padded' if padded else 'no padding'}, {head} head: cosine {cos:.6f}")
    assert cos > 0.999


def _op_cases():
    b, t = 4, 16
    causal = jnp.tril(jnp.ones((t, t), bool))
    pad = np.ones((b, t), bool)
    pad[1, :3] = False
    pad[2, :8] = False
    left = jnp.asarray(pad)[:, None, :] & causal[None]
    full = jnp.broadcast_to(causal, (b, 1, t, t))
    return pad, {"is_causal": {"is_causal": True}, "causal mask [1,1,T,S]": {"mask": causal[None, None]},
                 "causal mask [B,1,T,S]": {"mask": full}, "left-padded causal mask": {"mask": left[:, None]},
                 "causal bias": {"bias": jnp.where(full, 0.0, -1e9).astype(jnp.bfloat16)}}


@pytest.mark.parametrize("kv_heads", [2, 4], ids=["gqa2", "mha"])
@pytest.mark.parametrize("case", list(_op_cases()[1]))
def test_dot_product_attention_alone_has_the_same_gradients_through_cudnn_and_xla(case, kv_heads):
    """The op alone is right (cosine 1.0000 for every case and q, k, v on an H200), so the failure
    above is in how the model's graph reaches it, not in the kernel on these shapes and masks."""
    pad, cases = _op_cases()
    kw = cases[case]
    ks = jax.random.split(jax.random.key(0), 4)
    q = jax.random.normal(ks[0], (4, 16, 4, 128), jnp.bfloat16)
    k = jax.random.normal(ks[1], (4, 16, kv_heads, 128), jnp.bfloat16)
    v = jax.random.normal(ks[2], (4, 16, kv_heads, 128), jnp.bfloat16)
    w = jax.random.normal(ks[3], (4, 16, 4, 128)) * jnp.asarray(pad)[:, :, None, None]  # no loss
    # at pad queries, which see no key at all

    def grads(impl):
        f = lambda q, k, v: (jax.nn.dot_product_attention(q, k, v, implementation=impl, **kw)  # noqa: E731
                             .astype(jnp.float32) * w).sum()
        return jax.jit(jax.grad(f, argnums=(0, 1, 2)))(q, k, v)

    for a, b in zip(grads("xla"), grads("cudnn"), strict=True):
        assert _cos(a, b) > 0.999


def test_float32_on_the_gpu_against_the_cpu():
    """XLA's default float32 matmul precision on the GPU, and "highest", against the CPU."""
    cfg = preset("tiny")
    m = Qwen3(cfg, rngs=nnx.Rngs(0), init_std=0.3)
    ids = jax.random.randint(jax.random.key(4), (4, 32), 0, cfg.vocab_size, dtype=jnp.int32)
    mask = jnp.ones_like(ids)
    cpu = jax.devices("cpu")[0]
    graphdef, state = nnx.split(m)
    with jax.default_device(cpu):
        ref = np.asarray(forward(nnx.merge(graphdef, jax.device_put(state, cpu)),
                                 jax.device_put(ids, cpu), jax.device_put(mask, cpu)))
    scale = np.abs(ref).max()
    default = np.abs(np.asarray(forward(m, ids, mask)) - ref).max() / scale
    with jax.default_matmul_precision("highest"):
        highest = np.abs(np.asarray(forward(m, ids, mask)) - ref).max() / scale
    print(f"float32 GPU vs CPU logits, max |diff| / max |logit|: default precision {default:.2e}, "
          f"highest {highest:.2e}")
    # measured on an H200 (jax 0.11.2): default 1.93e-3 (TF32 operands, 10-bit mantissa),
    # highest 9.5e-7 (float32 in another order)
    assert highest < 1e-5
    assert 5e-4 < default < 5e-3
