"""Qwen3 (dense) in Flax NNX, the whole model in this file, read top to bottom.

Architecture (docs/qwen3.md): token embedding -> N x [RMSNorm -> attention -> residual,
RMSNorm -> SwiGLU MLP -> residual] -> final RMSNorm -> tied or untied LM head. Attention has
per-head RMSNorm on q and k (``q_norm``/``k_norm``) applied BEFORE rotate-half RoPE, and grouped-query
attention (``num_attention_heads / num_key_value_heads`` query heads share one k/v head). Note that
``q_proj`` maps hidden -> heads * head_dim, which differs from hidden when head_dim != hidden/heads.

Two paths share the same layers:

- Cache-free (``__call__``, ``hidden``, ``logits``): the training path. It takes an attention mask
  (1 = real token, padding on either side) and differentiates.
- KV cache (``init_cache``, ``forward_cached``): prefill writes a whole prompt into a
  preallocated cache at slot 0, decode writes one token at slot ``s``; every shape is static, so each
  is compiled once per (batch, cache length). ``sampling.py`` drives it.

Options of the constructor (both default to what is fastest on CPU, docs/benchmarks.md):

- ``attention``: ``"einsum"`` (the hand-written grouped einsum + float32 softmax below),
  ``"dot_product"`` (``jax.nn.dot_product_attention`` with ``implementation=None``: JAX's choice,
  which in jax 0.10 is always its XLA implementation) or ``"cudnn"`` (the same call with
  ``implementation="cudnn"``: cuDNN fused flash attention, NVIDIA GPUs and bf16/fp16 compute only;
  the boolean mask goes to cuDNN as a bias). All compute softmax in float32 with finite masking.
  Do not train through ``"cudnn"``: on an H200 (jax 0.11.2) its forward and KV-cache decoding
  matched ``"einsum"`` in bf16, but its gradients in this model did not (cosine 0.04 to the
  float32 gradient; ``jax.nn.dot_product_attention`` alone, on the same shapes and masks, gave
  correct gradients). tests/test_llm_gpu.py holds the check, marked as a known failure.
- ``scan_layers``: the decoder layers' parameters are stacked on a leading axis of length
  ``num_hidden_layers`` (``layers.self_attn.q_proj.kernel`` is [L, in, out]) and applied with one
  ``jax.lax.scan``, so XLA compiles one layer instead of L. The KV cache is then one stacked
  ``(k, v)`` pair [L, B, S, K, hd] instead of a list of L pairs. ``weights.py`` maps HF tensors to
  either layout. Initialization draws the same random numbers in the same order either way, so a
  scanned and an unrolled model made with the same ``Rngs`` hold the same weights.

Numerics: RMSNorm, RoPE angles, softmax and logits in float32 whatever the compute dtype; master
weights in ``param_dtype`` (float32) and cast to ``dtype`` (float32 or bfloat16) at use.
Weights are stored (in, out) so that a layer computes ``x @ kernel``; HF stores (out, in), and
``weights.py`` transposes. Simplifications: no dropout, no sliding window, no rope scaling, no
attention bias (``config.py`` rejects configs that need them). Positions default to
``cumsum(mask) - 1`` so a left-padded sequence gets the same logits as the unpadded one.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from llm_check.config import Qwen3Config
from theory.errors import InputError

ATTENTION = ("einsum", "dot_product", "cudnn")
_MASKED = -1e30  # finite, so a fully masked row (a pad query) gives a uniform row, never NaN


class RMSNorm(nnx.Module):
    """``x / rms(x) * weight``, computed in float32 (Qwen3RMSNorm)."""

    def __init__(self, dim: int, eps: float, *, param_dtype):
        self.weight = nnx.Param(jnp.ones((dim,), param_dtype))
        self.eps = eps

    def __call__(self, x):
        x32 = x.astype(jnp.float32)
        y = x32 * jax.lax.rsqrt(jnp.mean(x32 * x32, axis=-1, keepdims=True) + self.eps)
        return (y * self.weight[...].astype(jnp.float32)).astype(x.dtype)


def flat_matmul(x, w, **kw):
    """``x @ w`` for x [..., in], w [in, out], with x flattened to [N, in] for the product. The
    weight gradient is then a dot with one contracting dimension (N), which XLA:CPU runs straight
    off the activations; with [B, T, in] it contracts two (B and T) and first writes a transposed
    copy of the incoming gradient (13% of the CPU training step of ``python -m llm_check.bench``;
    docs/benchmarks.md). ``kw`` go to ``jnp.matmul`` (``preferred_element_type``)."""
    y = jnp.matmul(x.reshape(-1, x.shape[-1]), w, **kw)
    return y.reshape(*x.shape[:-1], w.shape[-1])


class Linear(nnx.Module):
    """Bias-free ``x @ kernel`` with kernel (in, out), cast to the compute dtype at use
    (``flat_matmul``)."""

    def __init__(self, d_in: int, d_out: int, *, rngs: nnx.Rngs, dtype, param_dtype, std: float):
        self.kernel = nnx.Param(std * jax.random.normal(rngs.params(), (d_in, d_out), param_dtype))
        self.dtype = dtype

    def __call__(self, x):
        return flat_matmul(x.astype(self.dtype), self.kernel[...].astype(self.dtype))


def rope(x, positions, theta: float):
    """Rotate-half RoPE (not interleaved). x [B, T, H, D], positions int [B, T]; angles in f32."""
    d = x.shape[-1]
    inv_freq = 1.0 / (theta ** (jnp.arange(0, d, 2, dtype=jnp.float32) / d))
    angles = positions.astype(jnp.float32)[..., None] * inv_freq  # [B, T, D/2]
    cos = jnp.cos(jnp.concatenate([angles, angles], -1))[:, :, None, :]
    sin = jnp.sin(jnp.concatenate([angles, angles], -1))[:, :, None, :]
    x32 = x.astype(jnp.float32)
    rotated = jnp.concatenate([-x32[..., d // 2:], x32[..., : d // 2]], -1)
    return (x32 * cos + rotated * sin).astype(x.dtype)


class Attention(nnx.Module):
    def __init__(self, cfg: Qwen3Config, *, rngs: nnx.Rngs, dtype, param_dtype, std: float,
                 attention: str = "einsum"):
        h, k, d = cfg.num_attention_heads, cfg.num_key_value_heads, cfg.head_dim
        lin = dict(rngs=rngs, dtype=dtype, param_dtype=param_dtype, std=std)
        self.q_proj = Linear(cfg.hidden_size, h * d, **lin)
        self.k_proj = Linear(cfg.hidden_size, k * d, **lin)
        self.v_proj = Linear(cfg.hidden_size, k * d, **lin)
        self.o_proj = Linear(h * d, cfg.hidden_size, **lin)
        self.q_norm = RMSNorm(d, cfg.rms_norm_eps, param_dtype=param_dtype)
        self.k_norm = RMSNorm(d, cfg.rms_norm_eps, param_dtype=param_dtype)
        self.num_heads, self.num_kv_heads, self.head_dim = h, k, d
        self.rope_theta = cfg.rope_theta
        self.attention = attention

    def __call__(self, x, positions, mask, cache=None, slot=0):
        """x [B, T, D]; mask bool [B, T, S] (query t may see key s). With ``cache = (k, v)``, each
        [B, S, K, hd], this step's k/v are written at ``slot`` and attention runs over the cache."""
        b, t, _ = x.shape
        q = self.q_norm(self.q_proj(x).reshape(b, t, self.num_heads, self.head_dim))
        k = self.k_norm(self.k_proj(x).reshape(b, t, self.num_kv_heads, self.head_dim))
        v = self.v_proj(x).reshape(b, t, self.num_kv_heads, self.head_dim)
        q = rope(q, positions, self.rope_theta)
        k = rope(k, positions, self.rope_theta)
        if cache is not None:
            k = jax.lax.dynamic_update_slice_in_dim(cache[0], k.astype(cache[0].dtype), slot, axis=1)
            v = jax.lax.dynamic_update_slice_in_dim(cache[1], v.astype(cache[1].dtype), slot, axis=1)
            cache = (k, v)
        if self.attention != "einsum":
            out = jax.nn.dot_product_attention(
                q, k.astype(q.dtype), v.astype(q.dtype), mask=mask[:, None],
                scale=self.head_dim ** -0.5,
                implementation=None if self.attention == "dot_product" else "cudnn")
            return self.o_proj(out.reshape(b, t, -1)), cache
        # Grouped-query attention with the G query heads of a key-value head stacked along the
        # query axis: row r = group * T + t of [B, K, G*T, hd] (head h = kv_head * G + group). Every
        # product then contracts one dimension, in the backward pass too (dK sums over G*T rows).
        kv, g, hd = self.num_kv_heads, self.num_heads // self.num_kv_heads, self.head_dim
        q = q.reshape(b, t, kv, g, hd).transpose(0, 2, 3, 1, 4).reshape(b, kv, g * t, hd)
        k = k.astype(q.dtype).transpose(0, 2, 1, 3)  # [B, K, S, hd]
        v = v.transpose(0, 2, 1, 3)
        scores = jnp.einsum("bkrd,bksd->bkrs", q, k,
                            preferred_element_type=jnp.float32) * hd ** -0.5
        scores = jnp.where(jnp.tile(mask, (1, g, 1))[:, None], scores, _MASKED)
        probs = jax.nn.softmax(scores, axis=-1).astype(v.dtype)
        out = jnp.einsum("bkrs,bksd->bkrd", probs, v)
        out = out.reshape(b, kv, g, t, hd).transpose(0, 3, 1, 2, 4).reshape(b, t, -1)
        return self.o_proj(out), cache


