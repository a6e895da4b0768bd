"""summary.json, report.md and the PNG plots of a ``coupling llm run``: measured against predicted.

Every number theory predicts is fixed before the stage it is about starts, from the model that
stage actually starts from, and written into the stage's step-0 metrics row (``pipeline.run_stage``):

- SFT then RL: ``pred/ce_change``, the change of the exact SFT loss over RL at the fixed point of the
  run's GRPO setting (``predictions``: thm31.identity for the ``exact`` setting, whose fixed point
  is the Gibbs tilt p*; the k3 fixed point for ``paper``), and ``pred/reward``, the reward there;
- RL then SFT: ``pred/reward``, the reward of an SFT stage that reaches its data's law.

The measured values are the exact ones of ``exact_eval`` (built-in task: every prompt, the true
expert law, no sampling): ``exact/ce`` and ``exact/reward`` at the stage's first and last rows. RL
"reached its target" when the final mean distance |p(right) - p*(right)| over prompts
(``exact/target_gap``) is at most ``TARGET_TOL``. Across seeds each quantity gets its mean and a 95%
Student-t interval, and the paired difference measured - predicted its own interval; the relative
error is that of the means. Tasks whose answers cannot be listed (CoLA, JSONL) report the sampled
held-out CE and reward, without predictions.
"""

from __future__ import annotations

import json
import os

import numpy as np

from llm_check.run_config import ORDERS
from llm_check.sweep_report import interval

TARGET_TOL = 0.02

# Keys of summary.json: per order, (name, stage, row key, which row).
PAIRS = {
    "sft_then_rl": [
        ("ce_before_rl", "rl", "exact/ce", 0),
        ("ce_after_rl", "rl", "exact/ce", -1),
        ("ce_change_pred", "rl", "pred/ce_change", 0),
        ("reward_before_rl", "rl", "exact/reward", 0),
        ("reward_after_rl", "rl", "exact/reward", -1),
        ("reward_target", "rl", "pred/reward", 0),
        ("target_gap", "rl", "exact/target_gap", -1),
        ("target_kl", "rl", "exact/target_kl", -1),
        ("ce_heldout_before_rl", "rl", "sft/ce_heldout", 0),
        ("ce_heldout_after_rl", "rl", "sft/ce_heldout", -1),
        ("sampled_reward_before_rl", "rl", "rl/reward", 0),
        ("sampled_reward_after_rl", "rl", "rl/reward", -1),
    ],
    "rl_then_sft": [
        ("reward_before_sft", "sft", "exact/reward", 0),
        ("reward_after_sft", "sft", "exact/reward", -1),
        ("reward_after_sft_pred", "sft", "pred/reward", 0),
        ("sampled_reward_before_sft", "sft", "rl/reward", 0),
        ("sampled_reward_after_sft", "sft", "rl/reward", -1),
        ("reward_robust_before_sft", "sft", "rl/reward_robust", 0),
        ("reward_robust_after_sft", "sft", "rl/reward_robust", -1),
        ("greedy_accuracy_before_sft", "sft", "eval/greedy_accuracy", 0),
        ("greedy_accuracy_after_sft", "sft", "eval/greedy_accuracy", -1),
        ("rl_target_gap", "rl", "exact/target_gap", -1),
    ],
}


def _stage_rows(rows, seed, run, stage):
    return [r for r in rows if r["seed"] == seed and r["order"] == run and r["stage"] == stage]


def _evals(rows, key):
    return [r for r in rows if key in r]


