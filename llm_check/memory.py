"""How much device memory an evaluation takes, and how many rows fit: the mini-batch size of the
held-out CE and the exact answer log-probs (``logprobs.completion_nll``).

``eval_bytes(config, rows, prompt_len, completion_len)`` estimates the temporary memory of one
mini-batch of ``rows`` rows on top of the parameters, as the sum of the buffers that are alive
at the widest point of the forward pass:

- the KV cache of the prompt and completion: rows x layers x 2 x kv_heads x head_dim x (Tp + M);
- one layer's activations over the prompt: the residual stream, q/k/v and the MLP's gate, up and
  product, rows x Tp x (4 D + (2 H + 2 Hkv) Dh + 3 I) in the compute dtype;
- the attention scores and their softmax, rows x H x Tp x (Tp + M) in float32, twice;
- the completion's logits, their log-softmax and the exp for it, rows x M x V in float32, three
  times.

It is an upper bound by design, checked against what XLA itself allocates for the compiled
function (``compiled_temp_bytes``: ``memory_analysis().temp_size_in_bytes``) in
``tests/test_llm_memory.py``: 1.35-2.64x XLA's count on the tiny preset (XLA fuses some of the
temporaries counted here), so the rows it picks fit. ``full_logits_bytes`` is
what the old path (logits at every position in 64-position chunks, all rows at once) needed for
the largest buffer alone.

``eval_rows(config, prompt_len, completion_len, n_devices, budget)``: the largest multiple of
``n_devices`` whose estimate fits ``budget`` bytes per device (rows are split over the devices),
at least ``n_devices``. ``device_budget()`` is half of the first device's free memory where JAX
reports it (GPU, TPU) and 2 GiB elsewhere (CPU, which reports none), so the choice, and with it the
float rounding of the results, does not depend on how busy the host is.
"""

from __future__ import annotations

import jax

F32 = 4
CPU_BUDGET = 2 * 2**30


def eval_bytes(config, rows: int, prompt_len: int, completion_len: int,
               dtype_bytes: int = F32) -> int:
    """Estimated temporary bytes of ``completion_nll`` on one mini-batch of ``rows`` rows."""
    c = config
    t = prompt_len + completion_len
    cache = rows * c.num_hidden_layers * 2 * c.num_key_value_heads * c.head_dim * t * dtype_bytes
    width = (4 * c.hidden_size + (2 * c.num_attention_heads + 2 * c.num_key_value_heads)
             * c.head_dim + 3 * c.intermediate_size)
    layer = rows * prompt_len * width * dtype_bytes
    scores = 2 * rows * c.num_attention_heads * prompt_len * t * F32
    logits = 3 * rows * completion_len * c.vocab_size * F32
    return cache + layer + scores + logits


def full_logits_bytes(config, rows: int, chunk: int = 64) -> int:
    """The old path's [rows, chunk, V] float32 logits chunk (one buffer of several)."""
    return rows * chunk * config.vocab_size * F32


def device_budget() -> int:
    """Bytes one evaluation mini-batch may use per device (module docstring)."""
    stats = jax.local_devices()[0].memory_stats() or {}
    if "bytes_limit" in stats:
        return (stats["bytes_limit"] - stats.get("bytes_in_use", 0)) // 2
    return CPU_BUDGET


def eval_rows(config, prompt_len: int, completion_len: int, *, n_devices: int = 1,
              budget: int | None = None, dtype_bytes: int = F32, at_most: int | None = None) -> int:
    """Rows per evaluation mini-batch: the largest multiple of ``n_devices`` (at most ``at_most``
    rounded up to one) whose estimate, split over the devices, fits ``budget`` per device."""
    budget = device_budget() if budget is None else budget
    per_row = eval_bytes(config, 1, prompt_len, completion_len, dtype_bytes)
    rows = max(1, budget * n_devices // per_row) // n_devices * n_devices
    if at_most is not None:
        rows = min(rows, -(-at_most // n_devices) * n_devices)
    return max(rows, n_devices)


def compiled_temp_bytes(fn, *args, **static) -> int:
    """XLA's own count of the temporary bytes of ``jax.jit(fn)`` on these (abstract or concrete)
    arguments: compiled, never run."""
    compiled = jax.jit(fn, static_argnames=tuple(static)).lower(*args, **static).compile()
    return int(compiled.memory_analysis().temp_size_in_bytes)
