"""Benchmark against transformers + torch on CPU, in one process: ``python -m llm_check.bench``.

Same ~23M-parameter Qwen3 config on both sides, float32, ``torch.set_num_threads`` = the number of
CPU cores XLA uses:

1. Training step: forward, backward and AdamW on a [B, T] batch. Ours: one ``jax.jit``-compiled
   pure function of (params, optimizer state), not donated (as the pipeline's SFT step), the loss
   from ``sft.nll_sums`` with every token a target (chunked LM head). Theirs:
   ``Qwen3ForCausalLM(..., labels=ids).loss``,
   ``backward()``, ``torch.optim.AdamW.step()`` (SDPA attention).
2. Greedy sampling of N new tokens after a [B, P] prompt with the KV cache. Ours: ``sampling.sample``
   (prefill + ``lax.scan`` decode, compiled once). Theirs: ``model.generate`` with its KV cache and
   ``min_new_tokens = max_new_tokens`` so neither side stops early.

Both sides are warmed up first (compilation is excluded), then timed in pairs, ours and theirs
alternately, ``--repeats`` pairs (at least 3 for sampling), so that a change of load on a shared
machine falls on both sides of a pair. The report gives median times and the medians of the
paired ratios, each with its interquartile range (IQR) over the pairs: train-step time (ours /
theirs; budget <= 1.0, goal <= 0.5) and sampling tokens/s (ours / theirs; budget >= 1.0, goal >= 2).

``python -m llm_check.bench --preset qwen3-0.6b`` (or ``--preset tiny`` on a CPU) instead measures
one device alone, no torch (``device_bench``): for an SFT step and a GRPO step it prints MFU against
the device's bf16 peak (``PEAK_BF16_FLOPS``, by ``jax.devices()[0].device_kind``; "n/a" where the
device is not in the table, e.g. on CPU), tokens/s, rollout tokens/s, peak memory (the device's
``memory_stats()["peak_bytes_in_use"]`` where it has one, else the process's max RSS) and compile
time (``jax.jit(...).lower(...).compile()``, timed).

torch is also timed with 1 thread and the ratios against its faster setting are reported too: on a
shared, oversubscribed machine torch's OpenMP threads can slow down many-fold (we measured a
single-token forward 18x slower with 2 threads than with 1 on the busy 2-core machine), which
would flatter the ratio.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import sys
import time
from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from llm_check.config import Qwen3Config, preset
from llm_check.model import ATTENTION, Qwen3
from llm_check.sampling import sample
from llm_check.sft import nll_sums, split_model
from theory.errors import InputError

BENCH_CONFIG = Qwen3Config(
    vocab_size=8192, hidden_size=512, intermediate_size=1536, num_hidden_layers=6,
    num_attention_heads=8, num_key_value_heads=4, head_dim=64, rope_theta=1_000_000.0,
    tie_word_embeddings=True, max_position_embeddings=4096)


def _median_time(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def jax_train_step(config, lr=1e-4, window: int | None = None, donate: bool = False, **model_kw):
    """(step, graphdef, params, opt_state), where ``step(params, opt_state, ids, mask)`` returns
    ``(params, opt_state, loss)``; ``nnx.merge(graphdef, params)`` is the model. With ``donate``
    the step donates params and optimizer state, which saves their memory on an accelerator; on
    XLA:CPU it is slower (it copies every donated parameter first; docs/benchmarks.md), and the
    pipeline's SFT step (``sft.make_sft_step``) does not donate either.
    ``model_kw`` go to ``Qwen3`` (dtype, attention, scan_layers, remat). The loss is the SFT
    loss (``sft.nll_sums``, LM head in chunks of 128): every token is a target, or, with ``window``
    W, a W-token completion at the end of each row, with the LM head on those W positions only (as
    the pipeline's SFT step)."""
    model = Qwen3(config, rngs=nnx.Rngs(0), **model_kw)
    graphdef, params, rest = split_model(model)
    tx = optax.adamw(lr)

    @partial(jax.jit, donate_argnums=(0, 1) if donate else ())
    def step(params, opt_state, ids, mask):
        completion = mask if window is None else jnp.zeros_like(mask).at[:, -window:].set(1)

        def loss_fn(p):
            nll, n = nll_sums(graphdef, p, rest, ids, mask, completion, 128, window)
            return nll.sum() / n.sum()

        loss, grads = jax.value_and_grad(loss_fn)(params)
        updates, opt_state = tx.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, loss

    return step, graphdef, params, tx.init(params)


def _paired(ours, theirs, repeats: int) -> tuple[float, float, float, tuple[float, float]]:
    """Time ``ours`` and ``theirs`` alternately (ours first, then theirs first, ...), so that a
    change of machine load falls on both sides of a pair. Returns (median time of ours, median
    time of theirs, median of the paired ratios ours / theirs, (first, third) quartile of those
    ratios: how far the pairs spread)."""
    a, b = [], []
    for r in range(repeats):
        for fn, times in ((ours, a), (theirs, b))[:: 1 if r % 2 == 0 else -1]:
            t0 = time.perf_counter()
            fn()
            times.append(time.perf_counter() - t0)
    ratios = [x / y for x, y in zip(a, b)]
    q1, _, q3 = statistics.quantiles(ratios, n=4, method="inclusive") if len(ratios) > 1 \
        else ratios * 3
    return statistics.median(a), statistics.median(b), statistics.median(ratios), (q1, q3)


def run(batch=4, seq=128, prompt=32, new_tokens=32, sample_batch=4, repeats=3, warmup=2) -> dict:
    """The comparison with transformers + torch (module docstring). Each of our steps is timed
    paired with torch's (``_paired``), for each torch thread count; the ratios are medians of the
    paired ratios."""
    import torch
    from transformers import Qwen3Config as HFConfig, Qwen3ForCausalLM

    threads = os.cpu_count() or 1
    cfg = BENCH_CONFIG
    rng = np.random.default_rng(0)
    ids = rng.integers(0, cfg.vocab_size, (batch, seq)).astype(np.int32)
    mask = np.ones_like(ids)
    p_ids = rng.integers(1, cfg.vocab_size, (sample_batch, prompt)).astype(np.int32)
    p_mask = np.ones_like(p_ids)
    res = {"config": {k: v for k, v in cfg.to_hf().items() if isinstance(v, (int, float))},
           "batch": batch, "seq": seq, "prompt": prompt, "new_tokens": new_tokens,
           "sample_batch": sample_batch, "repeats": repeats, "threads": threads,
           "jax": jax.__version__, "torch": torch.__version__}

    # -- ours: training step, and greedy sampling with no early stop (eos_id=-1)
    step, graphdef, params, opt_state = jax_train_step(cfg)
    res["params"] = int(sum(x.size for x in jax.tree.leaves(params)))
    ids_j, mask_j = jnp.asarray(ids), jnp.asarray(mask)
    state = [params, opt_state]

    def ours_train():
        state[0], state[1], loss = step(state[0], state[1], ids_j, mask_j)
        loss.block_until_ready()

    t0 = time.perf_counter()
    ours_train()
    res["jax_compile_s"] = time.perf_counter() - t0
    for _ in range(warmup - 1):
        ours_train()
    model = nnx.merge(graphdef, state[0])  # the trained parameters (not donated: they stay valid)

    def ours_sample():
        out = sample(model, p_ids, p_mask, jax.random.key(0), max_new_tokens=new_tokens,
                     greedy=True, eos_id=-1)
        out.completion.block_until_ready()

    for _ in range(warmup):
        ours_sample()

    # -- theirs: the same config, with torch threads = XLA's, then 1 thread
    hf_cfg = HFConfig(**{k: v for k, v in cfg.to_hf().items()
                         if k not in ("model_type", "architectures", "torch_dtype", "rope_theta")})
    hf = Qwen3ForCausalLM(hf_cfg).to(torch.float32)
    opt = torch.optim.AdamW(hf.parameters(), lr=1e-4)
    ids_t, mask_t = torch.tensor(ids, dtype=torch.long), torch.tensor(mask, dtype=torch.long)
    p_t = torch.tensor(p_ids, dtype=torch.long)

    def torch_train():
        loss = hf(input_ids=ids_t, attention_mask=mask_t, labels=ids_t).loss
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    def torch_sample():
        with torch.no_grad():
            hf.generate(input_ids=p_t, attention_mask=torch.ones_like(p_t), do_sample=False,
                        max_new_tokens=new_tokens, min_new_tokens=new_tokens, pad_token_id=0,
                        eos_token_id=None, use_cache=True)

    n = sample_batch * new_tokens
    for t in sorted({threads, 1}, reverse=True):
        torch.set_num_threads(t)
        hf.train()  # the module's mode, set outside the timed calls
        for _ in range(warmup):
            torch_train()
        ours_s, train_s, train_ratio, train_iqr = _paired(ours_train, torch_train, repeats)
        hf.eval()
        for _ in range(warmup):
            torch_sample()
        # tokens/s ratio ours / theirs = time ratio theirs / ours: pairs timed theirs first
        sample_s, ours_sample_s, sample_ratio, sample_iqr = _paired(torch_sample, ours_sample,
                                                                    max(3, repeats))
        res[f"torch_{t}t"] = {"train_s": train_s, "sample_s": sample_s, "tokens_per_s": n / sample_s,
                              "jax_train_s": ours_s, "jax_sample_s": ours_sample_s,
                              "train_ratio": train_ratio, "sample_ratio": sample_ratio,
                              "train_ratio_iqr": train_iqr, "sample_ratio_iqr": sample_iqr}
    same = res[f"torch_{threads}t"]
    res.update(jax_train_s=same["jax_train_s"], jax_sample_s=same["jax_sample_s"],
               jax_tokens_per_s=n / same["jax_sample_s"], torch_train_s=same["train_s"],
               torch_tokens_per_s=same["tokens_per_s"], train_ratio=same["train_ratio"],
               sample_ratio=same["sample_ratio"], train_ratio_iqr=same["train_ratio_iqr"],
               sample_ratio_iqr=same["sample_ratio_iqr"], **against_faster_torch(res, {threads, 1}))
    return res


def against_faster_torch(res: dict, thread_counts) -> dict:
    """The paired ratios against torch's faster thread count: the one with the shorter train
    step for the train ratio, the one with more tokens/s for the sampling ratio."""
    blocks = [res[f"torch_{t}t"] for t in sorted(thread_counts)]
    return {"train_ratio_vs_best_torch": min(blocks, key=lambda b: b["train_s"])["train_ratio"],
            "sample_ratio_vs_best_torch": max(blocks, key=lambda b: b["tokens_per_s"])["sample_ratio"]}


# -- one device alone: python -m llm_check.bench --preset qwen3-0.6b -----------------------------

# Dense bf16 tensor-core peaks (no sparsity), FLOP/s, matched in order against device_kind
# (e.g. "NVIDIA H100 80GB HBM3", "NVIDIA H100 PCIe", "NVIDIA H200", "NVIDIA A100-SXM4-80GB").
PEAK_BF16_FLOPS = (
    ("H100 PCIe", 756e12),
    ("H100 NVL", 835e12),
    ("H100", 989e12),  # SXM
    ("H200", 989e12),
    ("A100", 312e12),
)

# Per preset: the model and the default shapes of the measured steps.
DEVICE_PRESETS = {
    # the paper's model; an SFT batch of 8 x 512, GRPO with 8 prompts x 8 completions of
    # 128 tokens after 128-token prompts
    "qwen3-0.6b": dict(batch=8, seq=512, prompts=8, group=8, prompt_len=128, new_tokens=128),
    # CPU-sized (2 layers, hidden 64): the same code paths in seconds
    "tiny": dict(batch=4, seq=64, prompts=2, group=4, prompt_len=16, new_tokens=16),
}


def peak_bf16_flops(device_kind: str) -> float | None:
    """The device's dense bf16 peak in FLOP/s, or None if it is not in ``PEAK_BF16_FLOPS``."""
    for key, peak in PEAK_BF16_FLOPS:
        if key.lower() in device_kind.lower():
            return peak
    return None


def matmul_params(config: Qwen3Config) -> int:
    """Weights that take part in a matmul for every token: the layers' projections and the LM head
    (the embedding matrix again when tied; the embedding lookup itself is not a matmul)."""
    c = config
    attn = c.hidden_size * c.head_dim * (2 * c.num_attention_heads + 2 * c.num_key_value_heads)
    mlp = 3 * c.hidden_size * c.intermediate_size
    return c.num_hidden_layers * (attn + mlp) + c.hidden_size * c.vocab_size


def train_flops_per_token(config: Qwen3Config, seq: int) -> float:
    """Model FLOPs of forward + backward per token at sequence length ``seq``: ``6 N`` for the
    matmul weights plus ``12 L H d T`` for attention scores and values (the PaLM MFU convention:
    no causal discount, no rematerialization counted)."""
    c = config
    return 6.0 * matmul_params(c) + 12.0 * c.num_hidden_layers * c.num_attention_heads * c.head_dim * seq


def sft_step_flops(config: Qwen3Config, batch: int, seq: int, window: int | None = None) -> float:
    """Model FLOPs of one SFT step on [batch, seq]: ``train_flops_per_token`` at every token, less
    the LM head's ``6 D V`` at the positions a ``window`` of W skips (all but W of each row)."""
    flops = train_flops_per_token(config, seq) * batch * seq
    if window is not None:
        flops -= 6.0 * config.hidden_size * config.vocab_size * batch * (seq - window)
    return flops


def peak_memory() -> tuple[float, str]:
    """(bytes, what): the first device's peak bytes in use where it reports memory statistics,
    else this process's maximum resident set size."""
    stats = None
    try:
        stats = jax.devices()[0].memory_stats()
    except Exception:  # backends without memory statistics
        stats = None
    if stats and "peak_bytes_in_use" in stats:
        return float(stats["peak_bytes_in_use"]), "device peak bytes in use"
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024.0, "process max RSS"


def _timed_compile(fn, *args):
    t0 = time.perf_counter()
    compiled = fn.lower(*args).compile()
    return compiled, time.perf_counter() - t0


def _block(tree):
    jax.tree.map(lambda x: x.block_until_ready() if hasattr(x, "block_until_ready") else x, tree)
    return tree


def auto_attention(on_gpu: bool) -> str:
    """What ``--attention auto`` measures: JAX's ``dot_product`` on a GPU, ``einsum`` elsewhere.

    Not cuDNN: on an H200 (jax 0.11.2, cuDNN from the jax-cuda13 plugin) our model's bf16 forward
    through ``attention="cudnn"`` matched the einsum path, but its gradients did not (cosine 0.04
    to the float32 gradient, where bf16 einsum gave 0.99995; tests/test_llm_gpu.py, docs/log.md).
    ``--attention cudnn`` still times it; its SFT and update figures are then speed only."""
    return "dot_product" if on_gpu else "einsum"


def _grpo_bench(cfg, graphdef, params, shapes, rng, seed, repeats, peak) -> dict:
    """Rollout (KV-cache sampling), reference log-probs and one clipped GRPO update, timed."""
    from llm_check import grpo
    from llm_check.run_config import GRPOConfig

    model = nnx.merge(graphdef, params)
    gcfg = GRPOConfig(group_size=shapes["group"], prompts_per_step=shapes["prompts"],
                      max_new_tokens=shapes["new_tokens"])
    n, p, m = shapes["prompts"] * shapes["group"], shapes["prompt_len"], shapes["new_tokens"]
    prompts = rng.integers(1, cfg.vocab_size, (shapes["prompts"], p)).astype(np.int32)
    p_mask = np.ones_like(prompts)

    def rollout():  # as grpo.rollout: one prefill per prompt, G completions; eos_id=-1: no early
        # stop, so every row generates m tokens
        return _block(sample(model, prompts, p_mask, jax.random.key(seed), max_new_tokens=m,
                             temperature=gcfg.temperature, eos_id=-1, pad_id=0,
                             repeat=shapes["group"]))

    t0 = time.perf_counter()
    out = rollout()
    first = time.perf_counter() - t0
    roll_s = _median_time(rollout, repeats)
    batch = (jnp.asarray(prompts), jnp.asarray(p_mask), out.completion)  # one prompt pass a group
    cmask = jnp.asarray(out.completion_mask)

    lp_fn = grpo.make_completion_logprobs(graphdef, nnx.State({}))
    lp_c, lp_compile = _timed_compile(lp_fn, params, *batch)
    ref_lp = _block(lp_c(params, *batch))[0]
    lp_s = _median_time(lambda: _block(lp_c(params, *batch)), repeats)

    rewards = jnp.asarray(rng.integers(0, 2, n), jnp.float32)
    adv = grpo.group_advantages(rewards.reshape(-1, shapes["group"]), baseline="loo",
                                std_normalize=False).reshape(-1)
    tx = optax.adamw(1e-6)
    gstep = grpo.make_grpo_step(graphdef, nnx.State({}), tx, gcfg)
    g_opt = tx.init(params)
    g_args = (params, g_opt, *batch, cmask, None, ref_lp, adv, jnp.float32(gcfg.beta))
    g_c, g_compile = _timed_compile(gstep.jitted, *g_args)
    upd = lambda: _block(g_c(*g_args))  # noqa: E731  (not donated: the same inputs every time)
    upd()
    upd_s = _median_time(upd, repeats)
    # tokens the update runs: each group's prompt once (shared by its G rows, forward and backward)
    # and every completion token; counting the prompt G times would overstate MFU (by 1.8x here).
    # The LM head runs at the completion positions only (grouped_completion_logprobs), so the
    # prompt tokens count the layers' FLOPs without the head's 6 D V.
    tokens = shapes["prompts"] * p + n * m
    head = 6.0 * cfg.hidden_size * cfg.vocab_size
    g_flops = ((train_flops_per_token(cfg, p) - head) * shapes["prompts"] * p
               + train_flops_per_token(cfg, p + m) * n * m)
    return {
        "rollouts": n, "rollout_s": roll_s, "rollout_tokens_per_s": n * m / roll_s,
        "rollout_compile_s": first - roll_s,  # first call (compiles prefill + decode) - steady
        "ref_logprobs_s": lp_s, "ref_logprobs_compile_s": lp_compile,
        "update_s": upd_s, "update_compile_s": g_compile,
        "update_tokens": tokens, "update_tokens_per_s": tokens / upd_s, "update_model_flops": g_flops,
        "update_mfu": g_flops / upd_s / peak if peak else None,
        "step_s": roll_s + lp_s + upd_s, "tokens_per_s": tokens / (roll_s + lp_s + upd_s),
        "compile_s": first - roll_s + lp_compile + g_compile,
    }


def device_bench(preset_name: str = "tiny", *, dtype: str | None = None, attention: str = "auto",
                 scan_layers: bool | None = None, repeats: int = 3, seed: int = 0,
                 grpo_step: bool = True, window: int | None = None, donate: bool = True,
                 **shape_overrides) -> dict:
    """SFT step, rollout and GRPO step of ``preset_name`` on ``jax.devices()[0]``, random weights
    and tokens (speed does not depend on them). Shapes: ``DEVICE_PRESETS`` overridden by
    ``shape_overrides`` (batch, seq, prompts, group, prompt_len, new_tokens). With
    ``grpo_step=False`` only the SFT step is measured (``res["grpo"]`` is None). With ``window`` W
    the SFT step runs the LM head on the last W positions of each row only, as the pipeline's SFT
    step does on a W-token answer window (``jax_train_step``). The SFT step donates its parameters
    and optimizer state, which lets XLA write the new ones over the old; ``donate=False`` measures
    it as the pipeline's step runs (no donation: both copies are live at the peak).
    ``res["sft"]["donated_arrays"]`` counts the arrays the compiled step takes as donated."""
    if preset_name not in DEVICE_PRESETS:
        raise InputError(f"--preset {preset_name!r}: choose one of {', '.join(DEVICE_PRESETS)}")
    shapes = dict(DEVICE_PRESETS[preset_name])
    for k, v in shape_overrides.items():
        if v is not None:
            if k not in shapes:
                raise InputError(f"device_bench: unknown shape {k!r}")
            shapes[k] = int(v)
    dev = jax.devices()[0]
    on_gpu = dev.platform == "gpu"
    dtype = dtype or ("bf16" if on_gpu else "f32")
    if dtype not in ("bf16", "f32"):
        raise InputError(f"--dtype {dtype!r}: choose bf16 or f32")
    scan = on_gpu if scan_layers is None else bool(scan_layers)
    if window is not None and not 1 <= window < shapes["seq"]:
        raise InputError(f"--window {window}: must be in 1..{shapes['seq'] - 1} (the sequence "
                         f"length is {shapes['seq']})")
    cfg = preset(preset_name)
    kw = dict(dtype=jnp.bfloat16 if dtype == "bf16" else jnp.float32, scan_layers=scan)
    rng = np.random.default_rng(seed)
    peak = peak_bf16_flops(dev.device_kind)
    res = {"preset": preset_name, "device": dev.device_kind, "platform": dev.platform,
           "num_devices": jax.device_count(), "jax": jax.__version__, "dtype": dtype,
           "scan_layers": scan, "repeats": repeats, "peak_bf16_flops": peak, "window": window,
           "donate": bool(donate), **shapes}

    # -- SFT step: forward + backward + AdamW on [batch, seq], compiled explicitly
    b, t = shapes["batch"], shapes["seq"]
    ids = jnp.asarray(rng.integers(0, cfg.vocab_size, (b, t)), jnp.int32)
    mask = jnp.ones((b, t), jnp.int32)
    att = auto_attention(on_gpu) if attention == "auto" else attention
    step, graphdef, params, opt_state = jax_train_step(cfg, attention=att, window=window,
                                                       donate=donate, **kw)
    sft, compile_s = _timed_compile(step, params, opt_state, ids, mask)
    res["attention"] = att
    res["params"] = int(sum(x.size for x in jax.tree.leaves(params)))
    state = [params, opt_state]

    def sft_once():
        state[0], state[1], loss = sft(state[0], state[1], ids, mask)
        loss.block_until_ready()

    sft_once()  # first run (allocations)
    sft_s = _median_time(sft_once, repeats)
    flops = sft_step_flops(cfg, b, t, window)
    res["sft"] = {"compile_s": compile_s, "step_s": sft_s, "tokens_per_s": b * t / sft_s,
                  "donated_arrays": sum(a.donated for a in jax.tree.leaves(sft.args_info)),
                  "model_flops": flops, "mfu": flops / sft_s / peak if peak else None}
    res["sft"]["peak_memory_bytes"], res["memory_kind"] = peak_memory()
    res["grpo"] = None
    if not grpo_step:
        return res

    # -- GRPO: rollout (KV-cache sampling), reference log-probs, one clipped update
    res["grpo"] = _grpo_bench(cfg, graphdef, state[0], shapes, rng, seed, repeats, peak)
    res["grpo"]["peak_memory_bytes"], _ = peak_memory()
    return res


def _pct(x):
    return "n/a" if x is None else f"{100 * x:.1f}%"


def print_device_bench(r: dict) -> None:
    peak = "n/a" if r["peak_bf16_flops"] is None else f"{r['peak_bf16_flops'] / 1e12:.0f} TFLOP/s"
    donated = "donated" if r.get("donate", True) else "not donated"
    print(f"{r['preset']}: {r['params'] / 1e6:.1f}M params, {r['dtype']} compute, f32 master weights, "
          f"attention={r['attention']}, scan_layers={r['scan_layers']}; SFT step's parameters and "
          f"optimizer state {donated}; device {r['device']} "
          f"({r['platform']}), bf16 peak {peak}; medians of {r['repeats']}")
    s, g = r["sft"], r["grpo"]
    gib = 2.0 ** 30
    head = "" if r.get("window") is None else f", LM head on {r['window']}"
    print(f"SFT step   [{r['batch']} x {r['seq']}{head}]: {s['step_s'] * 1e3:9.1f} ms  "
          f"{s['tokens_per_s']:10.0f} tokens/s  MFU {_pct(s['mfu'])}  "
          f"compile {s['compile_s']:.1f} s  peak memory {s['peak_memory_bytes'] / gib:.2f} GiB")
    if g is None:
        less = "" if r.get("window") is None else ", less the LM head outside the window"
        print(f"(peak memory: {r['memory_kind']}; MFU: model FLOPs 6N + 12LHdT per token{less} over "
              "the bf16 peak)")
        return
    print(f"GRPO step  [{g['rollouts']} rollouts x ({r['prompt_len']}+{r['new_tokens']})]: "
          f"{g['step_s'] * 1e3:9.1f} ms  {g['tokens_per_s']:10.0f} tokens/s  "
          f"compile {g['compile_s']:.1f} s  peak memory {g['peak_memory_bytes'] / gib:.2f} GiB")
    print(f"  rollout      {g['rollout_s'] * 1e3:9.1f} ms  {g['rollout_tokens_per_s']:10.0f} "
          f"rollout tokens/s  (compile {g['rollout_compile_s']:.1f} s)")
    print(f"  ref logprobs {g['ref_logprobs_s'] * 1e3:9.1f} ms  (compile {g['ref_logprobs_compile_s']:.1f} s)")
    print(f"  update       {g['update_s'] * 1e3:9.1f} ms  {g['update_tokens_per_s']:10.0f} tokens/s  "
          f"MFU {_pct(g['update_mfu'])}  (compile {g['update_compile_s']:.1f} s)")
    print(f"(peak memory: {r['memory_kind']}, cumulative over the run; MFU: model FLOPs "
          "6N + 12LHdT per token over the bf16 peak)")


def _iqr(q) -> str:
    return f"{q[0]:.2f}-{q[1]:.2f}"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m llm_check.bench", description=__doc__.split("\n")[0])
    # defaults: 4, 128, 32, 32, 4 and 3 for the comparison; DEVICE_PRESETS and 3 with --preset
    ap.add_argument("--batch", type=int)
    ap.add_argument("--seq", type=int)
    ap.add_argument("--prompt", type=int, help="prompt length of the sampling comparison")
    ap.add_argument("--new-tokens", type=int)
    ap.add_argument("--sample-batch", type=int)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--json", action="store_true")
    dev = ap.add_argument_group("one device alone (--preset; no torch)")
    dev.add_argument("--preset", choices=sorted(DEVICE_PRESETS),
                     help="measure SFT and GRPO steps of this preset on jax.devices()[0]")
    dev.add_argument("--dtype", choices=("bf16", "f32"), help="compute dtype (default: bf16 on GPU, "
                     "f32 elsewhere)")
    dev.add_argument("--attention", choices=("auto", *ATTENTION), default="auto",
                     help="auto: dot_product on a GPU, einsum elsewhere (cudnn: speed only, its "
                     "gradients were wrong on an H200; docs/log.md)")
    dev.add_argument("--scan-layers", choices=("auto", "on", "off"), default="auto",
                     help="auto: on for a GPU, off elsewhere")
    for name in ("prompts", "group", "prompt-len"):
        dev.add_argument(f"--{name}", type=int)
    dev.add_argument("--sft-only", action="store_true", help="measure the SFT step alone")
    dev.add_argument("--window", type=int, help="SFT step with the LM head on the last W positions "
                     "of each row only (the pipeline's answer window)")
    dev.add_argument("--no-donate", action="store_true", help="the SFT step without donating its "
                     "parameters and optimizer state, as the pipeline's step runs (the peak memory "
                     "then holds the old and the new ones)")
    a = ap.parse_args(argv)
    if not a.preset and (a.sft_only or a.window is not None or a.no_donate):
        print("python -m llm_check.bench: error: --sft-only, --window and --no-donate measure one "
              "device: give --preset too", file=sys.stderr)
        return 2
    if a.preset:
        shapes = {k: getattr(a, k) for k in ("batch", "seq", "prompts", "group", "prompt_len",
                                             "new_tokens")}
        try:
            r = device_bench(a.preset, dtype=a.dtype, attention=a.attention,
                             scan_layers=None if a.scan_layers == "auto" else a.scan_layers == "on",
                             repeats=a.repeats, grpo_step=not a.sft_only, window=a.window,
                             donate=not a.no_donate, **shapes)
        except InputError as e:
            print(f"python -m llm_check.bench: error: {e}", file=sys.stderr)
            return 2
        if a.json:
            print(json.dumps(r, indent=2))
        else:
            print_device_bench(r)
        return 0
    r = run(a.batch or 4, a.seq or 128, a.prompt or 32, a.new_tokens or 32, a.sample_batch or 4,
            a.repeats)
    if a.json:
        print(json.dumps(r, indent=2))
        return 0
    print(f"config: {r['params'] / 1e6:.1f}M params, train batch {r['batch']}x{r['seq']}, "
          f"sampling {r['sample_batch']}x({r['prompt']}+{r['new_tokens']}), f32, "
          f"{r['threads']} threads; medians of {r['repeats']} pairs (sampling: "
          f"{max(3, r['repeats'])}), ours and torch's timed alternately")
    print(f"train step   jax {r['jax_train_s'] * 1e3:8.1f} ms   torch {r['torch_train_s'] * 1e3:8.1f} ms"
          f"   ratio {r['train_ratio']:.2f}x (pairs' IQR {_iqr(r['train_ratio_iqr'])}; "
          f"budget <= 1.0, goal <= 0.5); "
          f"vs torch's best thread count {r['train_ratio_vs_best_torch']:.2f}x")
    print(f"sampling     jax {r['jax_tokens_per_s']:8.1f} tok/s torch {r['torch_tokens_per_s']:8.1f} "
          f"tok/s ratio {r['sample_ratio']:.2f}x (pairs' IQR {_iqr(r['sample_ratio_iqr'])}; "
          f"budget >= 1.0, goal >= 2); "
          f"vs torch's best thread count {r['sample_ratio_vs_best_torch']:.2f}x")
    print(f"(jax first-call compile of the train step: {r['jax_compile_s']:.1f} s, excluded)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