def seed_summary(rows: list[dict], seed: int, run: str) -> dict:
    """The before/after numbers of one order for one seed, with the prediction beside them."""
    out = {}
    for name, stage, key, which in PAIRS[run]:
        ev = _evals(_stage_rows(rows, seed, run, stage), key)
        if ev:
            out[name] = ev[which][key]
    if "ce_before_rl" not in out and "ce_heldout_before_rl" in out:  # no exact measurement
        out["ce_before_rl"], out["ce_after_rl"] = (out["ce_heldout_before_rl"],
                                                   out["ce_heldout_after_rl"])
    if "reward_before_sft" not in out and "sampled_reward_before_sft" in out:
        out["reward_before_sft"], out["reward_after_sft"] = (out["sampled_reward_before_sft"],
                                                             out["sampled_reward_after_sft"])
    rl = _stage_rows(rows, seed, run, "rl")
    local = [r for r in rl if "local/dce_pred" in r]
    if local:
        errs = [abs(r["local/dce_pred"] - r["local/dce_measured"]) / abs(r["local/dce_measured"])
                for r in local[:5] if r["local/dce_measured"] != 0]
        out["local_rel_error_first5_median"] = float(np.median(errs)) if errs else None
        out["cos_ce_rl_mean"] = float(np.mean([r["grad/cos_ce_rl"] for r in local]))
    if run == "sft_then_rl" and "ce_after_rl" in out:
        out["ce_rise"] = out["ce_after_rl"] - out["ce_before_rl"]
        if "ce_change_pred" in out:
            out["rel_err"] = abs(out["ce_rise"] - out["ce_change_pred"]) / abs(out["ce_change_pred"])
        if "target_gap" in out:
            out["reached_target"] = bool(out["target_gap"] <= TARGET_TOL)
    if run == "rl_then_sft" and "reward_after_sft" in out:
        out["reward_drop"] = out["reward_before_sft"] - out["reward_after_sft"]
        if "reward_after_sft_pred" in out:
            out["abs_err"] = abs(out["reward_after_sft"] - out["reward_after_sft_pred"])
    return out


def summarize(cfg, rows: list[dict]) -> dict:
    from llm_check.predictions import fixed_point_name

    summary = {"seeds": list(cfg.seeds), "setting": cfg.grpo.setting, "beta": cfg.grpo.beta,
               "eps": cfg.known_eps, "fixed_point": fixed_point_name(cfg.grpo),
               "target_tol": TARGET_TOL}
    for run in ORDERS[cfg.order]:
        per_seed = {str(s): seed_summary(rows, s, run) for s in cfg.seeds}
        agg: dict = {"per_seed": per_seed, "ci95": {}}
        keys = sorted({k for v in per_seed.values() for k, x in v.items()
                       if isinstance(x, float) and not isinstance(x, bool)})
        for k in keys:
            vals = [v[k] for v in per_seed.values() if isinstance(v.get(k), float)]
            agg[k], agg["ci95"][k] = interval(vals)
        effect, pred = ("ce_rise", "ce_change_pred") if run == "sft_then_rl" else (
            "reward_drop", None)
        vals = [v[effect] for v in per_seed.values() if effect in v]
        agg["holds_in_all_seeds"] = bool(vals) and all(x > 0 for x in vals)
        agg["holds_ci95"] = bool(vals) and agg[effect] - agg["ci95"][effect] > 0
        if pred and all(pred in v for v in per_seed.values()):
            agg["rel_err"] = abs(agg[effect] - agg[pred]) / abs(agg[pred])
            agg["pair_err"], agg["pair_err_ci95"] = interval(
                [v[effect] - v[pred] for v in per_seed.values()])
            agg["reached_target_all_seeds"] = all(v.get("reached_target", False)
                                                  for v in per_seed.values())
        if run == "rl_then_sft" and all("abs_err" in v for v in per_seed.values()):
            agg["max_abs_err"] = max(v["abs_err"] for v in per_seed.values())
        summary[run] = agg
    return summary


def _fmt(x, nd=4):
    return "n/a" if x is None else (f"{x:.{nd}f}" if isinstance(x, float) else str(x))


def _pm(agg, key, nd=4):
    if key not in agg:
        return "n/a"
    return f"{agg[key]:.{nd}f} ± {agg['ci95'][key]:.{nd}f}"


