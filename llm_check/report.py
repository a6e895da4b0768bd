"""summary.json, report.md and the PNG plots of a ``coupling llm run``, beside theory's predictions.

The predictions come from the tabular theory (docs/theory.md §3, §4, §7) for the built-in task, whose
expert is right with probability 1 - eps and otherwise gives one wrong answer (reward 1 / 0):

- SFT then RL: at the regularized RL optimum with reference = the SFT optimum, the held-out CE
  rises by C1(beta) = log((1 - eps) e^{1/beta} + eps) - (1 - eps)/beta
  (``theory.closed_forms.c1_noisy_expert``; [thm31.c1]). The exact SFT optimum's CE is the
  expert's entropy H(p_D). GRPO for a finite number of steps is not that optimum, and its k3 penalty
  is not the exact reverse-KL regularizer, so C1 is the scale of the rise, not its value.
- RL then SFT: an SFT stage that reaches the expert's distribution has reward 1 - eps
  ([thm41.argmax]); from an RL policy with reward above that, SFT lowers the reward.

For other tasks (no known eps) the predictions are left out. Every per-seed number is read from
the metrics rows: the "before" value is the stage's step-0 evaluation, the "after" value its last.
"""

from __future__ import annotations

import json
import math
import os

import numpy as np

from llm_check.run_config import ORDERS

# Keys of summary.json: per order, (name, stage, row key, which row).
PAIRS = {
    "sft_then_rl": [
        ("ce_heldout_before_rl", "rl", "sft/ce_heldout", 0),
        ("ce_heldout_after_rl", "rl", "sft/ce_heldout", -1),
        ("reward_before_rl", "rl", "rl/reward", 0),
        ("reward_after_rl", "rl", "rl/reward", -1),
        ("reward_robust_before_rl", "rl", "rl/reward_robust", 0),
        ("reward_robust_after_rl", "rl", "rl/reward_robust", -1),
        ("ce_heldout_before_sft", "sft", "sft/ce_heldout", 0),
    ],
    "rl_then_sft": [
        ("reward_before_sft", "sft", "rl/reward", 0),
        ("reward_after_sft", "sft", "rl/reward", -1),
        ("reward_robust_before_sft", "sft", "rl/reward_robust", 0),
        ("reward_robust_after_sft", "sft", "rl/reward_robust", -1),
        ("greedy_accuracy_before_sft", "sft", "eval/greedy_accuracy", 0),
        ("greedy_accuracy_after_sft", "sft", "eval/greedy_accuracy", -1),
        ("ce_heldout_before_sft", "sft", "sft/ce_heldout", 0),
        ("ce_heldout_after_sft", "sft", "sft/ce_heldout", -1),
        ("reward_before_rl", "rl", "rl/reward", 0),
    ],
}


def theory_predictions(eps: float | None, beta: float) -> dict:
    """C1(beta), the expert's entropy and the reward at the SFT optimum, for a noisy expert."""
    if eps is None:
        return {}
    from theory.closed_forms import c1_noisy_expert

    entropy = -sum(p * math.log(p) for p in (1 - eps, eps) if p > 0)
    return {
        "eps": eps,
        "beta": beta,
        "c1_ce_rise_at_rl_optimum": float(c1_noisy_expert(eps, beta)) if beta > 0 else math.inf,
        "ce_at_sft_optimum": entropy,
        "reward_at_sft_optimum": 1.0 - eps,
    }


def _stage_rows(rows, seed, run, stage):
    return [r for r in rows if r["seed"] == seed and r["run"] == run and r["stage"] == stage]


def _evals(rows, key):
    return [r for r in rows if key in r]


def seed_summary(rows: list[dict], seed: int, run: str) -> dict:
    """The before/after numbers of one order for one seed, plus the local theory's accuracy."""
    out = {}
    for name, stage, key, which in PAIRS[run]:
        ev = _evals(_stage_rows(rows, seed, run, stage), key)
        if ev:
            out[name] = ev[which][key]
    rl = _stage_rows(rows, seed, run, "rl")
    local = [r for r in rl if "local/dce_pred" in r]
    if local:
        first = local[:5]
        errs = [abs(r["local/dce_pred"] - r["local/dce_measured"]) / abs(r["local/dce_measured"])
                for r in first if r["local/dce_measured"] != 0]
        out["local_rel_error_first5_median"] = float(np.median(errs)) if errs else None
        out["cos_ce_rl_mean"] = float(np.mean([r["grad/cos_ce_rl"] for r in local]))
    if run == "sft_then_rl" and "ce_heldout_after_rl" in out:
        out["ce_rise"] = out["ce_heldout_after_rl"] - out["ce_heldout_before_rl"]
        out["holds"] = bool(out["ce_rise"] > 0)
    if run == "rl_then_sft" and "reward_after_sft" in out:
        out["reward_drop"] = out["reward_before_sft"] - out["reward_after_sft"]
        out["holds"] = bool(out["reward_drop"] > 0)
    return out