class MLP(nnx.Module):
    """SwiGLU: ``down(silu(gate(x)) * up(x))``."""

    def __init__(self, cfg: Qwen3Config, *, rngs: nnx.Rngs, dtype, param_dtype, std: float):
        lin = dict(rngs=rngs, dtype=dtype, param_dtype=param_dtype, std=std)
        self.gate_proj = Linear(cfg.hidden_size, cfg.intermediate_size, **lin)
        self.up_proj = Linear(cfg.hidden_size, cfg.intermediate_size, **lin)
        self.down_proj = Linear(cfg.intermediate_size, cfg.hidden_size, **lin)

    def __call__(self, x):
        return self.down_proj(jax.nn.silu(self.gate_proj(x)) * self.up_proj(x))


class DecoderLayer(nnx.Module):
    def __init__(self, cfg: Qwen3Config, *, rngs: nnx.Rngs, dtype, param_dtype, std: float,
                 attention: str = "einsum"):
        kw = dict(rngs=rngs, dtype=dtype, param_dtype=param_dtype, std=std)
        self.input_layernorm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps, param_dtype=param_dtype)
        self.self_attn = Attention(cfg, **kw, attention=attention)
        self.post_attention_layernorm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps,
                                                param_dtype=param_dtype)
        self.mlp = MLP(cfg, **kw)

    def __call__(self, x, positions, mask, cache=None, slot=0):
        a, cache = self.self_attn(self.input_layernorm(x), positions, mask, cache, slot)
        x = x + a
        x = x + self.mlp(self.post_attention_layernorm(x))
        return x, cache


