"""Data parallelism in the LLM pipeline (``--mesh``), ``--remat``, and a resume that keeps the mesh.

The multi-device run happens in a subprocess with 4 simulated CPU devices (XLA_FLAGS must be set
before JAX initializes): a very small ``sft_then_rl`` run without a mesh, then the same run with
``--mesh data=2,fsdp=2 --remat``, stopped by an exception at RL step 3 (after its step-2
checkpoint) and resumed. Checked: the metrics of the two agree to float32 tolerance (the reduction
order differs across device counts, so they are not bitwise equal); every batch a jitted function
receives has its rows split over the 4 devices; the params stay FSDP-sharded through the run and
through the resume (restored from the ``final`` folders of base and SFT and from the RL step
checkpoint)."""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
import textwrap

import jax
import jax.numpy as jnp
import pytest

from llm_check import pipeline
from llm_check.cli import _parser, config_from_args
from llm_check.run_config import RunConfig, load_run_config
from theory.errors import InputError

pytestmark = pytest.mark.usefixtures("f32")

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# tests/test_llm_pipeline.py's tiny run, one order, no trackers
ARGS = ["--seeds", "1", "--order", "sft_then_rl", "--n-train", "32", "--n-heldout", "8",
        "--eval-samples", "2", "--base-steps", "3", "--sft-steps", "4", "--sft-batch", "8",
        "--rl-steps", "4", "--group-size", "4", "--prompts-per-step", "4",
        "--max-new-tokens", "2", "--eval-every", "2", "--ckpt-every", "2", "--local-steps", "-1",
        "--sft-lr", "1e-3", "--rl-lr", "3e-4"]
COMPARED = ("sft/ce_heldout", "exact/ce", "exact/reward", "rl/reward", "reward", "loss",
            "grad_norm", "kl_seq", "entropy")

SCRIPT = textwrap.dedent('''
    import dataclasses, json, os, sys
    import jax
    from llm_check import pipeline
    from llm_check.cli import _parser, config_from_args

    assert jax.device_count() == 4
    args, out = json.loads(sys.argv[1]), sys.argv[2]
    cfg = lambda *extra: config_from_args(_parser().parse_args(["run", *args, *extra]))

    def describe(x):
        s = x.sharding
        return {"spec": str(getattr(s, "spec", None)), "devices": len(s.device_set),
                "shards": len(x.addressable_shards),
                "shard_shape": list(x.addressable_shards[0].data.shape)}

    def tree_summary(tree):
        leaves = jax.tree.leaves(tree)
        return {"leaves": len(leaves),
                "named": sum(isinstance(x.sharding, jax.sharding.NamedSharding) for x in leaves),
                "fsdp": sum("fsdp" in str(getattr(x.sharding, "spec", "")) for x in leaves),
                "one_device": sum(len(x.sharding.device_set) == 1 for x in leaves)}

    seen, stage_params, phase = {}, [], ["plain"]
    real_make_jitted = pipeline.make_jitted
    cache = {}

    def spy_make_jitted(c, graphdef, rest):
        # one set of compiled functions per settings: the resumed run reuses the stopped one's
        if c not in cache:
            cache[c] = real_make_jitted(c, graphdef, rest)
        fns = cache[c]

        def wrap(name, f, n_state):
            def g(*a, **kw):
                key = f"{phase[0]}:{name}"
                if key not in seen:  # the first call of each phase
                    seen[key] = {"state": [tree_summary(t) for t in a[:n_state]],
                                 "batch": [describe(x) for x in a[n_state:]
                                           if isinstance(x, jax.Array)],
                                 "window": kw.get("window")}
                return f(*a, **kw)
            return g
        return dataclasses.replace(
            fns, sft_step=wrap("sft_step", fns.sft_step, 2),
            base_step=wrap("base_step", fns.base_step, 2), rl_step=wrap("rl_step", fns.rl_step, 2),
            ce=wrap("ce", fns.ce, 1), logp=wrap("logp", fns.logp, 1),
            reward_grad=wrap("reward_grad", fns.reward_grad, 1))

    real_rollout = pipeline.rollout

    def spy_rollout(model, tok, prompts, pmask, *a, **kw):
        seen.setdefault(f"{phase[0]}:rollout", {"batch": [describe(jax.numpy.asarray(prompts)),
                                                          describe(jax.numpy.asarray(pmask))]})
        return real_rollout(model, tok, prompts, pmask, *a, **kw)

    real_run_stage = pipeline.run_stage

    def spy_run_stage(ctx, **kw):
        params = real_run_stage(ctx, **kw)
        stage_params.append({"phase": phase[0], "stage": kw["stage"], **tree_summary(params)})
        return params

    class Stop(Exception):
        pass

    real_rl_step_fn = pipeline.rl_step_fn

    def stopping_rl_step_fn(ctx, ref, step=None):
        run = real_rl_step_fn(ctx, ref, step)

        def go(params, opt_state, k):
            if phase[0] == "stopped" and k == 3:
                raise Stop("after the RL step-2 checkpoint")
            return run(params, opt_state, k)
        return go

    pipeline.make_jitted, pipeline.rollout = spy_make_jitted, spy_rollout
    pipeline.run_stage, pipeline.rl_step_fn = spy_run_stage, stopping_rl_step_fn

    pipeline.run(cfg(), os.path.join(out, "plain"))
    mesh_cfg = cfg("--mesh", "data=2,fsdp=2", "--remat")
    phase[0] = "stopped"
    try:
        pipeline.run(mesh_cfg, os.path.join(out, "mesh"))
        raise SystemExit("the run was not stopped")
    except Stop:
        pass
    from llm_check.checkpoint import latest_state
    ckpt = os.path.join(out, "mesh", "runs", "seed0", "sft_then_rl", "rl", "ckpt")
    assert latest_state(ckpt) == 2, "no RL step-2 checkpoint"
    phase[0] = "resumed"
    pipeline.run(mesh_cfg, os.path.join(out, "mesh"), resume=True)
    # `coupling llm eval` of the RL stage's final checkpoint, on one device and on the mesh
    final = os.path.join(out, "mesh", "runs", "seed0", "sft_then_rl", "rl", "final")
    evals = {}
    for name, mesh in (("one", None), ("mesh", "data=2,fsdp=2")):
        phase[0] = f"eval-{name}"
        evals[name] = pipeline.evaluate_checkpoint(final, task="builtin", n_train=32, n_heldout=8,
                                                   eval_samples=2, max_new_tokens=2, mesh=mesh)
    print(json.dumps({"seen": seen, "stage_params": stage_params, "evals": evals}))
''')