def summarize(cfg, rows: list[dict], eps: float | None) -> dict:
    summary = {"theory": theory_predictions(eps, cfg.grpo.beta), "seeds": list(cfg.seeds)}
    for run in ORDERS[cfg.order]:
        per_seed = {str(s): seed_summary(rows, s, run) for s in cfg.seeds}
        agg: dict = {"per_seed": per_seed, "spread": {}}
        keys = sorted({k for v in per_seed.values() for k, x in v.items()
                       if isinstance(x, float) and not isinstance(x, bool)})
        for k in keys:
            vals = [v[k] for v in per_seed.values() if isinstance(v.get(k), float)]
            agg[k] = float(np.mean(vals))
            agg["spread"][k] = {"std": float(np.std(vals, ddof=1)) if len(vals) > 1 else 0.0,
                                "min": float(np.min(vals)), "max": float(np.max(vals))}
        agg["holds_in_all_seeds"] = all(v.get("holds", False) for v in per_seed.values())
        summary[run] = agg
    return summary


def _fmt(x, nd=4):
    return "n/a" if x is None else (f"{x:.{nd}f}" if isinstance(x, float) else str(x))


def _pm(agg, key):
    if key not in agg:
        return "n/a"
    return f"{agg[key]:.4f} ± {agg['spread'][key]['std']:.4f}"


def render_markdown(cfg, summary: dict, wall_s: float | None = None) -> str:
    th = summary["theory"]
    lines = ["# coupling llm run", "",
             f"Model `{cfg.model}`, task `{cfg.task}`, seeds {list(cfg.seeds)}, order `{cfg.order}`."
             f" SFT {cfg.sft_steps} steps (batch {cfg.sft_batch}, lr {cfg.sft_optim.lr}); GRPO "
             f"{cfg.rl_steps} steps (G={cfg.grpo.group_size}, {cfg.grpo.prompts_per_step} prompts, "
             f"beta={cfg.grpo.beta}, {cfg.grpo.kl_estimator}, lr {cfg.rl_optim.lr}).", ""]
    if wall_s is not None:
        lines += [f"Wall time: {wall_s:.0f} s.", ""]
    if th:
        lines += ["## Theory for this task (tabular, docs/theory.md §3, §4, §7)", "",
                  f"- expert error rate eps = {th['eps']}, KL weight beta = {th['beta']};",
                  f"- CE of the exact SFT optimum (the expert's entropy): "
                  f"{th['ce_at_sft_optimum']:.4f} nats;",
                  f"- predicted CE rise at the regularized RL optimum, C1(beta) = "
                  f"{th['c1_ce_rise_at_rl_optimum']:.4f} nats (finite GRPO is not that optimum: "
                  "C1 is the scale, the sign is the claim);",
                  f"- reward at the SFT optimum: 1 - eps = {th['reward_at_sft_optimum']:.4f}.", ""]
    if "sft_then_rl" in summary:
        a = summary["sft_then_rl"]
        lines += ["## SFT then RL: RL raises the SFT loss", "",
                  "| seed | CE before RL | CE after RL | rise | C1 prediction | reward before RL | "
                  "reward after RL | local pred. rel. err. (first 5 steps, median) | holds |",
                  "|---|---|---|---|---|---|---|---|---|"]
        c1 = _fmt(th.get("c1_ce_rise_at_rl_optimum")) if th else "n/a"
        for s, v in a["per_seed"].items():
            lines.append(f"| {s} | {_fmt(v.get('ce_heldout_before_rl'))} | "
                         f"{_fmt(v.get('ce_heldout_after_rl'))} | {_fmt(v.get('ce_rise'))} | {c1} | "
                         f"{_fmt(v.get('reward_before_rl'))} | {_fmt(v.get('reward_after_rl'))} | "
                         f"{_fmt(v.get('local_rel_error_first5_median'))} | {v.get('holds')} |")
        lines += ["", f"Mean ± std over seeds: CE {_pm(a, 'ce_heldout_before_rl')} → "
                  f"{_pm(a, 'ce_heldout_after_rl')} (rise {_pm(a, 'ce_rise')}); "
                  f"cos(∇CE, ∇J) averaged over RL steps {_pm(a, 'cos_ce_rl_mean')}. "
                  f"Holds in all seeds: **{a['holds_in_all_seeds']}**.", ""]
    if "rl_then_sft" in summary:
        a = summary["rl_then_sft"]
        pred = _fmt(th.get("reward_at_sft_optimum")) if th else "n/a"
        lines += ["## RL then SFT: SFT lowers the reward", "",
                  "| seed | reward before SFT | reward after SFT | drop | predicted after SFT "
                  "(1 - eps) | robust before | robust after | greedy acc. before | greedy acc. "
                  "after | holds |", "|---|---|---|---|---|---|---|---|---|---|"]
        for s, v in a["per_seed"].items():
            lines.append(f"| {s} | {_fmt(v.get('reward_before_sft'))} | "
                         f"{_fmt(v.get('reward_after_sft'))} | {_fmt(v.get('reward_drop'))} | "
                         f"{pred} | {_fmt(v.get('reward_robust_before_sft'))} | "
                         f"{_fmt(v.get('reward_robust_after_sft'))} | "
                         f"{_fmt(v.get('greedy_accuracy_before_sft'))} | "
                         f"{_fmt(v.get('greedy_accuracy_after_sft'))} | {v.get('holds')} |")
        lines += ["", f"Mean ± std over seeds: strict reward {_pm(a, 'reward_before_sft')} → "
                  f"{_pm(a, 'reward_after_sft')}. Holds in all seeds: "
                  f"**{a['holds_in_all_seeds']}**.", ""]
    lines += ["Plots: `ce_during_rl.png` (held-out CE during RL with the local second-order "
              "prediction), `reward_during_sft.png`, `misalignment.png` (cos(∇CE, ∇J) per RL step).",
              "", "Rewards are sampled (temperature "
              f"{cfg.grpo.temperature}) on the held-out prompts with a fixed key; greedy accuracy "
              "uses the robust parser. CE is nats per response (summed over the answer tokens "
              "and <|im_end|>).", ""]
    return "\n".join(lines)


