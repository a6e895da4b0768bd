"""llm_check.pipeline end to end on a very small config: outputs, the local theory, a SIGKILLed
run resumed to the same metrics as an uninterrupted one, and a NaN loss that stops the run.

The tests that need a whole run (every jitted function compiled: SFT, GRPO, sampling, the HVP) and
the SIGKILL test (a second process compiling everything again) are marked slow: run them with
``pytest -m slow tests/test_llm_pipeline.py``. The NaN test (base + part of SFT) stays in the
default run."""

from __future__ import annotations

import dataclasses
import json
import math
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from llm_check import checkpoint as ckpt
from llm_check import pipeline
from llm_check.cli import _parser, config_from_args
from theory.errors import InputError

pytestmark = pytest.mark.usefixtures("f32")

ARGS = ["--seeds", "1", "--order", "both", "--n-train", "32", "--n-heldout", "8",
        "--eval-samples", "2", "--base-steps", "3", "--sft-steps", "4", "--sft-batch", "8",
        "--rl-steps", "4", "--group-size", "4", "--prompts-per-step", "4",
        "--max-new-tokens", "2", "--eval-every", "2", "--ckpt-every", "2", "--local-steps", "-1",
        "--sft-lr", "1e-3", "--rl-lr", "3e-4", "--report-to", "tensorboard,wandb"]
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _cfg(*extra):
    return config_from_args(_parser().parse_args(["run", *ARGS, *extra]))


def _rows(path):
    with open(path) as f:
        return [json.loads(line) for line in f]


@pytest.fixture(scope="module", autouse=True)
def offline_wandb():
    """ARGS log to W&B: every test of the module (whichever xdist worker runs it) does so offline,
    with no network."""
    saved = {k: os.environ.get(k) for k in ("WANDB_MODE", "WANDB_SILENT")}
    os.environ.update(WANDB_MODE="offline", WANDB_SILENT="true")
    yield
    for k, v in saved.items():
        os.environ.pop(k) if v is None else os.environ.update({k: v})


@pytest.fixture(scope="module")
def reference_run(tmp_path_factory):
    """One uninterrupted run, shared by the tests below."""
    import jax

    out = str(tmp_path_factory.mktemp("ref") / "run")
    with jax.enable_x64(False):
        summary = pipeline.run(_cfg(), out)
    return out, summary


def test_outputs_and_summary(reference_run):
    """A tiny run, both orders, report included: in the default suite (issue: CI runs the LLM
    command end to end)."""
    out, summary = reference_run
    for name in ("config.json", "metrics.jsonl", "summary.json", "report.md", "ce_during_rl.png",
                 "reward_during_sft.png", "misalignment.png"):
        assert os.path.getsize(os.path.join(out, name)) > 0, name
    rows = _rows(os.path.join(out, "metrics.jsonl"))
    # one row a step, plus the step-0 evaluation of each stage: base 3, SFT 4, RL 4
    assert [(r["order"], r["stage"], r["step"]) for r in rows] == (
        [("base", "base", k) for k in range(4)] + [("sft_then_rl", "sft", k) for k in range(5)]
        + [("sft_then_rl", "rl", k) for k in range(5)]
        + [("rl_then_sft", "rl", k) for k in range(5)]
        + [("rl_then_sft", "sft", k) for k in range(5)])
    rl = [r for r in rows if r["stage"] == "rl" and r["step"] > 0]
    for key in ("reward", "reward_std", "frac_reward_zero_std", "kl", "kl_seq", "entropy",
                "clip_ratio/low_mean", "clip_ratio/high_mean", "clip_ratio/region_mean",
                "completions/mean_length", "grad/cos_ce_rl", "local/ce_pred", "local/dce_pred"):
        assert all(key in r for r in rl), key
    # at RL step 1 the policy IS the reference, and in kl_mode reward both log-probs come from
    # the same function, so the KL in the reward is exactly 0 (the sampler's own log-probs differ
    # from it by float noise, which Adam would turn into steps when the rewards carry no signal)
    assert [r["kl_seq"] for r in rl if r["step"] == 1] == [0.0, 0.0]
    first_rl = [r for r in rows if r["stage"] == "rl" and r["step"] == 0]
    assert all("pred/ce_change" in r and "exact/target_gap" in r for r in first_rl)
    first_sft = [r for r in rows if r["order"] == "rl_then_sft" and r["stage"] == "sft"][0]
    assert 0 < first_sft["pred/reward"] < 1
    s = json.load(open(os.path.join(out, "summary.json")))
    assert s == json.loads(json.dumps(summary))
    a = s["sft_then_rl"]
    assert a["ce_before_rl"] == first_rl[0]["exact/ce"]
    assert a["ce_change_pred"] == first_rl[0]["pred/ce_change"]
    assert math.isclose(a["ce_rise"], a["ce_after_rl"] - a["ce_before_rl"])
    assert "0" in a["per_seed"] and "ci95" in a and "rel_err" in a
    assert s["rl_then_sft"]["reward_after_sft_pred"] == first_sft["pred/reward"]
    cfg = json.load(open(os.path.join(out, "config.json")))
    assert cfg["grpo"]["kl_mode"] == "reward" and cfg["grpo"]["group_size"] == 4
    report = open(os.path.join(out, "report.md")).read()
    assert "Gibbs tilt" in report and "measured against predicted" in report


