"""Evaluation memory: log-probs at the completion positions only, in mini-batches of rows whose
size comes from the memory estimate (``llm_check/memory.py``), checked against XLA's own count."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from llm_check import data as data_mod
from llm_check import memory
from llm_check.config import preset
from llm_check.logprobs import completion_nll
from llm_check.model import Qwen3
from llm_check.sft import nll_sums, split_model
from llm_check.tokenizer import load_tokenizer
from tests.jaxprs import CHECKPOINT, count

pytestmark = pytest.mark.usefixtures("f32")


def _examples(n=7):
    task = data_mod.load_task("builtin", seed=0, eps=0.3, n_train=16, n_heldout=n, max_operand=9,
                              heldout_fraction=0.0)
    return list(task.heldout[:n])


@pytest.fixture(scope="module")
def model():
    return Qwen3(preset("tiny"), rngs=nnx.Rngs(0), init_std=0.5)


def test_completion_only_logprobs_equal_the_full_sequence_path(model):
    """The split layout, in mini-batches of 3 rows (7 = 3 + 3 + 1 padded), gives the per-row NLL
    and its gradient of the right-padded full sequences with logits at every position."""
    tok = load_tokenizer("tiny")
    rows = _examples()
    full = data_mod.encode_examples(tok, rows)
    split = data_mod.encode_split(tok, rows)
    assert split.completion.shape[1] < full.tokens.shape[1]  # logits at M positions, not T
    graphdef, params, rest = split_model(model)

    def nll_full(p):
        return nll_sums(graphdef, p, rest, *map(jnp.asarray, (full.tokens, full.attention_mask,
                                                              full.completion_mask)),
                        chunk_size=4)[0]

    def nll_split(p, r):
        return completion_nll(nnx.merge(graphdef, p, rest), *map(jnp.asarray, split.arrays()),
                              rows=r)

    want = jax.jit(nll_full)(params)
    for r in (3, 64):  # 3 mini-batches, the last one padded; one mini-batch
        got = jax.jit(nll_split, static_argnums=1)(params, r)
        np.testing.assert_allclose(np.asarray(got), np.asarray(want), rtol=2e-5)
    g_want = jax.jit(jax.grad(lambda p: nll_full(p).sum()))(params)  # compiled: op by op is slow
    g_got = jax.jit(jax.grad(lambda p: nll_split(p, 3).sum()))(params)
    for a, b in zip(jax.tree.leaves(g_want), jax.tree.leaves(g_got)):
        # float32 sums in another order: each entry to 1e-4 of the leaf's largest entry
        a, b = np.asarray(a), np.asarray(b)
        assert np.abs(a - b).max() <= 1e-4 * np.abs(a).max(), np.abs(a - b).max()
    # each mini-batch under jax.checkpoint: a gradient keeps one mini-batch's activations
    assert count(jax.make_jaxpr(jax.grad(lambda p: nll_split(p, 3).sum()))(params), CHECKPOINT)


def test_the_estimate_tracks_what_xla_allocates(model):
    """``eval_bytes`` against XLA's temp bytes of the compiled mini-batch, on the tiny preset at
    several row counts, prompt and completion lengths: an upper bound (the rows it picks fit),
    conservative by less than 3x (measured 1.35-2.64x on tiny, 1.35x at Qwen3-0.6B shapes; it
    counts one layer's activations and the logits' temporaries that XLA fuses away)."""
    graphdef, params, rest = split_model(model)
    cfg = preset("tiny")

    def nll(p, prompt, pmask, completion, cmask, *, rows):
        return completion_nll(nnx.merge(graphdef, p, rest), prompt, pmask, completion, cmask,
                              rows=rows).sum()

    ratios = []
    for rows, tp, m in ((32, 64, 8), (32, 256, 8), (32, 64, 64), (128, 16, 4)):
        args = [jax.ShapeDtypeStruct((rows, tp), jnp.int32)] * 2 + [
            jax.ShapeDtypeStruct((rows, m), jnp.int32)] * 2
        xla = memory.compiled_temp_bytes(nll, params, *args, rows=rows)
        est = memory.eval_bytes(cfg, rows, tp, m)
        ratios.append(est / xla)
    # Qwen3-0.6B shapes, compiled on abstract weights (no memory for them, layers scanned)
    big = memory.xla_eval_bytes(preset("qwen3-0.6b"), 32, 96, 4)
    ratios.append(memory.eval_bytes(preset("qwen3-0.6b"), 32, 96, 4) / big["temp"])
    assert big["params"] == 4 * 596_049_920  # the real model's parameter count, float32
    print("estimate / XLA:", [f"{r:.2f}" for r in ratios])
    assert all(1.0 <= r <= 3.0 for r in ratios), ratios


def test_eval_rows_fit_the_budget_and_split_over_the_devices():
    cfg = preset("qwen3-0.6b")
    per_row = memory.eval_bytes(cfg, 1, 96, 4)
    for n_dev in (1, 4, 8):
        rows = memory.eval_rows(cfg, 96, 4, n_devices=n_dev, budget=40 * per_row)
        assert rows % n_dev == 0 and rows >= n_dev
        assert memory.eval_bytes(cfg, rows, 96, 4) <= 40 * per_row * n_dev
        assert memory.eval_bytes(cfg, rows + n_dev, 96, 4) > 40 * per_row * n_dev
    assert memory.eval_rows(cfg, 96, 4, budget=1) == 1  # at least one row
    assert memory.eval_rows(cfg, 96, 4, n_devices=4, budget=10**15, at_most=10) == 12
    # CoLA's dev set on Qwen3-0.6B shapes: the old path's one logits chunk for the 1,043 rows
    # alone was 40 GB; now mini-batches that fit 8 GiB
    assert memory.full_logits_bytes(cfg, 1043) > 40e9
    rows = memory.eval_rows(cfg, 96, 4, budget=8 * 2**30, at_most=1043)
    assert 64 <= rows < 1043 and memory.eval_bytes(cfg, rows, 96, 4) <= 8 * 2**30
    print(f"CoLA dev on Qwen3-0.6B shapes: {rows} rows a mini-batch, "
          f"{memory.eval_bytes(cfg, rows, 96, 4) / 2**30:.2f} GiB estimated")


def test_the_sampling_estimate_bounds_what_xla_allocates(model):
    """``sample_bytes`` against XLA's temp bytes of the sampler (``sampling._sample``, G
    completions a prompt) and of scoring its completions (``grouped_completion_logprobs``), the
    two programs of a sampled evaluation: an upper bound of the larger, by less than 3x."""
    from llm_check.logprobs import grouped_completion_logprobs
    from llm_check.sampling import _sample

    cfg = preset("tiny")
    graphdef, state = nnx.split(model)
    ratios = []
    for prompts, group, tp, n in ((8, 4, 16, 8), (32, 2, 48, 16), (4, 16, 16, 4)):
        ints = lambda r, t: jax.ShapeDtypeStruct((r, t), jnp.int32)  # noqa: E731

        def sampler(st, p, m):
            return _sample(nnx.merge(graphdef, st), p, m, jax.random.key(0), 1.0, 1.0, 2, 0,
                           max_new_tokens=n, greedy=False, use_top_p=False, repeat=group)

        def score(st, p, m, c):
            return grouped_completion_logprobs(nnx.merge(graphdef, st), p, m, c).sum()

        xla = max(memory.compiled_temp_bytes(sampler, state, ints(prompts, tp), ints(prompts, tp)),
                  memory.compiled_temp_bytes(score, state, ints(prompts, tp), ints(prompts, tp),
                                             ints(prompts * group, n)))
        ratios.append(memory.sample_bytes(cfg, prompts, group, tp, n) / xla)
    print("sampling estimate / XLA:", [f"{r:.2f}" for r in ratios])
    assert all(1.0 <= r <= 3.0 for r in ratios), ratios


def test_the_sampled_evaluation_runs_in_mini_batches(monkeypatch):
    """With 2 prompts a mini-batch, the 8 held-out prompts are sampled in 4 rollouts of 2 (and 4
    greedy ones); the greedy accuracy and the CE, which no key changes, equal the one-batch
    evaluation's."""
    import dataclasses

    from llm_check import pipeline
    from llm_check.cli import _parser, config_from_args

    cfg = config_from_args(_parser().parse_args(
        ["run", "--seeds", "1", "--n-train", "32", "--n-heldout", "8", "--eval-samples", "2",
         "--max-new-tokens", "2"]))
    ctx, params = pipeline.build_context(cfg, 0)
    assert ctx.sample_batch == 8  # the tiny model: everything fits one mini-batch
    calls = []
    real = pipeline.rollout

    def spy(model, tok, prompts, *a, **kw):
        calls.append(prompts.shape[0])
        return real(model, tok, prompts, *a, **kw)

    monkeypatch.setattr(pipeline, "rollout", spy)
    whole = pipeline.evaluate(ctx, params, params, "kl")
    assert calls == [8, 8]
    calls.clear()
    parts = pipeline.evaluate(dataclasses.replace(ctx, sample_batch=2), params, params, "kl")
    assert calls == [2] * 8
    for k in ("sft/ce_heldout", "eval/greedy_accuracy", "exact/ce"):
        assert parts[k] == whole[k], k
    assert abs(parts["kl"]) < 1e-5 and 0 <= parts["rl/reward"] <= 1  # policy = reference


def test_the_memory_command_prints_the_estimate_beside_xla(capsys):
    """``python -m llm_check.memory`` on the tiny preset: the estimate, XLA's count and their
    ratio as ``eval_bytes`` and ``xla_eval_bytes`` give them, and the rows a budget allows."""
    cfg = preset("tiny")
    assert memory.main(["--preset", "tiny", "--rows", "16", "--prompt-len", "24",
                        "--completion-len", "3", "--budget-gib", "0.01", "--total-rows", "100"]) == 0
    out = capsys.readouterr().out
    est = memory.eval_bytes(cfg, 16, 24, 3)
    xla = memory.xla_eval_bytes(cfg, 16, 24, 3)
    assert f"estimate / XLA {est / xla['temp']:.2f}" in out, out
    rows = memory.eval_rows(cfg, 24, 3, budget=int(0.01 * 2**30), at_most=100)
    assert 1 <= rows <= 100 and f"{rows} rows a mini-batch" in out, out