def plot(cfg, rows: list[dict], summary: dict, out: str) -> list[str]:
    """The three PNGs; returns their paths."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    paths = []
    th = summary["theory"]
    fig, ax = plt.subplots(figsize=(6.4, 4.0))
    for s in cfg.seeds:
        rl = _stage_rows(rows, s, "sft_then_rl", "rl")
        measured = {r["step"]: r["sft/ce_heldout"] for r in _evals(rl, "sft/ce_heldout")}
        loc = [r for r in rl if "sft/ce_pred" in r]
        measured.update({r["step"]: r["local/ce_before"] + r["local/dce_measured"] for r in loc})
        if measured:
            steps = sorted(measured)
            line, = ax.plot(steps, [measured[k] for k in steps], "o-", ms=3,
                            label=f"measured, seed {s}")
            ax.plot([r["step"] for r in loc], [r["sft/ce_pred"] for r in loc], "x", ms=6,
                    color=line.get_color(),
                    label=f"CE before the step + local 2nd-order prediction, seed {s}")
    if th and "sft_then_rl" in summary and "ce_heldout_before_rl" in summary["sft_then_rl"]:
        ax.axhline(th["ce_at_sft_optimum"] + th["c1_ce_rise_at_rl_optimum"], color="k", lw=0.8,
                   ls=":", label="H(p_D) + C1(β): CE at the regularized RL optimum")
    ax.set(xlabel="RL step (after SFT)", ylabel="held-out CE (nats/response)",
           title="SFT then RL: CE on the expert responses")
    ax.legend(fontsize=6)
    paths.append(os.path.join(out, "ce_during_rl.png"))
    fig.tight_layout()
    fig.savefig(paths[-1], dpi=110)
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(6.4, 4.0))
    for s in cfg.seeds:
        ev = _evals(_stage_rows(rows, s, "rl_then_sft", "sft"), "rl/reward")
        if ev:
            line, = ax.plot([r["step"] for r in ev], [r["rl/reward"] for r in ev], "o-", ms=3,
                            label=f"strict, seed {s}")
            ax.plot([r["step"] for r in ev], [r["rl/reward_robust"] for r in ev], "--", lw=1,
                    color=line.get_color(), label=f"robust, seed {s}")
    if th:
        ax.axhline(th["reward_at_sft_optimum"], color="k", lw=0.8, ls=":",
                   label="1 − ε: reward at the SFT optimum")
    ax.set(xlabel="SFT step (after RL)", ylabel="held-out reward", title="RL then SFT: reward")
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


def write_report(cfg, rows: list[dict], out: str, *, eps: float | None = None,
                 wall_s: float | None = None) -> dict:
    """Write summary.json, report.md and the plots into ``out``; returns the summary."""
    if eps is None and cfg.task == "builtin":
        eps = cfg.eps
    summary = summarize(cfg, rows, eps)
    if wall_s is not None:
        summary["wall_s"] = wall_s
    _atomic_text(os.path.join(out, "summary.json"), json.dumps(summary, indent=1) + "\n")
    _atomic_text(os.path.join(out, "report.md"), render_markdown(cfg, summary, wall_s))
    plot(cfg, rows, summary, out)
    return summary