def _layer_step(layer, x, positions, mask):
    """One layer without a cache, a free function so that ``nnx.remat`` can wrap it."""
    return layer(x, positions, mask)[0]


_layer_step_remat = nnx.remat(_layer_step)


def stack_layers(layers) -> DecoderLayer:
    """One ``DecoderLayer`` whose every variable is the stack (axis 0) of ``layers``' variables."""
    graphdef = nnx.graphdef(layers[0])
    states = [nnx.state(layer) for layer in layers]
    return nnx.merge(graphdef, jax.tree.map(lambda *xs: jnp.stack(xs), *states))


def default_positions(attention_mask):
    """``cumsum(mask) - 1`` clipped at 0: real tokens count 0, 1, ... whatever the padding."""
    return jnp.maximum(jnp.cumsum(attention_mask.astype(jnp.int32), axis=-1) - 1, 0)


class Qwen3(nnx.Module):
    def __init__(self, config: Qwen3Config, *, rngs: nnx.Rngs, dtype=jnp.float32,
                 param_dtype=jnp.float32, remat: bool = False, init_std: float = 0.02,
                 attention: str = "einsum", scan_layers: bool = False):
        if attention not in ATTENTION:
            raise InputError(f"attention={attention!r}: choose one of {', '.join(ATTENTION)}")
        self.config = config
        self.dtype = dtype
        self.remat = remat
        self.attention = attention
        self.scan_layers = bool(scan_layers)
        kw = dict(rngs=rngs, dtype=dtype, param_dtype=param_dtype, std=init_std)
        self.embed_tokens = nnx.Param(
            init_std * jax.random.normal(rngs.params(), (config.vocab_size, config.hidden_size),
                                         param_dtype))
        layers = [DecoderLayer(config, **kw, attention=attention)
                  for _ in range(config.num_hidden_layers)]
        self.layers = stack_layers(layers) if self.scan_layers else nnx.List(layers)
        self.norm = RMSNorm(config.hidden_size, config.rms_norm_eps, param_dtype=param_dtype)
        if not config.tie_word_embeddings:
            self.lm_head = Linear(config.hidden_size, config.vocab_size, **kw)

    # -- cache-free path (training) -------------------------------------------------------------

    def hidden(self, tokens, positions=None, attention_mask=None):
        """Final-normed hidden states [B, T, D] in the compute dtype."""
        b, t = tokens.shape
        if attention_mask is None:
            attention_mask = jnp.ones((b, t), jnp.bool_)
        attention_mask = attention_mask.astype(jnp.bool_)
        if positions is None:
            positions = default_positions(attention_mask)
        causal = jnp.tril(jnp.ones((t, t), jnp.bool_))
        mask = causal[None] & attention_mask[:, None, :]
        x = self.embed(tokens)
        if self.scan_layers:
            graphdef, stacked = nnx.split(self.layers)

            def body(x, layer_state):
                return _layer_step(nnx.merge(graphdef, layer_state), x, positions, mask), None

            x, _ = jax.lax.scan(jax.checkpoint(body) if self.remat else body, x, stacked)
            return self.norm(x)
        for layer in self.layers:
            x = (_layer_step_remat if self.remat else _layer_step)(layer, x, positions, mask)
        return self.norm(x)

    def logits(self, hidden):
        """float32 logits [..., V] from hidden states (tied: ``hidden @ embed_tokens.T``)."""
        if self.config.tie_word_embeddings:
            w = self.embed_tokens[...].astype(self.dtype).T
        else:
            w = self.lm_head.kernel[...].astype(self.dtype)
        return flat_matmul(hidden.astype(self.dtype), w, preferred_element_type=jnp.float32)

    def __call__(self, tokens, positions=None, attention_mask=None):
        """float32 logits [B, T, V]; tokens int32 [B, T], attention_mask [B, T] (1 = real)."""
        return self.logits(self.hidden(tokens, positions, attention_mask))

    def embed(self, tokens):
        return jnp.take(self.embed_tokens[...], tokens, axis=0).astype(self.dtype)

    # -- KV-cache path (sampling) ---------------------------------------------------------------

    def init_cache(self, batch: int, length: int, dtype=None):
        """Zeroed (k, v) per layer, each [B, length, K, head_dim]; with ``scan_layers`` one stacked
        pair, each [L, B, length, K, head_dim]."""
        c = self.config
        shape = (batch, length, c.num_key_value_heads, c.head_dim)
        dt = dtype or self.dtype
        if self.scan_layers:
            shape = (c.num_hidden_layers, *shape)
            return jnp.zeros(shape, dt), jnp.zeros(shape, dt)
        return [(jnp.zeros(shape, dt), jnp.zeros(shape, dt)) for _ in range(c.num_hidden_layers)]

    def forward_cached(self, tokens, positions, key_mask, cache, slot):
        """Run ``tokens`` [B, T] written at cache slots ``slot .. slot+T-1``.

        ``key_mask`` [B, S] marks the cache slots that hold real tokens (S = cache length); query
        ``t`` sees slots ``<= slot + t`` among them. Returns (final-normed hidden [B, T, D], new
        cache); apply ``logits`` to the positions needed (prefill needs only the last one).
        Prefill is ``slot=0`` with the whole prompt; decode is one token at a time.
        """
        t = tokens.shape[1]
        s = key_mask.shape[1]
        causal = jnp.arange(s)[None, :] <= (slot + jnp.arange(t))[:, None]  # [T, S]
        mask = causal[None] & key_mask.astype(jnp.bool_)[:, None, :]
        x = self.embed(tokens)
        if self.scan_layers:
            graphdef, stacked = nnx.split(self.layers)

            def body(x, xs):
                layer_state, k, v = xs
                return nnx.merge(graphdef, layer_state)(x, positions, mask, (k, v), slot)

            x, new_cache = jax.lax.scan(body, x, (stacked, cache[0], cache[1]))
            return self.norm(x), new_cache
        new_cache = []
        for layer, layer_cache in zip(self.layers, cache):
            x, layer_cache = layer(x, positions, mask, layer_cache, slot)
            new_cache.append(layer_cache)
        return self.norm(x), new_cache


def count_params(config: Qwen3Config) -> int:
    """Number of parameters, from shapes only (``nnx.eval_shape``: nothing is allocated)."""
    abstract = nnx.eval_shape(lambda: Qwen3(config, rngs=nnx.Rngs(0)))
    return sum(int(x.size) for x in jax.tree.leaves(nnx.state(abstract, nnx.Param)))