def render_markdown(cfg, summary: dict, wall_s: float | None = None) -> str:
    g = cfg.grpo
    lines = ["# coupling llm run", "",
             f"Model `{cfg.model}`, task `{cfg.task}`, seeds {list(cfg.seeds)}, order `{cfg.order}`."
             f" SFT {cfg.sft_steps} steps (batch {cfg.sft_batch}, lr {cfg.sft_optim.lr}); GRPO "
             f"{cfg.rl_steps} steps (G={g.group_size}, {g.prompts_per_step} prompts, beta={g.beta}, "
             f"setting `{g.setting}`: KL in the {g.kl_mode}"
             f"{'' if g.kl_mode == 'reward' else ' (' + g.kl_estimator + ')'}, baseline "
             f"{g.baseline}, std division {g.std_normalize}; lr {cfg.rl_optim.lr}, "
             f"{cfg.rl_optim.schedule}).", "",
             f"RL with these settings converges to **{summary['fixed_point']}** "
             "(docs/theory.md §6 [grpo.fixedpoint]); every prediction below is that fixed point's, "
             "computed from the model the stage started from.", ""]
    if wall_s is not None:
        lines += [f"Wall time: {wall_s:.0f} s.", ""]
    if "sft_then_rl" in summary:
        a = summary["sft_then_rl"]
        lines += ["## SFT then RL: the SFT loss over RL, measured against predicted", "",
                  "| seed | CE before RL | CE after RL | change | predicted | rel. err. | "
                  "p(right) before → after (target) | target gap | target KL | reached |",
                  "|---|---|---|---|---|---|---|---|---|---|"]
        for s, v in a["per_seed"].items():
            lines.append(f"| {s} | {_fmt(v.get('ce_before_rl'))} | {_fmt(v.get('ce_after_rl'))} | "
                         f"{_fmt(v.get('ce_rise'))} | {_fmt(v.get('ce_change_pred'))} | "
                         f"{_fmt(v.get('rel_err'), 3)} | {_fmt(v.get('reward_before_rl'))} → "
                         f"{_fmt(v.get('reward_after_rl'))} ({_fmt(v.get('reward_target'))}) | "
                         f"{_fmt(v.get('target_gap'))} | {_fmt(v.get('target_kl'))} | "
                         f"{v.get('reached_target', 'n/a')} |")
        lines += ["", f"Over seeds (mean ± 95% t interval): change {_pm(a, 'ce_rise')}, predicted "
                  f"{_pm(a, 'ce_change_pred')}; relative error of the means "
                  f"{_fmt(a.get('rel_err'), 3)}; paired measured − predicted "
                  f"{_fmt(a.get('pair_err'))} ± {_fmt(a.get('pair_err_ci95'))}. The rise is "
                  f"positive in every seed: **{a['holds_in_all_seeds']}**; its 95% interval "
                  f"excludes 0: **{a['holds_ci95']}**. Mean cos(∇CE, ∇J) over the logged RL steps "
                  f"{_pm(a, 'cos_ce_rl_mean')}.", ""]
    if "rl_then_sft" in summary:
        a = summary["rl_then_sft"]
        lines += ["## RL then SFT: the reward over SFT, measured against predicted", "",
                  "| seed | reward before SFT | reward after SFT | drop | predicted after SFT | "
                  "error | sampled strict before → after | robust before → after |",
                  "|---|---|---|---|---|---|---|---|"]
        for s, v in a["per_seed"].items():
            lines.append(f"| {s} | {_fmt(v.get('reward_before_sft'))} | "
                         f"{_fmt(v.get('reward_after_sft'))} | {_fmt(v.get('reward_drop'))} | "
                         f"{_fmt(v.get('reward_after_sft_pred'))} | {_fmt(v.get('abs_err'))} | "
                         f"{_fmt(v.get('sampled_reward_before_sft'))} → "
                         f"{_fmt(v.get('sampled_reward_after_sft'))} | "
                         f"{_fmt(v.get('reward_robust_before_sft'))} → "
                         f"{_fmt(v.get('reward_robust_after_sft'))} |")
        lines += ["", f"Over seeds: reward {_pm(a, 'reward_before_sft')} → "
                  f"{_pm(a, 'reward_after_sft')}, predicted {_pm(a, 'reward_after_sft_pred')}; "
                  f"largest seed error {_fmt(a.get('max_abs_err'))}. The drop is positive in every "
                  f"seed: **{a['holds_in_all_seeds']}**; its 95% interval excludes 0: "
                  f"**{a['holds_ci95']}**.", ""]
    lines += ["The exact CE and reward (built-in task) are computed over every prompt from the "
              "listed answers, with the true expert law; the sampled rewards use "
              f"{cfg.eval_samples} completions per held-out prompt at temperature "
              f"{g.temperature} with a fixed key. CE is in nats per response.", "",
              "Plots: `ce_during_rl.png` (CE during RL, the predicted end point and the local "
              "second-order prediction), `reward_during_sft.png`, `misalignment.png` "
              "(cos(∇CE, ∇J) per RL step).", ""]
    return "\n".join(lines)