def _rows(path):
    with open(path) as f:
        return [json.loads(line) for line in f]


@pytest.fixture(scope="module")
def mesh_runs(tmp_path_factory):
    out = str(tmp_path_factory.mktemp("dp"))
    env = dict(os.environ, JAX_PLATFORMS="cpu", JAX_ENABLE_X64="0",
               XLA_FLAGS="--xla_force_host_platform_device_count=4 "
                         "--xla_backend_optimization_level=0 --xla_cpu_use_fusion_emitters=false",
               PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    proc = subprocess.run([sys.executable, "-c", SCRIPT, json.dumps(ARGS), out], env=env,
                          capture_output=True, text=True, timeout=600, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-4000:]
    return out, json.loads(proc.stdout.strip().splitlines()[-1])


def test_mesh_run_metrics_equal_the_one_device_run(mesh_runs):
    out, _ = mesh_runs
    plain = _rows(os.path.join(out, "plain", "metrics.jsonl"))
    mesh = _rows(os.path.join(out, "mesh", "metrics.jsonl"))
    assert [(r["stage"], r["step"]) for r in plain] == [(r["stage"], r["step"]) for r in mesh]
    n, worst = 0, {}
    for a, b in zip(plain, mesh):
        for k in COMPARED:
            if k in a:
                n += 1
                worst[k] = max(worst.get(k, 0.0), abs(a[k] - b[k]) / max(abs(a[k]), 1e-3))
                # float32 sums in another order on 4 devices: not bitwise equal
                assert b[k] == pytest.approx(a[k], rel=1e-4, abs=1e-6), (k, a, b)
    assert n > 50 and {"reward", "loss", "sft/ce_heldout", "exact/ce"} <= set(worst)
    print("largest relative differences, mesh vs one device:", worst)
    # the mesh run's settings, remat included, are its config.json
    stored = json.load(open(os.path.join(out, "mesh", "config.json")))
    assert stored["mesh"] == "data=2,fsdp=2" and stored["remat"] is True
    assert json.load(open(os.path.join(out, "plain", "config.json")))["remat"] is False


def test_every_batch_is_split_over_the_mesh(mesh_runs):
    _, r = mesh_runs
    seen = r["seen"]
    rows = "P(('data', 'fsdp'), None)"
    for phase in ("stopped", "resumed"):
        # GRPO: prompts [P=4, Tp], completions, masks, old/ref log-probs [P*G=16, M], advantages
        rl = seen[f"{phase}:rl_step"]["batch"]
        assert [b["spec"] for b in rl] == [rows] * 6 + ["P(('data', 'fsdp'),)"], rl
        assert all(b["devices"] == 4 and b["shards"] == 4 for b in rl), rl
        assert rl[0]["shard_shape"][0] == 1 and rl[2]["shard_shape"] == [4, 2], rl
        for name in ("logp", "ce", "reward_grad", "rollout"):
            assert all(b["spec"].startswith("P(('data', 'fsdp')") and b["shards"] == 4
                       for b in seen[f"{phase}:{name}"]["batch"]), (phase, name, seen)
    # SFT and base steps: [A=1, B=8, T], each micro-batch's rows over the 4 devices
    for name in ("stopped:sft_step", "stopped:base_step"):
        # the LM head on the completion window: the answer digit and <|im_end|> (SFT); the base
        # stage's format rows
        assert isinstance(seen[name]["window"], int) and seen[name]["window"] >= 2, seen[name]
        batch = seen[name]["batch"]
        assert len(batch) == 3 and all(b["spec"] == "P(None, ('data', 'fsdp'), None)"
                                       and b["shards"] == 4 and b["shard_shape"][:2] == [1, 2]
                                       for b in batch), (name, batch)
    held = seen["stopped:ce"]["batch"]  # the 8 held-out rows: prompt, mask, completion, mask
    assert [b["shard_shape"][0] for b in held] == [2, 2, 2, 2], held
    # without a mesh nothing is placed: one device everywhere
    assert all(b["devices"] == 1 for k, v in seen.items() if k.startswith("plain:")
               for b in v["batch"]), seen


def test_params_stay_sharded_through_the_run_and_the_resume(mesh_runs):
    _, r = mesh_runs
    seen = r["seen"]
    for key in ("stopped:base_step", "stopped:sft_step", "stopped:rl_step", "resumed:rl_step"):
        params, opt_state = seen[key]["state"]
        # every param (and Adam moment) a NamedSharding on the mesh, split over fsdp where a
        # dimension divides by 2 (all of the tiny model's)
        assert params["named"] == params["leaves"] and params["fsdp"] == params["leaves"], key
        assert params["one_device"] == 0, key
        assert opt_state["fsdp"] >= 2 * params["leaves"], (key, opt_state)
    stages = {(s["phase"], s["stage"]): s for s in r["stage_params"]}
    # the resume restored base and SFT from their final folders, RL from its step-2 checkpoint
    for key in (("resumed", "base"), ("resumed", "sft"), ("resumed", "rl")):
        s = stages[key]
        assert s["fsdp"] == s["leaves"] and s["one_device"] == 0, s
    assert stages[("plain", "rl")]["one_device"] == stages[("plain", "rl")]["leaves"]


def test_eval_of_a_checkpoint_on_the_mesh_equals_one_device(mesh_runs):
    """``coupling llm eval --mesh``: the held-out CE and the exact quantities of a final checkpoint
    on 4 devices equal the one-device evaluation; the held-out rows were split over the mesh."""
    _, r = mesh_runs
    one, mesh = r["evals"]["one"], r["evals"]["mesh"]
    assert set(one) == set(mesh) and one["heldout_rows"] == 8
    for k in ("sft/ce_heldout", "exact/ce", "exact/reward", "rl/reward", "eval/greedy_accuracy"):
        assert mesh[k] == pytest.approx(one[k], rel=1e-5, abs=1e-6), (k, one, mesh)
    ce = r["seen"]["eval-mesh:ce"]
    assert all(b["shards"] == 4 and b["shard_shape"][0] == 2 for b in ce["batch"]), ce
    assert ce["state"][0]["fsdp"] == ce["state"][0]["leaves"]  # the params FSDP-sharded
    assert all(b["devices"] == 1 for b in r["seen"]["eval-one:ce"]["batch"])


def test_indivisible_batches_are_rejected_before_anything_is_written(tmp_path):
    cfg = dataclasses.replace(RunConfig(), seeds=(0,), n_train=32, n_heldout=8,
                              mesh="data=2,fsdp=2")
    bad = [(dict(sft_batch=6), "--sft-batch 6"),
           (dict(sft_batch=12, grad_accum=2), "--sft-batch 12 / --grad-accum 2: the 6 rows"),
           (dict(grpo=dataclasses.replace(cfg.grpo, prompts_per_step=6)),
            r"--prompts-per-step 6 \(x --group-size 16\)"),
           (dict(eval_rows=6), "--eval-rows 6"),
           (dict(n_heldout=6), "--n-heldout 6")]
    for i, (change, match) in enumerate(bad):
        out = str(tmp_path / f"run{i}")
        with pytest.raises(InputError, match=match):
            pipeline.run(dataclasses.replace(cfg, **change), out)
        assert not os.path.exists(out), change
    with pytest.raises(InputError, match="--sft-batch 10"):  # also from the command line
        config_from_args(_parser().parse_args(["run", "--mesh", "data=4", "--sft-batch", "10"]))
    ok = dataclasses.replace(cfg, sft_batch=16, grad_accum=2, eval_rows=4)
    ok.validate()
    ok.check_heldout(4)
    dataclasses.replace(ok, mesh=None).check_heldout(3)  # one device: anything goes


def test_remat_flag_reaches_the_model_and_leaves_the_gradients_unchanged(tmp_path):
    from llm_check.sft import nll_sums, split_model

    parse = lambda *a: config_from_args(_parser().parse_args(["run", *a]))  # noqa: E731
    assert parse().remat is False and parse("--remat").remat is True
    assert parse("--remat", "--no-remat").remat is False
    cfg = parse("--remat", "--seeds", "1")
    assert cfg.to_json()["remat"] is True
    path = tmp_path / "config.json"
    path.write_text(json.dumps(cfg.to_json()))
    assert load_run_config(str(path)).remat is True
    again = _parser(load_run_config(str(path))).parse_args(["run"])
    assert config_from_args(again).remat is True  # --config keeps it
    tokens = jnp.asarray(jax.random.randint(jax.random.key(0), (4, 10), 0, 64), jnp.int32)
    attn = jnp.ones_like(tokens).at[:2, :3].set(0)
    cmask = jnp.zeros_like(tokens).at[:, 6:].set(1)
    grads, jaxprs = [], []
    for remat in (False, True):
        model, _, _ = pipeline.load_model(dataclasses.replace(cfg, remat=remat), 0)
        assert model.remat is remat
        graphdef, params, rest = split_model(model)

        def loss(p):
            nll, n = nll_sums(graphdef, p, rest, tokens, attn, cmask, chunk_size=4)
            return nll.sum() / n.sum()

        grads.append(jax.jit(jax.grad(loss))(params))
        jaxprs.append(str(jax.make_jaxpr(jax.grad(loss))(params)))
    # the LM head is checkpointed either way; --remat adds one checkpoint per layer
    n_layers = pipeline.load_model(cfg, 0)[1].num_hidden_layers
    assert jaxprs[1].count("remat2[") >= jaxprs[0].count("remat2[") + n_layers
    err = max(float(jnp.abs(a - b).max()) for a, b in zip(jax.tree.leaves(grads[0]),
                                                          jax.tree.leaves(grads[1])))
    scale = max(float(jnp.abs(a).max()) for a in jax.tree.leaves(grads[0]))
    assert scale > 0 and err <= 1e-6 * max(scale, 1.0), (err, scale)


def test_resume_of_a_run_from_before_remat_existed(tmp_path, monkeypatch):
    """A config.json written before the ``remat`` setting existed resumes (its default held);
    a run that had it set differently does not."""
    class Started(Exception):
        pass

    def started(*a, **kw):
        raise Started

    monkeypatch.setattr(pipeline, "run_seed", started)
    cfg = config_from_args(_parser().parse_args(["run", *ARGS]))
    out = tmp_path / "run"
    out.mkdir()
    old = cfg.to_json()
    del old["remat"]
    (out / "config.json").write_text(json.dumps(old))
    with pytest.raises(Started):
        pipeline.run(cfg, str(out), resume=True)
    with pytest.raises(InputError, match="setting remat differs"):
        pipeline.run(dataclasses.replace(cfg, remat=True), str(out), resume=True)