def test_local_second_order_prediction_matches_small_steps(reference_run):
    out, _ = reference_run
    rl = [r for r in _rows(os.path.join(out, "metrics.jsonl"))
          if r["stage"] == "rl" and "local/dce_pred" in r]
    assert len(rl) == 8  # 4 steps in each order
    for r in rl:
        assert math.isclose(r["local/ce_pred"], r["local/ce_before"] + r["local/dce_pred"],
                            rel_tol=1e-9)
        # the measured change is O(delta^3) away from the prediction; tiny lr, tiny delta
        assert abs(r["local/dce_pred"] - r["local/dce_measured"]) <= (
            0.25 * abs(r["local/dce_measured"]) + 2e-5), r


@pytest.mark.slow
def test_sigkill_then_resume_gives_the_uninterrupted_metrics(reference_run, tmp_path):
    ref_out, _ = reference_run
    out = str(tmp_path / "run")
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    proc = subprocess.Popen([sys.executable, "-m", "toy_models.cli", "llm", "run", *ARGS,
                             "--out", out], cwd=ROOT, env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    # Orbax renames the step folder into place once it is complete
    marker = os.path.join(out, "runs", "seed0", "sft_then_rl", "sft", "ckpt", "2")
    deadline = time.time() + 300
    while not os.path.exists(marker) and proc.poll() is None and time.time() < deadline:
        time.sleep(0.02)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert os.path.exists(marker), "the run never reached its first SFT checkpoint"
    assert not os.path.exists(os.path.join(out, "summary.json")), "killed too late"
    with pytest.raises(InputError, match="already holds a run"):
        pipeline.run(_cfg(), out)
    with pytest.raises(InputError, match="setting eps differs"):
        pipeline.run(_cfg("--eps", "0.25"), out, resume=True)
    # a kill in the middle of writing a row leaves its first half: the resume drops it
    with open(os.path.join(out, "runs", "seed0", "sft_then_rl", "sft", "metrics.jsonl"), "a") as f:
        f.write('{"seed": 0, "order": "sft_then_rl", "stage": "sft", "st')
    pipeline.run(_cfg(), out, resume=True)
    assert _rows(os.path.join(out, "metrics.jsonl")) == _rows(
        os.path.join(ref_out, "metrics.jsonl"))


def test_a_damaged_run_folder_is_a_clear_error_on_resume(tmp_path):
    """A config.json that is not JSON, or a metrics row that is not (other than a last row cut
    short by a kill), stops ``--resume`` with an InputError naming the file (and line)."""
    out = tmp_path / "run"
    out.mkdir()
    (out / "config.json").write_text("{not json")
    with pytest.raises(InputError, match="--resume .*config.json: not valid JSON"):
        pipeline.run(_cfg(), str(out), resume=True)
    (out / "config.json").write_text("[1, 2]")
    with pytest.raises(InputError, match="config.json: expected a table of settings"):
        pipeline.run(_cfg(), str(out), resume=True)
    rows = tmp_path / "metrics.jsonl"
    rows.write_text('{"step": 1}\n\n{"step": 2}\n{"st')
    assert pipeline._read_rows(str(rows)) == [{"step": 1}, {"step": 2}]
    rows.write_text('{"step": 1}\n{"st\n{"step": 3}\n')
    with pytest.raises(InputError, match=r"metrics.jsonl:2: not a JSON row"):
        pipeline._read_rows(str(rows))
    rows.write_text('{"step": 1}\n[1, 2]\n')
    with pytest.raises(InputError, match=r"metrics.jsonl:2: not a JSON object"):
        pipeline._read_rows(str(rows))


def test_nan_loss_stops_and_keeps_the_last_good_checkpoint(tmp_path, monkeypatch):
    real = pipeline.sft_step_fn

    def poisoned(ctx, source, step, stage):
        run = real(ctx, source, step, stage)

        def step(params, opt_state, k):
            params, opt_state, row = run(params, opt_state, k)
            if stage == "sft" and k == 3:
                row["loss"] = float("nan")
            return params, opt_state, row

        return step

    monkeypatch.setattr(pipeline, "sft_step_fn", poisoned)
    out = str(tmp_path / "run")
    with pytest.raises(pipeline.NonFiniteLoss, match="sft step 3: loss is nan"):
        pipeline.run(_cfg(), out)
    sft_dir = os.path.join(out, "runs", "seed0", "sft_then_rl", "sft")
    assert ckpt.latest_state(os.path.join(sft_dir, "ckpt")) == 2
    assert not os.path.exists(os.path.join(sft_dir, "final"))
    assert max(r["step"] for r in _rows(os.path.join(sft_dir, "metrics.jsonl"))) == 2


def test_settings_rejected_up_front(tmp_path):
    with pytest.raises(InputError, match="sft_batch=64: larger than the train set"):
        pipeline.build_context(_cfg("--sft-batch", "64"), 0)
    rows = tmp_path / "long.jsonl"  # an answer longer than the sampler may write
    rows.write_text("".join(json.dumps({"prompt": f"city {i}?", "answer": "New York"
                                        if i == 7 else "Oslo"}) + "\n" for i in range(40)))
    from llm_check.tokenizer import load_tokenizer

    n = len(load_tokenizer("tiny").encode("New York"))
    with pytest.raises(InputError, match=f"--max-new-tokens {n - 1}: the answer 'New York' takes "
                                         f"{n} tokens"):
        pipeline.build_context(_cfg("--task", f"jsonl:{rows}", "--heldout-fraction", "0.5",
                                    "--max-new-tokens", str(n - 1)), 0)
    with pytest.raises(InputError, match="--order"):
        pipeline.RunConfig(order="rl-only").validate()
    for beta in (float("nan"), -0.1):  # a KL weight that is not a number >= 0
        with pytest.raises(InputError, match="beta"):
            dataclasses.replace(pipeline.RunConfig(), grpo=dataclasses.replace(
                pipeline.RunConfig().grpo, beta=beta)).validate()


def _synthetic_rows(seed, ce_before, ce_after, r_before, r_after, pred=0.5, gap=0.01):
    rows = []
    for run, stages in (("sft_then_rl", ("sft", "rl")), ("rl_then_sft", ("rl", "sft"))):
        for stage in stages:
            for step in (0, 1, 2):
                row = {"seed": seed, "order": run, "stage": stage, "step": step}
                if run == "sft_then_rl" and stage == "rl":
                    row["exact/ce"] = row["sft/ce_heldout"] = ce_before if step == 0 else ce_after
                    row["exact/target_gap"] = 0.3 if step == 0 else gap
                    if step == 0:
                        row.update({"pred/ce_change": pred, "pred/reward": 0.95})
                if run == "rl_then_sft" and stage == "sft":
                    row["exact/reward"] = row["rl/reward"] = r_before if step == 0 else r_after
                    row["rl/reward_robust"] = row["rl/reward"]
                    if step == 0:
                        row["pred/reward"] = 0.7
                if stage == "rl" and step > 0:
                    row.update({"local/dce_pred": 0.11, "local/dce_measured": 0.1,
                                "local/ce_before": 0.9, "grad/cos_ce_rl": -0.5,
                                "local/ce_pred": 1.0})
                rows.append(row)
    return rows


def test_summary_measured_against_predicted_with_intervals(tmp_path):
    from llm_check import report
    from llm_check.sweep_report import interval

    cfg = pipeline.RunConfig(seeds=(0, 1, 2), eps=0.3)
    rows = (_synthetic_rows(0, 0.6, 1.2, 0.9, 0.7) + _synthetic_rows(1, 0.7, 1.1, 0.8, 0.72)
            + _synthetic_rows(2, 0.65, 1.1, 0.95, 0.69, gap=0.05))
    s = report.write_report(cfg, rows, str(tmp_path))
    a, b = s["sft_then_rl"], s["rl_then_sft"]
    rises = [0.6, 0.4, 0.45]
    assert math.isclose(a["ce_rise"], np.mean(rises))
    half = 4.303 * np.std(rises, ddof=1) / math.sqrt(3)  # Student t, 2 degrees of freedom
    assert math.isclose(a["ci95"]["ce_rise"], half, rel_tol=1e-3)
    assert interval([1.0])[1] == 0.0
    assert math.isclose(a["rel_err"], abs(np.mean(rises) - 0.5) / 0.5)
    assert math.isclose(a["pair_err"], np.mean(rises) - 0.5)
    assert a["holds_in_all_seeds"] and a["holds_ci95"]
    assert a["per_seed"]["0"]["reached_target"] and not a["per_seed"]["2"]["reached_target"]
    assert not a["reached_target_all_seeds"]
    assert math.isclose(b["reward_before_sft"], np.mean([0.9, 0.8, 0.95]))
    assert math.isclose(b["max_abs_err"], 0.02, abs_tol=1e-12)
    assert b["holds_in_all_seeds"]
    assert s["setting"] == "exact" and "Gibbs tilt" in s["fixed_point"]
    md = (tmp_path / "report.md").read_text()
    assert "Gibbs tilt" in md and f"{a['ce_rise']:.4f} ± {a['ci95']['ce_rise']:.4f}" in md
    # a seed whose CE falls: the coupling no longer holds in every seed, nor by its interval
    rows = _synthetic_rows(0, 0.6, 1.2, 0.9, 0.7) + _synthetic_rows(1, 0.7, 0.5, 0.8, 0.85)
    s = report.write_report(pipeline.RunConfig(seeds=(0, 1)), rows, str(tmp_path))
    assert not s["sft_then_rl"]["holds_in_all_seeds"] and not s["sft_then_rl"]["holds_ci95"]
    assert not s["rl_then_sft"]["holds_in_all_seeds"]


def test_a_run_repeats_from_its_own_config(reference_run, tmp_path):
    """``coupling llm run --config A/config.json --out B``: B's metrics.jsonl equals A's."""
    import jax

    from llm_check import cli

    ref_out, _ = reference_run
    out = str(tmp_path / "again")
    with jax.enable_x64(False):
        assert cli.main(["run", "--config", os.path.join(ref_out, "config.json"), "--out",
                         out]) == 0
    assert _rows(os.path.join(out, "metrics.jsonl")) == _rows(
        os.path.join(ref_out, "metrics.jsonl"))
    assert json.load(open(os.path.join(out, "config.json"))) == json.load(
        open(os.path.join(ref_out, "config.json")))


def _tfrecords(path):
    """The records of a TFRecord file: [length u64][crc u32][data][crc u32] each."""
    import struct

    data, pos = open(path, "rb").read(), 0
    while pos < len(data):
        (n,) = struct.unpack("<Q", data[pos:pos + 8])
        yield data[pos + 12:pos + 12 + n]
        pos += 12 + n + 4


def _wandb_records(path):
    """The records of a W&B run file: a 7-byte header, then a LevelDB log (32 KiB blocks of
    [crc u32][length u16][type u8][data] chunks; types 1 full, 2 first, 3 middle, 4 last)."""
    import struct

    data = open(path, "rb").read()
    assert data[:4] == b":W&B"
    pos, block, buf = 7, 32768, b""
    while pos + 7 <= len(data):
        left = block - pos % block
        if left < 7:
            pos += left
            continue
        _, n, kind = struct.unpack("<IHB", data[pos:pos + 7])
        if n == 0 and kind == 0:
            pos += left
            continue
        chunk, pos = data[pos + 7:pos + 7 + n], pos + 7 + n
        buf = chunk if kind in (1, 2) else buf + chunk
        if kind in (1, 4):
            yield buf


def test_tensorboard_and_wandb_receive_every_row(reference_run):
    """--report-to tensorboard,wandb: the event file and the offline W&B run hold each row's
    scalars under seed/order/stage/metric (TRL's names as the leaf), read back from disk."""
    import glob

    from tensorboardX.proto import event_pb2
    from wandb.proto import wandb_internal_pb2

    out, _ = reference_run
    rows = _rows(os.path.join(out, "metrics.jsonl"))
    want = {}
    for r in rows:
        for k, v in r.items():
            if k not in ("seed", "order", "stage", "step") and isinstance(v, (int, float)):
                want[(f"seed{r['seed']}/{r['order']}/{r['stage']}/{k}", r["step"])] = float(v)
    (events,) = glob.glob(os.path.join(out, "tensorboard", "events.out.tfevents.*"))
    got = {}
    for raw in _tfrecords(events):
        e = event_pb2.Event()
        e.ParseFromString(raw)
        for v in e.summary.value:
            got[(v.tag, e.step)] = v.simple_value
    assert set(got) == set(want)
    for key, v in want.items():
        assert math.isclose(got[key], v, rel_tol=1e-6, abs_tol=1e-6), key
    assert ("seed0/sft_then_rl/rl/reward", 1) in got and ("seed0/rl_then_sft/rl/kl", 2) in got
    (run_file,) = glob.glob(os.path.join(out, "wandb", "offline-run-*", "run-*.wandb"))
    history, config = [], None
    for raw in _wandb_records(run_file):
        rec = wandb_internal_pb2.Record()
        rec.ParseFromString(raw)
        if rec.WhichOneof("record_type") == "history":
            history.append({i.key or "/".join(i.nested_key): json.loads(i.value_json)
                            for i in rec.history.item})
        if rec.WhichOneof("record_type") == "run":  # the run record carries the config
            config = {i.key or "/".join(i.nested_key): json.loads(i.value_json)
                      for i in rec.run.config.update}
    assert len(history) == len(rows)
    for h, r in zip(history, rows):
        prefix = f"seed{r['seed']}/{r['order']}/{r['stage']}/"
        assert h[prefix + "stage_step"] == r["step"]
        for k, v in r.items():
            if k not in ("seed", "order", "stage", "step") and isinstance(v, (int, float)):
                assert math.isclose(h[prefix + k], v, rel_tol=1e-6, abs_tol=1e-6), k
    assert config is not None and config["grpo"]["kl_mode"] == "reward"


def test_eval_takes_the_checkpoints_seed_and_ignores_training_batch_sizes(tmp_path, capsys):
    """``coupling llm eval`` of a stage checkpoint evaluates the held-out rows of the checkpoint's
    own seed unless ``--seed`` says otherwise, and a task smaller than the training batch sizes
    (or a mesh they do not divide) is no reason to refuse it: the evaluation trains nothing."""
    from toy_models.cli import main
    from llm_check.sft import split_model

    model, mc, _ = pipeline.load_model(pipeline.RunConfig(), 0)
    _, params, _ = split_model(model)
    folder = str(tmp_path / "final")
    ckpt.save_checkpoint(folder, {"params": params}, {"seed": 3, "model_config": mc.to_hf(),
                                                      "tokenizer": "tiny", "step": 0})
    kw = dict(task="builtin", n_train=32, n_heldout=8, eval_samples=1, max_new_tokens=2)
    own = pipeline.evaluate_checkpoint(folder, **kw)
    assert own["seed"] == 3 and own == pipeline.evaluate_checkpoint(folder, seed=3, **kw)
    other = pipeline.evaluate_checkpoint(folder, seed=0, **kw)
    assert other["sft/ce_heldout"] != own["sft/ce_heldout"]  # another split
    rows = tmp_path / "small.jsonl"  # 20 rows: 18 to train on, under --sft-batch 32
    rows.write_text("".join(json.dumps({"prompt": f"{i} + 1 =", "answer": str(i + 1)}) + "\n"
                            for i in range(20)))
    capsys.readouterr()
    assert main(["llm", "eval", "--model", folder, "--task", f"jsonl:{rows}", "--json",
                 "--eval-samples", "1", "--max-new-tokens", "2"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert (out["seed"], out["heldout_rows"]) == (3, 2)
    bad = tmp_path / "bad"
    ckpt.save_checkpoint(str(bad), {"params": params}, {"seed": "x", "model_config": mc.to_hf()})
    assert main(["llm", "eval", "--model", str(bad)]) == 2
    assert "seed 'x' is not a seed" in capsys.readouterr().err


def test_resume_compares_every_setting_and_fills_in_ones_added_since(tmp_path):
    """``setting_differs`` names the first differing setting, nested ones by their path; a field
    missing from an older config.json (top-level or inside ``grpo``) counts as its default, and a
    renamed one is read under its old name."""
    from llm_check.run_config import load_run_config

    cfg = _cfg()
    path = str(tmp_path / "config.json")

    def stored(edit):
        data = json.loads(json.dumps(cfg.to_json()))
        edit(data)
        with open(path, "w") as f:
            json.dump(data, f)
        return load_run_config(path, "--resume")

    assert pipeline.setting_differs(stored(lambda d: None), cfg) is None

    def older(d):  # a run from before remat and kl_in_baseline existed and clip_low was renamed
        del d["remat"], d["grpo"]["kl_in_baseline"]
        d["grpo"]["clip_eps_low"] = d["grpo"].pop("clip_low")
    assert pipeline.setting_differs(stored(older), cfg) is None
    assert pipeline.setting_differs(stored(lambda d: d["grpo"].update(beta=0.5)), cfg) == "grpo.beta"
    assert pipeline.setting_differs(stored(lambda d: d.update(eps=0.1)), cfg) == "eps"
    on = dataclasses.replace(cfg, grpo=dataclasses.replace(cfg.grpo, kl_in_baseline=True))
    assert pipeline.setting_differs(stored(older), on) == "grpo.kl_in_baseline"
