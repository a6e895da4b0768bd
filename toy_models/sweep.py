"""``coupling toy sweep --out DIR``: plots and metrics over many random instances.

Writes (atomically: everything goes to a temporary folder first, then each file is moved in):

- ``sft_loss_during_rl.png``: SFT loss during RL (after SFT) against its second-order prediction
  (thm31.local), and the final rise against the thm31.identity closed form;
- ``objective_reward_during_sft.png``: J_β and raw J during SFT after RL, with the local predictions
  (thm41.local), including docs/theory.md's counterexample 2, where J rises;
- ``c1_vs_beta.png``: C1(β), its large-β series and small-β asymptote (thm31.beta), and C1 measured
  by the NPG trainer at a few β;
- ``pl_tradeoff.png``: the PL trade-off (reward gain minus λ_w × degradation bound) and T* (pl.duration);
- ``grad_cos_during_rl.png``: cos(∇L, ∇J) during RL for the tabular, autoregressive and log-linear
  policies (median and quartiles over instances);
- ``metrics.json``: summary numbers of every panel; ``metrics.jsonl``: the per-step metrics of
  both pipelines on the first instance, with the metric names shared with the LLM runs.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import tempfile
from pathlib import Path

import jax
import jax.numpy as jnp
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from theory.errors import InputError  # noqa: E402
from toy_models import analyze as an  # noqa: E402
from toy_models import autoregressive, loglinear, pipelines, tabular  # noqa: E402
from toy_models import coupling_sft_rl as srl  # noqa: E402
from toy_models import landscape as land  # noqa: E402
from toy_models import objectives as obj  # noqa: E402
from toy_models.instance import Instance, make_instance, random_batch, take  # noqa: E402

N_INSTANCES = 32
X, Y = 3, 4
CFG = pipelines.PipelineConfig(sft_steps=200, rl_steps=150, sft_learning_rate=5.0, rl_learning_rate=0.5)
PL_EXAMPLE = dict(mu=0.5, ell=1.5, smooth_sft=2.0, delta0=1.0, weight=0.3)


def _run_pipelines(batch: Instance):
    zeros = jnp.zeros((X, Y))
    key = jax.random.key(0)
    fwd = jax.jit(jax.vmap(lambda i: pipelines.sft_then_rl(i, tabular.log_probs, zeros, CFG, key)))
    rev = jax.jit(jax.vmap(lambda i: pipelines.rl_then_sft(i, tabular.log_probs, jnp.log(i.reference), CFG, key)))
    (_, m_fwd), (_, m_rev) = fwd(batch), rev(batch)
    return jax.tree.map(np.asarray, m_fwd), jax.tree.map(np.asarray, m_rev)


def _cos_runs(seed: int):
    """cos(∇L, ∇J) during the RL stage of sft_then_rl for three policy classes."""
    rng = np.random.default_rng(seed)
    key = jax.random.key(seed)
    out = {}
    # tabular
    batch = random_batch(rng, N_INSTANCES, X, Y)
    fn = jax.jit(jax.vmap(lambda i: pipelines.sft_then_rl(i, tabular.log_probs, jnp.zeros((X, Y)), CFG, key)[1]))
    out["tabular (3x4)"] = np.asarray(fn(batch)["grad/cos_ce_rl"])[:, CFG.sft_steps:]
    # autoregressive: vocabulary 2, horizon 2, so 4 sequences per prompt
    table = autoregressive.sequence_table(2, 2)
    ar_logp = lambda lg: autoregressive.sequence_log_probs(lg, table)
    ar_init = jnp.zeros((X, table.num_prefixes, 2))
    fn = jax.jit(jax.vmap(lambda i: pipelines.sft_then_rl(i, ar_logp, ar_init, CFG, key)[1]))
    out["autoregressive (V=2, H=2)"] = np.asarray(fn(batch)["grad/cos_ce_rl"])[:, CFG.sft_steps:]
    # log-linear with 3 shared features (the expert is not in the family)
    feats = jnp.asarray(rng.standard_normal((N_INSTANCES, X, Y, 3)))
    fn = jax.jit(jax.vmap(lambda i, f: pipelines.sft_then_rl(
        i, lambda w: loglinear.log_probs(w, f), jnp.zeros(3), CFG, key)[1]))
    out["log-linear (D=3, shared)"] = np.asarray(fn(batch, feats)["grad/cos_ce_rl"])[:, CFG.sft_steps:]
    return out


def _plot_sft_during_rl(path, m_fwd):
    rl = slice(CFG.sft_steps, None)
    steps = np.arange(CFG.rl_steps)
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for i in range(3):
        base = m_fwd["sft/ce_heldout"][i, CFG.sft_steps - 1]
        axes[0].plot(steps, m_fwd["sft/ce_heldout"][i, rl] - base, label=f"instance {i}: measured")
        axes[0].plot(steps, m_fwd["sft/ce_pred"][i, rl] - base, "--", label=f"instance {i}: 2nd-order prediction")
    axes[0].set(xlabel="RL step (exact policy gradient, SGD)", ylabel="L - L(end of SFT)",
                title="SFT loss during RL vs its local prediction")
    axes[0].legend(fontsize=7)
    early = m_fwd["sft/ce_heldout"][:, CFG.sft_steps + 4] - m_fwd["sft/ce_heldout"][:, CFG.sft_steps - 1]
    pred = m_fwd["sft/ce_pred"][:, CFG.sft_steps + 4] - m_fwd["sft/ce_heldout"][:, CFG.sft_steps - 1]
    axes[1].loglog(np.maximum(pred, 1e-12), np.maximum(early, 1e-12), "o", label="instances")
    lim = [max(min(pred.min(), early.min()), 1e-12), max(pred.max(), early.max())]
    axes[1].loglog(lim, lim, "k:", label="y = x")
    axes[1].set(xlabel="predicted rise after 5 RL steps", ylabel="measured rise after 5 RL steps",
                title=f"Local prediction over {len(pred)} random instances")
    axes[1].legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    rel = np.abs(early - pred) / np.maximum(np.abs(early), 1e-15)
    return {"n_instances": int(len(pred)), "rl_steps": CFG.rl_steps,
            "rise_after_5_rl_steps_median": float(np.median(early)),
            "local_prediction_rel_error_median": float(np.median(rel)),
            "local_prediction_rel_error_max": float(np.max(rel))}


def _plot_during_sft(path, m_rev, counter):
    sft = slice(CFG.rl_steps, None)
    steps = np.arange(CFG.sft_steps)
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    series = [(m_rev, i, f"instance {i}") for i in range(2)] + [(counter, 0, "counterexample 2")]
    for m, i, name in series:
        base_o = m["rl/objective"][i, CFG.rl_steps - 1]
        base_r = m["rl/reward"][i, CFG.rl_steps - 1]
        line, = axes[0].plot(steps, m["rl/objective"][i, sft] - base_o, label=f"{name}: measured")
        axes[0].plot(steps, m["rl/objective_pred"][i, sft] - base_o, "--", color=line.get_color(),
                     label=f"{name}: local prediction")
        line, = axes[1].plot(steps, m["rl/reward"][i, sft] - base_r, label=f"{name}: measured")
        axes[1].plot(steps, m["rl/reward_pred"][i, sft] - base_r, "--", color=line.get_color(),
                     label=f"{name}: local prediction")
    axes[0].set(xlabel="SFT step (SGD)", ylabel="J_beta - J_beta(end of RL)",
                title="Regularized objective during SFT")
    axes[1].set(xlabel="SFT step (SGD)", ylabel="J - J(end of RL)", title="Raw reward during SFT")
    for ax in axes:
        ax.axhline(0, color="k", lw=0.5)
        ax.set_xscale("symlog", linthresh=10)
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    d_obj = m_rev["rl/objective"][:, -1] - m_rev["rl/objective"][:, CFG.rl_steps - 1]
    d_rew = m_rev["rl/reward"][:, -1] - m_rev["rl/reward"][:, CFG.rl_steps - 1]
    return {"n_instances": int(len(d_obj)), "sft_steps": CFG.sft_steps,
            "objective_change_max": float(d_obj.max()),
            "fraction_reward_rose": float(np.mean(d_rew > 0)),
            "counterexample_reward_change": float(counter["rl/reward"][0, -1] - counter["rl/reward"][0, CFG.rl_steps - 1])}


def _plot_c1(path, batch):
    betas = np.geomspace(0.03, 30.0, 80)
    fig, ax = plt.subplots(figsize=(6.5, 4.5))
    out = {}
    c1 = jax.jit(jax.vmap(srl.c1_closed_form))
    series = jax.jit(jax.vmap(srl.c1_large_beta_series))
    small = jax.jit(jax.vmap(srl.c1_small_beta_asymptote))
    measured_fn = jax.jit(an._npg_optimum)
    for i in range(3):
        inst = take(batch, i)
        grid = jax.tree.map(lambda a: jnp.broadcast_to(a, (len(betas), *a.shape)), inst)
        grid = dataclasses.replace(grid, beta=jnp.asarray(betas))
        line, = ax.loglog(betas, np.asarray(c1(grid)), label=f"instance {i}: C1 closed form")
        big, tiny = betas >= 0.3, betas <= 0.3  # each approximation on its own side
        s_big = np.asarray(series(grid))[big]
        s_tiny = np.asarray(small(grid))[tiny]
        ax.loglog(betas[big], np.where(s_big > 0, s_big, np.nan), "--", color=line.get_color(),
                  label="large-beta series Var/2b^2 + k3/6b^3" if i == 0 else None)
        ax.loglog(betas[tiny], np.where(s_tiny > 0, s_tiny, np.nan), ":", color=line.get_color(),
                  label="small-beta asymptote" if i == 0 else None)
        meas = []
        for b in (0.1, 1.0, 10.0):
            ib = dataclasses.replace(inst, beta=jnp.asarray(b))
            log_d = jnp.log(ib.expert)
            loss = lambda lp: obj.sft_loss(lp, ib.q, ib.expert)
            meas.append(float(loss(measured_fn(ib, log_d, log_d)) - loss(log_d)))
        ax.loglog([0.1, 1.0, 10.0], meas, "o", color=line.get_color(),
                  label="measured (NPG trainer)" if i == 0 else None)
        out[f"instance_{i}"] = {"beta": [0.1, 1.0, 10.0], "c1_measured": meas,
                                "c1_closed_form": [float(srl.c1_closed_form(dataclasses.replace(inst, beta=jnp.asarray(b))))
                                                   for b in (0.1, 1.0, 10.0)]}
    ax.set(xlabel="beta", ylabel="C1 = L(p_RL) - L(p_D)", title="C1(beta): closed form, series, trainer")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return out


def _plot_pl(path):
    t = np.linspace(0, 6, 400)
    fig, ax = plt.subplots(figsize=(6.5, 4.5))
    out = {}
    for w in (0.1, 0.3, 1.0):
        p = dict(PL_EXAMPLE, weight=w)
        f = np.asarray(land.tradeoff(p["mu"], p["ell"], p["smooth_sft"], p["delta0"], w, t))
        t_star = float(land.optimal_duration(p["mu"], p["ell"], p["smooth_sft"], w))
        line, = ax.plot(t, f, label=f"lambda_w = {w}: gain - lambda_w * degradation bound")
        ax.axvline(t_star, color=line.get_color(), ls="--", lw=0.8)
        ax.plot([t_star], [float(land.tradeoff(p["mu"], p["ell"], p["smooth_sft"], p["delta0"], w, t_star))],
                "o", color=line.get_color(), label=f"T* = {t_star:.4f}")
        out[f"lambda_w={w}"] = {"t_star": t_star, "grid_argmax": float(t[np.argmax(f)])}
    ax.set(xlabel="RL duration T", ylabel="guaranteed trade-off",
           title="PL trade-off (mu=0.5, L_s=2, l=1.5, Delta0=1)")
    ax.axhline(0, color="k", lw=0.5)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return out


def _plot_cos(path, runs):
    fig, ax = plt.subplots(figsize=(6.5, 4.5))
    out = {}
    for name, c in runs.items():
        steps = np.arange(c.shape[1])
        med = np.median(c, 0)
        line, = ax.plot(steps, med, label=f"{name}: median")
        ax.fill_between(steps, np.quantile(c, 0.25, 0), np.quantile(c, 0.75, 0), color=line.get_color(),
                        alpha=0.2, label=f"{name}: quartiles")
        out[name] = {"median_first_step": float(med[0]), "median_last_step": float(med[-1])}
    ax.set(xlabel="RL step", ylabel="cos(grad L, grad J)", title="Gradient misalignment during RL (after SFT)")
    ax.axhline(0, color="k", lw=0.5)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return out


def sweep(out_dir: str | Path, seed: int = 0) -> list[str]:
    """Write the plots and metrics into ``out_dir``; returns the file names written. Needs x64."""
    out_dir = Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise InputError(f"--out {out_dir}: exists and is not a directory")
    parent = out_dir.resolve().parent
    if not parent.is_dir():
        raise InputError(f"--out {out_dir}: parent directory {parent} does not exist")
    # the work is written to a folder in the parent, then moved into --out: both must be writable,
    # and this is checked before minutes of work, not after
    for folder in (parent, out_dir) if out_dir.exists() else (parent,):
        if not os.access(folder, os.W_OK | os.X_OK):
            raise InputError(f"--out {out_dir}: {folder} is not writable")
    rng = np.random.default_rng(seed)
    batch = random_batch(rng, N_INSTANCES, X, Y)
    m_fwd, m_rev = _run_pipelines(batch)
    counter = make_instance([1.0], [[0.9, 0.1]], [[1.0, 0.0]], 1.0, reference=[[0.5, 0.5]])
    cfg_c = pipelines.PipelineConfig(sft_steps=CFG.sft_steps, rl_steps=CFG.rl_steps, sft_learning_rate=0.1,
                                     rl_learning_rate=5.0)
    _, m_counter = jax.jit(lambda i: pipelines.rl_then_sft(i, tabular.log_probs, jnp.log(i.reference), cfg_c,
                                                           jax.random.key(0)))(counter)
    m_counter = jax.tree.map(lambda a: np.asarray(a)[None], m_counter)
    tmp = Path(tempfile.mkdtemp(prefix=".sweep-", dir=parent))
    try:
        metrics = {
            "seed": seed, "instance_shape": [X, Y], "pipeline": dataclasses.asdict(CFG),
            "sft_loss_during_rl": _plot_sft_during_rl(tmp / "sft_loss_during_rl.png", m_fwd),
            "objective_reward_during_sft": _plot_during_sft(tmp / "objective_reward_during_sft.png", m_rev, m_counter),
            "c1_vs_beta": _plot_c1(tmp / "c1_vs_beta.png", batch),
            "pl_tradeoff": _plot_pl(tmp / "pl_tradeoff.png"),
            "grad_cos_during_rl": _plot_cos(tmp / "grad_cos_during_rl.png", _cos_runs(seed)),
        }
        (tmp / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
        with open(tmp / "metrics.jsonl", "w") as fh:
            for order, m in (("sft_then_rl", m_fwd), ("rl_then_sft", m_rev)):
                for s in range(m["step"].shape[1]):
                    row = {"order": order, **{k: (int(v[0, s]) if k in ("step", "stage") else float(v[0, s]))
                                              for k, v in m.items()}}
                    fh.write(json.dumps(row) + "\n")
        out_dir.mkdir(exist_ok=True)
        names = sorted(p.name for p in tmp.iterdir())
        for name in names:
            os.replace(tmp / name, out_dir / name)
        return names
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
