"""Benchmark against transformers + torch on CPU, in one process: ``python -m llm_check.bench``.

Same ~23M-parameter Qwen3 config on both sides, float32, ``torch.set_num_threads`` = the number of
CPU cores XLA uses:

1. Training step: forward, backward and AdamW on a [B, T] batch. Ours: one ``jax.jit``-compiled
   pure function of (params, optimizer state) with both donated, the loss from
   ``token_logprobs`` (chunked LM head). Theirs: ``Qwen3ForCausalLM(..., labels=ids).loss``,
   ``backward()``, ``torch.optim.AdamW.step()`` (SDPA attention).
2. Greedy sampling of N new tokens after a [B, P] prompt with the KV cache. Ours: ``sampling.sample``
   (prefill + ``lax.scan`` decode, compiled once). Theirs: ``model.generate`` with its KV cache and
   ``min_new_tokens = max_new_tokens`` so neither side stops early.

Both sides are warmed up first (compilation is excluded), then each is timed ``--repeats`` times;
the report gives medians, the ratio of train-step times (ours / theirs; budget <= 1.0, goal <= 0.5)
and the ratio of sampling tokens/s (ours / theirs; budget >= 1.0, goal >= 2).

torch is also timed with 1 thread and the ratios against its faster setting are reported too: on a
shared, oversubscribed machine torch's OpenMP threads can slow down many-fold (we measured a
single-token forward 18x slower with 2 threads than with 1 on the busy 2-core machine), which
would flatter the ratio.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from llm_check.config import Qwen3Config
from llm_check.logprobs import token_logprobs
from llm_check.model import Qwen3
from llm_check.sampling import sample

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


def jax_train_step(config, lr=1e-4):
    """(step, graphdef, params, opt_state), where ``step(params, opt_state, ids, mask)`` returns
    ``(params, opt_state, loss)`` and donates its inputs; ``nnx.merge(graphdef, params)`` is the model."""
    model = Qwen3(config, rngs=nnx.Rngs(0))
    graphdef, params = nnx.split(model, nnx.Param)
    tx = optax.adamw(lr)

    @partial(jax.jit, donate_argnums=(0, 1))
    def step(params, opt_state, ids, mask):
        def loss_fn(p):
            lp = token_logprobs(nnx.merge(graphdef, p), ids, mask)
            return -(lp * mask[:, 1:]).sum() / mask[:, 1:].sum()

        loss, grads = jax.value_and_grad(loss_fn)(params)
        updates, opt_state = tx.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, loss

    return step, graphdef, params, tx.init(params)


def run(batch=4, seq=128, prompt=32, new_tokens=32, sample_batch=4, repeats=3, warmup=2) -> dict:
    import torch
    from transformers import Qwen3Config as HFConfig, Qwen3ForCausalLM

    threads = os.cpu_count() or 1
    cfg = BENCH_CONFIG
    rng = np.random.default_rng(0)
    ids = rng.integers(0, cfg.vocab_size, (batch, seq)).astype(np.int32)
    mask = np.ones_like(ids)
    res = {"config": {k: v for k, v in cfg.to_hf().items() if isinstance(v, (int, float))},
           "batch": batch, "seq": seq, "prompt": prompt, "new_tokens": new_tokens,
           "sample_batch": sample_batch, "repeats": repeats, "threads": threads,
           "jax": jax.__version__, "torch": torch.__version__}

    # -- ours: training step
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
    res["jax_train_s"] = _median_time(ours_train, repeats)

    # -- sampling (greedy, no early stop on either side)
    p_ids = rng.integers(1, cfg.vocab_size, (sample_batch, prompt)).astype(np.int32)
    p_mask = np.ones_like(p_ids)
    model = nnx.merge(graphdef, state[0])  # the trained parameters

    def ours_sample():
        out = sample(model, p_ids, p_mask, jax.random.key(0), max_new_tokens=new_tokens,
                     greedy=True, eos_id=-1)
        out.completion.block_until_ready()

    for _ in range(warmup):
        ours_sample()
    res["jax_sample_s"] = _median_time(ours_sample, max(3, repeats // 2))

    # -- theirs: the same config, trained and sampled with torch threads = XLA's, then 1 thread
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
    res["jax_tokens_per_s"] = n / res["jax_sample_s"]
    for t in sorted({threads, 1}, reverse=True):
        torch.set_num_threads(t)
        hf.train()
        for _ in range(warmup):
            torch_train()
        train_s = _median_time(torch_train, repeats)
        hf.eval()
        for _ in range(warmup):
            torch_sample()
        sample_s = _median_time(torch_sample, max(3, repeats // 2))
        res[f"torch_{t}t"] = {"train_s": train_s, "sample_s": sample_s, "tokens_per_s": n / sample_s,
                              "train_ratio": res["jax_train_s"] / train_s,
                              "sample_ratio": res["jax_tokens_per_s"] / (n / sample_s)}
    same = res[f"torch_{threads}t"]
    best_train = min(res[f"torch_{t}t"]["train_s"] for t in {threads, 1})
    best_tps = max(res[f"torch_{t}t"]["tokens_per_s"] for t in {threads, 1})
    res.update(torch_train_s=same["train_s"], torch_tokens_per_s=same["tokens_per_s"],
               train_ratio=same["train_ratio"], sample_ratio=same["sample_ratio"],
               train_ratio_vs_best_torch=res["jax_train_s"] / best_train,
               sample_ratio_vs_best_torch=res["jax_tokens_per_s"] / best_tps)
    return res


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m llm_check.bench", description=__doc__.split("\n")[0])
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--seq", type=int, default=128)
    ap.add_argument("--prompt", type=int, default=32)
    ap.add_argument("--new-tokens", type=int, default=32)
    ap.add_argument("--sample-batch", type=int, default=4)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--json", action="store_true")
    a = ap.parse_args(argv)
    r = run(a.batch, a.seq, a.prompt, a.new_tokens, a.sample_batch, a.repeats)
    if a.json:
        print(json.dumps(r, indent=2))
        return 0
    print(f"config: {r['params'] / 1e6:.1f}M params, train batch {r['batch']}x{r['seq']}, "
          f"sampling {r['sample_batch']}x({r['prompt']}+{r['new_tokens']}), f32, "
          f"{r['threads']} threads; medians of {r['repeats']}")
    print(f"train step   jax {r['jax_train_s'] * 1e3:8.1f} ms   torch {r['torch_train_s'] * 1e3:8.1f} ms"
          f"   ratio {r['train_ratio']:.2f}x (budget <= 1.0, goal <= 0.5); "
          f"vs torch's best thread count {r['train_ratio_vs_best_torch']:.2f}x")
    print(f"sampling     jax {r['jax_tokens_per_s']:8.1f} tok/s torch {r['torch_tokens_per_s']:8.1f} "
          f"tok/s ratio {r['sample_ratio']:.2f}x (budget >= 1.0, goal >= 2); "
          f"vs torch's best thread count {r['sample_ratio_vs_best_torch']:.2f}x")
    print(f"(jax first-call compile of the train step: {r['jax_compile_s']:.1f} s, excluded)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
