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
``tests/test_llm_memory.py``: 1.35-2.65x XLA's count on the tiny preset and 1.35-1.42x at
Qwen3-0.6B shapes (XLA fuses some of the temporaries counted here), so the rows it picks fit. ``full_logits_bytes`` is
what the old path (logits at every position in 64-position chunks, all rows at once) needed for
the largest buffer alone. ``sample_bytes`` / ``sample_rows`` do the same for the sampled
evaluation (the rollouts of every held-out prompt and their scoring under the reference).

``eval_rows(config, prompt_len, completion_len, n_devices, budget)``: the largest multiple of
``n_devices`` whose estimate fits ``budget`` bytes per device (rows are split over the devices),
at least ``n_devices``. ``device_budget()`` is a quarter of the first device's memory where JAX
reports it (``bytes_limit`` on GPU, TPU; the weights, optimizer state and the reference policy
hold the rest) and 2 GiB elsewhere (CPU, which reports none). It depends on the device, not on
what else is using it at the moment, so the choice, and with it the float rounding of the results,
is the same when a run is resumed on the same kind of device. The sampled evaluation's draws depend
on the choice too: each mini-batch of prompts draws with its own key (``pipeline.evaluate``), so on
another kind of device, dtype or number of devices, where ``sample_rows`` picks another size, the
rewards and KLs of a sampled evaluation are other samples of the same quantities, not the same
samples. Training is not affected: the rollouts of an RL step are one batch.

``python -m llm_check.memory --preset qwen3-0.6b --rows 220 --prompt-len 96 --completion-len 4``
prints, for one mini-batch of those shapes, the estimate beside XLA's count (the function is
compiled on abstract weights, never run: it needs no memory for them), the rows a budget allows,
and the old path's logits chunk.
"""

from __future__ import annotations

import argparse

import jax
import jax.numpy as jnp

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


def sample_bytes(config, prompts: int, group: int, prompt_len: int, new_tokens: int,
                 dtype_bytes: int = F32) -> int:
    """Estimated temporary bytes of sampling ``group`` completions of ``new_tokens`` tokens for
    each of ``prompts`` prompts (``sampling.sample(repeat=group)``) and scoring them under the
    reference (``grouped_completion_logprobs``): the prefill of the prompts, the KV cache of all
    prompts x group rows, and the scoring's logits [rows, new_tokens, V] in float32, three
    times."""
    c = config
    rows = prompts * group
    prefill = eval_bytes(config, prompts, prompt_len, 1, dtype_bytes)
    cache = (rows * c.num_hidden_layers * 2 * c.num_key_value_heads * c.head_dim
             * (prompt_len + new_tokens) * dtype_bytes)
    return prefill + cache + 3 * rows * new_tokens * c.vocab_size * F32


def sample_rows(config, prompt_len: int, new_tokens: int, group: int, *, n_devices: int = 1,
                budget: int | None = None, dtype_bytes: int = F32, at_most: int | None = None) -> int:
    """Prompts per sampled-evaluation mini-batch: as ``eval_rows``, for ``sample_bytes``."""
    budget = device_budget() if budget is None else budget
    per_prompt = sample_bytes(config, 1, group, prompt_len, new_tokens, dtype_bytes)
    return _fit(per_prompt, budget, n_devices, at_most)


def _fit(per_row: int, budget: int, n_devices: int, at_most: int | None) -> int:
    rows = max(1, budget * n_devices // per_row) // n_devices * n_devices
    if at_most is not None:
        rows = min(rows, -(-at_most // n_devices) * n_devices)
    return max(rows, n_devices)


def full_logits_bytes(config, rows: int, chunk: int = 64) -> int:
    """The old path's [rows, chunk, V] float32 logits chunk (one buffer of several)."""
    return rows * chunk * config.vocab_size * F32


def device_budget() -> int:
    """Bytes one evaluation mini-batch may use per device (module docstring)."""
    stats = jax.local_devices()[0].memory_stats() or {}
    if "bytes_limit" in stats:
        return int(stats["bytes_limit"]) // 4
    return CPU_BUDGET