def plot(cfg, rows: list[dict], summary: dict, out: str) -> list[str]:
    """The three PNGs; returns their paths."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    paths = []
    fig, ax = plt.subplots(figsize=(6.4, 4.0))
    for s in cfg.seeds:
        rl = _stage_rows(rows, s, "sft_then_rl", "rl")
        key = "exact/ce" if _evals(rl, "exact/ce") else "sft/ce_heldout"
        ev = _evals(rl, key)
        if not ev:
            continue
        line, = ax.plot([r["step"] for r in ev], [r[key] for r in ev], "o-", ms=3,
                        label=f"measured ({key}), seed {s}")
        if "pred/ce_change" in ev[0]:
            ax.axhline(ev[0][key] + ev[0]["pred/ce_change"], color=line.get_color(), lw=0.8,
                       ls=":", label=f"predicted at the fixed point, seed {s}")
        loc = [r for r in rl if "local/ce_pred" in r]
        ax.plot([r["step"] for r in loc], [r["local/ce_pred"] for r in loc], "x", ms=5,
                color=line.get_color(), label=f"held-out CE: local 2nd-order prediction, seed {s}")
    ax.set(xlabel="RL step (after SFT)", ylabel="SFT loss (nats/response)",
           title="SFT then RL: CE on the expert responses")
    ax.legend(fontsize=6)
    paths.append(os.path.join(out, "ce_during_rl.png"))
    fig.tight_layout()
    fig.savefig(paths[-1], dpi=110)
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(6.4, 4.0))
    for s in cfg.seeds:
        sft = _stage_rows(rows, s, "rl_then_sft", "sft")
        key = "exact/reward" if _evals(sft, "exact/reward") else "rl/reward"
        ev = _evals(sft, key)
        if ev:
            line, = ax.plot([r["step"] for r in ev], [r[key] for r in ev], "o-", ms=3,
                            label=f"{key}, seed {s}")
            if "pred/reward" in ev[0]:
                ax.axhline(ev[0]["pred/reward"], color=line.get_color(), lw=0.8, ls=":",
                           label=f"predicted after SFT, seed {s}")
    ax.set(xlabel="SFT step (after RL)", ylabel="reward", title="RL then SFT: reward")
    ax.legend(fontsize=6)
    paths.append(os.path.join(out, "reward_during_sft.png"))
    fig.tight_layout()
    fig.savefig(paths[-1], dpi=110)
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(6.4, 4.0))
    for run in ("sft_then_rl", "rl_then_sft"):
        for s in cfg.seeds:
            loc = [r for r in _stage_rows(rows, s, run, "rl") if "grad/cos_ce_rl" in r]
            if loc:
                ax.plot([r["step"] for r in loc], [r["grad/cos_ce_rl"] for r in loc], lw=1,
                        label=f"{run}, seed {s}")
    ax.axhline(0.0, color="k", lw=0.5)
    ax.set(xlabel="RL step", ylabel="cos(∇CE, ∇J)", title="Gradient misalignment during RL")
    ax.legend(fontsize=6)
    paths.append(os.path.join(out, "misalignment.png"))
    fig.tight_layout()
    fig.savefig(paths[-1], dpi=110)
    plt.close(fig)
    return paths


def _atomic_text(path: str, text: str) -> None:
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        f.write(text)
    os.replace(tmp, path)


def write_report(cfg, rows: list[dict], out: str, *, wall_s: float | None = None) -> dict:
    """Write summary.json, report.md and the plots into ``out``; returns the summary."""
    summary = summarize(cfg, rows)
    if wall_s is not None:
        summary["wall_s"] = wall_s
    _atomic_text(os.path.join(out, "summary.json"), json.dumps(summary, indent=1) + "\n")
    _atomic_text(os.path.join(out, "report.md"), render_markdown(cfg, summary, wall_s))
    plot(cfg, rows, summary, out)
    return summary
