"""``coupling llm sweep`` end to end at toy size: every combination, shared base/SFT, the output
files and their keys, resume that skips finished runs, and bad settings refused before any write."""

from __future__ import annotations

import json
import os

import pytest

from llm_check import cli

pytestmark = pytest.mark.usefixtures("f32")

ARGS = ["--betas", "0.5", "--eps", "0.3,0", "--seeds", "1", "--settings", "exact,paper",
        "--n-train", "32", "--n-heldout", "8", "--eval-samples", "2", "--base-steps", "3",
        "--sft-steps", "3", "--sft-batch", "8", "--rl-steps", "2", "--group-size", "4",
        "--prompts-per-step", "4", "--max-new-tokens", "2", "--eval-every", "2",
        "--no-local-theory"]
KEYS = {"beta", "eps", "seed", "setting", "order", "fixed_point", "reward_before_rl",
        "reward_after_rl", "reward_target", "target_gap"}


@pytest.fixture(scope="module")
def sweep_dir(tmp_path_factory):
    import jax

    out = str(tmp_path_factory.mktemp("sweep") / "s")
    with jax.enable_x64(False):  # two worker processes, one (seed, eps) cell each
        assert cli.main(["sweep", *ARGS, "--out", out, "--workers", "2"]) == 0
    return out


def test_every_combination_with_its_prediction(sweep_dir):
    with open(os.path.join(sweep_dir, "sweep.json")) as f:
        doc = json.load(f)
    runs = doc["runs"]
    sft_rl = [r for r in runs if r["order"] == "sft_then_rl"]
    rl_sft = [r for r in runs if r["order"] == "rl_then_sft"]
    assert len(sft_rl) == 4 and len(rl_sft) == 2  # 2 eps x 2 settings; RL then SFT: 2 eps
    for r in sft_rl:
        assert KEYS | {"ce_before_rl", "ce_after_rl", "ce_rise", "ce_rise_pred"} <= set(r)
        assert (r["rl_lr"], r["rl_adam_eps"]) == {"exact": (3e-3, 1e-3),  # each setting's own
                                                  "paper": (1e-3, 1e-3)}[r["setting"]]
        assert abs(r["ce_rise"] - (r["ce_after_rl"] - r["ce_before_rl"])) < 1e-12
        assert isinstance(r["ce_rise_pred"], float)
    for r in rl_sft:
        assert KEYS | {"reward_before_sft", "reward_after_sft", "reward_after_sft_pred"} <= set(r)
        # [thm41.gibbs]: the measured drop is the prediction less beta KL(p_RL || p*)
        assert abs(r["j_drop"] - (r["j_drop_pred"] - r["beta"] * r["kl_rl_to_tilt"])) < 1e-9
    # base and SFT are trained once per (seed, eps) and shared: one SFT folder per eps
    root = os.path.join(sweep_dir, "runs", "seed0")
    assert sorted(os.listdir(root)) == ["eps0", "eps0.3"]
    starts = {(r["eps"], r["setting"]): r["ce_before_rl"] for r in sft_rl}
    assert starts[(0.3, "exact")] == starts[(0.3, "paper")]
    groups = doc["groups"]
    assert {(g["order"], g["setting"], g["eps"]) for g in groups} >= {
        ("sft_then_rl", "exact", 0.3), ("sft_then_rl", "paper", 0.0)}
    for name in ("sweep.md", "sweep.png"):
        assert os.path.getsize(os.path.join(sweep_dir, name)) > 1000
    md = open(os.path.join(sweep_dir, "sweep.md")).read()
    assert "negative control" in md and "rel. err." in md and "thm41.gibbs" in md


def test_resume_skips_finished_runs(sweep_dir, monkeypatch):
    from llm_check import pipeline

    def refuse(*a, **k):
        raise AssertionError("a finished run was trained again")

    monkeypatch.setattr(pipeline, "run_stage", refuse)
    before = open(os.path.join(sweep_dir, "rows.jsonl")).read()
    # in this process, so that the patched run_stage is the one a resumed run would call
    assert cli.main(["sweep", *ARGS, "--out", sweep_dir, "--resume", "--workers", "1"]) == 0
    assert open(os.path.join(sweep_dir, "rows.jsonl")).read() == before


def test_resume_runs_only_the_missing_run(sweep_dir, tmp_path, monkeypatch):
    """A sweep stopped after all but one run, killed while writing that run's row: --resume
    drops the half-written row and touches only that run's folders."""
    import shutil

    from llm_check import pipeline

    out = str(tmp_path / "s")
    shutil.copytree(sweep_dir, out)
    rows_path = os.path.join(out, "rows.jsonl")
    lines = open(rows_path).read().splitlines(keepends=True)
    missing = json.loads(lines[-1])
    with open(rows_path, "w") as f:
        f.writelines(lines[:-1])
        f.write(lines[-1][:20])  # the first bytes of the last row, no newline
    called, real = [], pipeline.run_stage
    monkeypatch.setattr(pipeline, "run_stage", lambda *a, **k: called.append(k["folder"])
                        or real(*a, **k))
    import jax

    with jax.enable_x64(False):
        assert cli.main(["sweep", *ARGS, "--out", out, "--resume", "--workers", "1"]) == 0
    run_dir = os.path.join(out, "runs", f"seed{missing['seed']}", f"eps{missing['eps']:g}")
    stages = {os.path.relpath(f, run_dir) for f in called} - {"base", "sft"}
    folder = f"{missing['setting']}_beta{missing['beta']:g}/{missing['order']}"
    assert stages and all(s.startswith(folder) for s in stages), (stages, folder)
    keys = [json.loads(x)["key"] for x in open(rows_path)]
    assert sorted(keys) == sorted(json.loads(x)["key"] for x in lines)


@pytest.mark.parametrize("flag,value,match", [("--betas", "0.5,-1", "--betas"),
                                              ("--eps", "1.2", "--eps"),
                                              ("--settings", "exact,trl", "--settings"),
                                              ("--workers", "0", "--workers"),
                                              ("--workers", "two", "--workers")])
def test_bad_settings_write_nothing(tmp_path, flag, value, match):
    from theory.errors import InputError

    out = str(tmp_path / "never")
    args = [a for a in ARGS] + ["--workers", "auto"]
    args[args.index(flag) + 1] = value
    with pytest.raises(InputError, match=match):
        cli.main(["sweep", *args, "--out", out])
    assert not os.path.exists(out)