def eval_rows(config, prompt_len: int, completion_len: int, *, n_devices: int = 1,
              budget: int | None = None, dtype_bytes: int = F32, at_most: int | None = None) -> int:
    """Rows per evaluation mini-batch: the largest multiple of ``n_devices`` (at most ``at_most``
    rounded up to one) whose estimate, split over the devices, fits ``budget`` per device."""
    budget = device_budget() if budget is None else budget
    return _fit(eval_bytes(config, 1, prompt_len, completion_len, dtype_bytes), budget, n_devices,
                at_most)


def compiled_temp_bytes(fn, *args, **static) -> int:
    """XLA's own count of the temporary bytes of ``jax.jit(fn)`` on these (abstract or concrete)
    arguments: compiled, never run."""
    compiled = jax.jit(fn, static_argnames=tuple(static)).lower(*args, **static).compile()
    return int(compiled.memory_analysis().temp_size_in_bytes)


def xla_eval_bytes(config, rows: int, prompt_len: int, completion_len: int, *,
                   scan_layers: bool = True) -> dict:
    """XLA's count for one evaluation mini-batch of ``config`` (float32), compiled on abstract
    weights (``nnx.eval_shape``): {"temp": temporaries, "params": the weights' bytes}.
    ``scan_layers`` compiles the layer stack once instead of unrolled (much faster to compile;
    the same buffers per layer)."""
    from flax import nnx

    from llm_check.logprobs import completion_nll
    from llm_check.model import Qwen3

    model = nnx.eval_shape(lambda: Qwen3(config, rngs=nnx.Rngs(0), scan_layers=scan_layers))
    graphdef, params, rest = nnx.split(model, nnx.Param, ...)

    def nll(p, prompt, pmask, completion, cmask, *, rows):
        return completion_nll(nnx.merge(graphdef, p, rest), prompt, pmask, completion, cmask,
                              rows=rows).mean()

    ints = [jax.ShapeDtypeStruct((rows, prompt_len), jnp.int32)] * 2 + [
        jax.ShapeDtypeStruct((rows, completion_len), jnp.int32)] * 2
    weights = sum(x.size * x.dtype.itemsize for x in jax.tree.leaves(params))
    return {"temp": compiled_temp_bytes(nll, params, *ints, rows=rows), "params": int(weights)}


def main(argv=None) -> int:
    from llm_check.config import preset

    ap = argparse.ArgumentParser(prog="python -m llm_check.memory",
                                 description="memory of one evaluation mini-batch: estimate and "
                                             "XLA's count")
    ap.add_argument("--preset", default="qwen3-0.6b", help="tiny | qwen3-0.6b | ...")
    ap.add_argument("--rows", type=int, default=64)
    ap.add_argument("--prompt-len", type=int, default=96)
    ap.add_argument("--completion-len", type=int, default=4)
    ap.add_argument("--budget-gib", type=float, default=8.0, help="per-device budget for the rows")
    ap.add_argument("--total-rows", type=int, default=1043, help="rows of the whole evaluation "
                    "(CoLA's dev set: 1,043)")
    a = ap.parse_args(argv)
    cfg = preset(a.preset)
    est = eval_bytes(cfg, a.rows, a.prompt_len, a.completion_len)
    xla = xla_eval_bytes(cfg, a.rows, a.prompt_len, a.completion_len)
    gib = 2.0**30
    print(f"{a.preset}, one mini-batch of {a.rows} rows x ({a.prompt_len} prompt + "
          f"{a.completion_len} completion) tokens, float32:")
    print(f"  estimate {est / gib:.3f} GiB   XLA temporaries {xla['temp'] / gib:.3f} GiB   "
          f"(estimate / XLA {est / xla['temp']:.2f}); weights {xla['params'] / gib:.3f} GiB")
    rows = eval_rows(cfg, a.prompt_len, a.completion_len, budget=int(a.budget_gib * gib),
                     at_most=a.total_rows)
    print(f"  at {a.budget_gib:g} GiB: {rows} rows a mini-batch "
          f"({eval_bytes(cfg, rows, a.prompt_len, a.completion_len) / gib:.2f} GiB estimated)")
    print(f"  the old path: one [{a.total_rows}, 64, {cfg.vocab_size}] float32 logits chunk = "
          f"{full_logits_bytes(cfg, a.total_rows) / gib:.1f} GiB")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
