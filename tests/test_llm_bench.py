"""``python -m llm_check.bench --preset tiny``: the one-device measurement, on CPU at tiny size, and
the pieces its figures come from (bf16 peak table, model FLOPs, peak memory)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from llm_check import bench
from llm_check.config import preset
from llm_check.model import Qwen3
from theory.errors import InputError

pytestmark = pytest.mark.usefixtures("f32")


@pytest.mark.parametrize("kind, peak", [
    ("NVIDIA H100 80GB HBM3", 989e12), ("NVIDIA H100 PCIe", 756e12), ("NVIDIA H200", 989e12),
    ("NVIDIA A100-SXM4-80GB", 312e12), ("NVIDIA A100 80GB PCIe", 312e12), ("cpu", None),
    ("NVIDIA GeForce RTX 4090", None)])
def test_bf16_peak_by_device_kind(kind, peak):
    assert bench.peak_bf16_flops(kind) == peak


@pytest.mark.parametrize("name", ["tiny", "qwen3-0.6b"])
def test_matmul_params_are_the_layer_kernels_plus_the_lm_head(name):
    cfg = preset(name)
    abstract = nnx.eval_shape(lambda: Qwen3(cfg, rngs=nnx.Rngs(0)))
    kernels = sum(int(v.size) for p, v in nnx.to_flat_state(nnx.state(abstract, nnx.Param))
                  if p[-1] == "kernel")
    assert bench.matmul_params(cfg) == kernels + cfg.hidden_size * cfg.vocab_size  # tied head
    if name == "qwen3-0.6b":  # 0.44B non-embedding weights + the 0.16B head (docs/qwen3.md)
        assert bench.matmul_params(cfg) == 596_049_920 - 1024 * (2 * 28 + 1) - 2 * 128 * 28


def test_device_bench_on_cpu_at_tiny_size(capsys, monkeypatch):
    r = bench.device_bench("tiny", repeats=1, batch=2, seq=16, prompts=2, group=2, prompt_len=4,
                           new_tokens=3, scan_layers=True, attention="dot_product")
    assert r["platform"] == "cpu" and r["peak_bf16_flops"] is None
    assert r["attention"] == "dot_product" and r["scan_layers"] and r["dtype"] == "f32"
    s, g = r["sft"], r["grpo"]
    assert s["mfu"] is None and g["update_mfu"] is None
    assert s["tokens_per_s"] == pytest.approx(2 * 16 / s["step_s"])
    assert g["rollouts"] == 4 and g["rollout_tokens_per_s"] == pytest.approx(4 * 3 / g["rollout_s"])
    assert s["model_flops"] == pytest.approx(bench.train_flops_per_token(preset("tiny"), 16) * 32)
    # the update runs each group's 4-token prompt once and the 4 x 3 completion tokens; the LM
    # head only at the completion tokens
    assert g["update_tokens"] == 2 * 4 + 4 * 3
    tf, c = bench.train_flops_per_token, preset("tiny")
    assert g["update_model_flops"] == pytest.approx(
        (tf(c, 4) - 6 * c.hidden_size * c.vocab_size) * 8 + tf(c, 7) * 12)
    assert g["peak_memory_bytes"] >= s["peak_memory_bytes"] > 50e6  # RSS of a process with JAX
    assert r["memory_kind"] == "process max RSS"

    # the command line: flags reach device_bench, and the report prints every figure
    seen = {}
    monkeypatch.setattr(bench, "device_bench", lambda name, **kw: seen.update(kw, name=name) or r)
    assert bench.main(["--preset", "tiny", "--repeats", "1", "--batch", "2", "--seq", "16",
                       "--prompts", "2", "--group", "2", "--prompt-len", "4", "--new-tokens", "3",
                       "--scan-layers", "on", "--attention", "dot_product"]) == 0
    assert seen == dict(name="tiny", dtype=None, attention="dot_product", scan_layers=True,
                        repeats=1, batch=2, seq=16, prompts=2, group=2, prompt_len=4, new_tokens=3,
                        grpo_step=True, window=None, donate=True)
    out = capsys.readouterr().out
    assert "MFU n/a" in out and "rollout tokens/s" in out and "process max RSS" in out
    assert f"{s['tokens_per_s']:10.0f} tokens/s" in out and "compile" in out


def test_the_sft_step_donates_unless_told_not_to(capsys):
    """The device bench's SFT step donates every parameter and optimizer-state array (XLA may then
    write the new ones over the old); ``--no-donate`` measures it as the pipeline's step runs, with
    none donated (the count comes from the compiled step's own argument info)."""
    _, _, params, opt_state = bench.jax_train_step(preset("tiny"))
    arrays = len(jax.tree.leaves(params)) + len(jax.tree.leaves(opt_state))
    kw = dict(repeats=1, batch=2, seq=8, grpo_step=False)
    on, off = bench.device_bench("tiny", **kw), bench.device_bench("tiny", donate=False, **kw)
    assert on["donate"] and on["sft"]["donated_arrays"] == arrays > 0
    assert not off["donate"] and off["sft"]["donated_arrays"] == 0
    assert off["sft"]["step_s"] > 0
    assert bench.main(["--preset", "tiny", "--repeats", "1", "--batch", "2", "--seq", "8",
                       "--sft-only", "--no-donate"]) == 0
    assert "optimizer state not donated" in capsys.readouterr().out
    assert bench.main(["--no-donate"]) == 2  # not silently ignored by the torch comparison
    assert "give --preset" in capsys.readouterr().err


def test_device_bench_can_measure_the_sft_step_alone(capsys):
    assert bench.main(["--preset", "tiny", "--repeats", "1", "--batch", "2", "--seq", "8",
                       "--sft-only"]) == 0
    out = capsys.readouterr().out
    assert "SFT step   [2 x 8]" in out and "GRPO" not in out and "rollout" not in out


def test_the_sft_step_with_an_answer_window_counts_and_measures_the_head_on_w_positions(capsys):
    """``--window W``: the pipeline's SFT loss, the LM head on the last W positions of each row; its
    model FLOPs drop by the head's 6 D V at the T - W positions skipped."""
    cfg = preset("tiny")
    full = bench.device_bench("tiny", repeats=1, batch=2, seq=16, grpo_step=False)
    win = bench.device_bench("tiny", repeats=1, batch=2, seq=16, grpo_step=False, window=4)
    assert win["window"] == 4 and full["window"] is None
    skipped = 6.0 * cfg.hidden_size * cfg.vocab_size * 2 * (16 - 4)
    assert full["sft"]["model_flops"] - win["sft"]["model_flops"] == pytest.approx(skipped)
    assert np.isfinite(win["sft"]["step_s"]) and win["sft"]["step_s"] > 0
    assert bench.main(["--preset", "tiny", "--repeats", "1", "--batch", "2", "--seq", "8",
                       "--sft-only", "--window", "3"]) == 0
    assert "SFT step   [2 x 8, LM head on 3]" in capsys.readouterr().out
    for bad in ("0", "8"):
        assert bench.main(["--preset", "tiny", "--seq", "8", "--sft-only", "--window", bad]) == 2
        assert "--window" in capsys.readouterr().err
    assert bench.main(["--window", "3"]) == 2  # not silently ignored by the torch comparison
    assert "give --preset" in capsys.readouterr().err


def test_the_windowed_train_step_runs_the_lm_head_on_the_window_only():
    """XLA's FLOP count of the compiled step: the window removes at least 90% of the head's
    forward and backward FLOPs at the T - W positions it skips (``sft_step_flops``)."""
    cfg = preset("tiny")
    b, t, w = 2, 16, 4
    ids = jax.ShapeDtypeStruct((b, t), jnp.int32)

    def flops(window):
        step, _, params, opt_state = bench.jax_train_step(cfg, window=window)
        ca = step.lower(params, opt_state, ids, ids).compile().cost_analysis()
        return (ca[0] if isinstance(ca, list) else ca)["flops"]

    saved = bench.sft_step_flops(cfg, b, t) - bench.sft_step_flops(cfg, b, t, w)
    assert flops(None) - flops(w) > 0.9 * saved


def test_the_train_step_donates_only_when_asked():
    """The CPU comparison's step keeps its inputs (as the pipeline's SFT step); ``donate=True`` (the
    device bench) gives them to the step. Both compute the same update."""
    cfg = preset("tiny")
    ids = jnp.asarray(np.random.default_rng(0).integers(0, cfg.vocab_size, (2, 16)), jnp.int32)
    out = {}
    for donate in (False, True):
        step, _, params, opt_state = bench.jax_train_step(cfg, donate=donate)
        leaf = jax.tree.leaves(params)[0]
        new_params, _, loss = step(params, opt_state, ids, jnp.ones_like(ids))
        assert leaf.is_deleted() == donate
        out[donate] = (float(loss), jax.tree.leaves(new_params))
    assert out[False][0] == out[True][0]
    for a, b in zip(out[False][1], out[True][1]):
        np.testing.assert_array_equal(a, b)


def test_the_torch_comparison_times_the_two_sides_in_alternating_pairs(monkeypatch):
    """``_paired``: ours, theirs, then theirs, ours, ...; the ratio is the median of the per-pair
    ratios (0.5, 0.5, 1.0 here), not the ratio of the medians (2 / 3), and its spread is their
    quartiles (0.5 and 0.75, interpolated between the sorted ratios)."""
    clock, order = [0.0], []
    seconds = iter([1.0, 2.0, 4.0, 2.0, 3.0, 3.0])  # by call: pairs (1, 2), (2, 4), (3, 3)
    monkeypatch.setattr(bench.time, "perf_counter", lambda: clock[0])

    def timed(name):
        def fn():
            clock[0] += next(seconds)
            order.append(name)
        return fn

    ours_s, theirs_s, ratio, iqr = bench._paired(timed("ours"), timed("theirs"), 3)
    assert order == ["ours", "theirs", "theirs", "ours", "ours", "theirs"]
    assert (ours_s, theirs_s, ratio, iqr) == (2.0, 3.0, 0.5, (0.5, 0.75))
    seconds = iter([3.0, 1.0])  # one pair: its ratio is the median and both quartiles
    assert bench._paired(timed("ours"), timed("theirs"), 1)[2:] == (3.0, (3.0, 3.0))


@pytest.mark.slow
def test_the_torch_comparison_runs_end_to_end():
    """``python -m llm_check.bench`` (needs torch and transformers, not in the test extra), at
    small shapes: every figure is there; with one training pair its ratio is that pair's."""
    pytest.importorskip("transformers")
    r = bench.run(batch=1, seq=16, prompt=4, new_tokens=3, sample_batch=1, repeats=1, warmup=1)
    for t in {r["threads"], 1}:
        side = r[f"torch_{t}t"]
        assert side["train_ratio"] == pytest.approx(side["jax_train_s"] / side["train_s"])
        assert side["sample_ratio"] > 0 and side["sample_s"] > 0  # 3 pairs: a median of ratios
        assert side["train_ratio_iqr"] == (side["train_ratio"],) * 2  # one pair: no spread
        lo, hi = side["sample_ratio_iqr"]
        assert lo <= side["sample_ratio"] <= hi
        assert side["jax_sample_s"] > 0 and side["tokens_per_s"] == pytest.approx(3 / side["sample_s"])
    assert r["jax_tokens_per_s"] == pytest.approx(3 / r["jax_sample_s"])
    assert {k: r[k] for k in ("train_ratio_vs_best_torch", "sample_ratio_vs_best_torch")} == \
        bench.against_faster_torch(r, {r["threads"], 1})


def test_the_ratios_against_the_faster_torch_come_from_its_own_pairs():
    """Each figure is the paired ratio of the block where torch was faster at that task (2
    threads for training, 1 for sampling here), not the extreme ratio over the blocks."""
    res = {"torch_2t": {"train_s": 1.0, "train_ratio": 0.90, "tokens_per_s": 100.0,
                        "sample_ratio": 1.5},
           "torch_1t": {"train_s": 1.5, "train_ratio": 0.95, "tokens_per_s": 120.0,
                        "sample_ratio": 1.7}}
    assert bench.against_faster_torch(res, {2, 1}) == {"train_ratio_vs_best_torch": 0.90,
                                                       "sample_ratio_vs_best_torch": 1.7}


def test_device_bench_rejects_unknown_presets_and_shapes():
    with pytest.raises(InputError, match="preset 'qwen3-7b'"):
        bench.device_bench("qwen3-7b")
    with pytest.raises(InputError, match="unknown shape 'width'"):
        bench.device_bench("tiny", width=3)


def test_auto_attention_is_dot_product_on_a_gpu_and_einsum_elsewhere():
    assert bench.auto_attention(on_gpu=True) == "dot_product"  # not cuDNN: its gradients were wrong
    assert bench.auto_attention(on_gpu=False) == "einsum"
