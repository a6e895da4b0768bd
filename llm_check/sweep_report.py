"""sweep.json, sweep.md and sweep.png of ``coupling llm sweep``: measured effects on predicted curves.

Statistics: for each (setting, eps, beta) the mean over seeds of the measured and the predicted
change, the relative error of the means |measured - predicted| / |predicted|, and a 95% interval of
the measured mean over seeds (Student t). Each seed's measurement is paired with the prediction from
that seed's own SFT model, so ``pair_err`` (the mean over seeds of measured - predicted, with its 95%
interval) tests the prediction without the between-seed spread of the SFT models.
"""

from __future__ import annotations

import json
import math
import os

import numpy as np

from llm_check.run_config import SETTING_RL_OPTIM

# Student t quantiles, 97.5%, by degrees of freedom (1..10); beyond, the normal's.
_T975 = (12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228)


def interval(values) -> tuple[float, float]:
    """(mean, half-width of the 95% t interval); half-width 0 for one value."""
    v = np.asarray(values, np.float64)
    if len(v) < 2:
        return float(v.mean()), 0.0
    t = _T975[len(v) - 2] if len(v) - 1 <= len(_T975) else 1.96
    return float(v.mean()), float(t * v.std(ddof=1) / math.sqrt(len(v)))


def aggregate(rows: list[dict]) -> list[dict]:
    """One summary per (order, setting, eps, beta) group."""
    groups: dict = {}
    for r in rows:
        groups.setdefault((r["order"], r["setting"], r["eps"], r["beta"]), []).append(r)
    out = []
    for (order, setting, eps, beta), rs in sorted(groups.items()):
        g = {"order": order, "setting": setting, "eps": eps, "beta": beta, "n": len(rs),
             "fixed_point": rs[0]["fixed_point"]}
        if order == "sft_then_rl":
            meas, meas_hw = interval([r["ce_rise"] for r in rs])
            preds = [r["ce_rise_pred"] for r in rs]
            g.update({"ce_rise": meas, "ce_rise_ci95": meas_hw,
                       "target_gap": float(np.mean([r["target_gap"] for r in rs
                                                    if r["target_gap"] is not None] or [np.nan])),
                       "target_kl": float(np.mean([r["target_kl"] for r in rs
                                                   if r.get("target_kl") is not None] or [np.nan]))})
            if all(p is not None for p in preds):
                pred = float(np.mean(preds))
                diff, diff_hw = interval([r["ce_rise"] - r["ce_rise_pred"] for r in rs])
                g.update({"ce_rise_pred": pred, "abs_err": abs(meas - pred),
                          "rel_err": abs(meas - pred) / abs(pred) if pred else math.inf,
                          "pair_err": diff, "pair_err_ci95": diff_hw})
        else:
            after, after_hw = interval([r["reward_after_sft"] for r in rs])
            g.update({"reward_before_sft": float(np.mean([r["reward_before_sft"] for r in rs])),
                      "reward_after_sft": after, "reward_after_sft_ci95": after_hw,
                      "reward_after_sft_pred": float(np.mean([r["reward_after_sft_pred"]
                                                              for r in rs])),
                      "max_seed_abs_err": float(max(abs(r["reward_after_sft"]
                                                        - r["reward_after_sft_pred"])
                                                    for r in rs))})
            if all("j_drop" in r for r in rs):  # [thm41.gibbs] (predictions.gibbs_drop)
                g.update({k: float(np.mean([r[k] for r in rs]))
                          for k in ("j_drop", "j_drop_pred", "kl_rl_to_tilt")})
        out.append(g)
    return out


def _f(x, nd=4):
    return "n/a" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.{nd}f}"


def render(sc, groups: list[dict], wall_s: float | None) -> str:
    run = sc.run
    lines = ["# coupling llm sweep", "",
             f"betas {list(sc.betas)}, eps {list(sc.eps)}, seeds {list(sc.seeds)}, settings "
             f"{list(sc.settings)}. Tiny Qwen3 on the built-in task; base {run.base_steps} steps, "
             f"SFT {run.sft_steps} steps; RL {run.rl_steps} steps (G={run.grpo.group_size}, "
             f"{run.grpo.prompts_per_step} prompts/step, Adam lr / eps " + ", ".join(
                 f"{s} {sc.rl_lr or SETTING_RL_OPTIM[s]['lr']:g} / "
                 f"{sc.rl_adam_eps or SETTING_RL_OPTIM[s]['eps']:g}" for s in sc.settings) + ", "
             f"{run.rl_optim.schedule})." + (f" Wall time {wall_s:.0f} s." if wall_s else ""), "",
             "CE is the exact SFT loss under the true expert law over every prompt (no sampling); "
             "the prediction comes from each seed's SFT model and the fixed point of the setting. "
             "rel. err. = |mean measured − mean predicted| / |mean predicted|; paired = mean over "
             "seeds of (measured − predicted) ± 95% t interval; target gap = mean over prompts of "
             "|p(right) − p*(right)| at the end of RL; target KL = KL(fixed point ‖ policy) over "
             "(right, wrong, any other completion), which also sees mass left on unlisted "
             "completions.", "",
             "## SFT then RL: change of the SFT loss over RL", "",
             "| setting | eps | beta | measured (± 95%) | predicted | rel. err. | paired | "
             "target gap | target KL | fixed point |", "|---|---|---|---|---|---|---|---|---|---|"]
    for g in groups:
        if g["order"] != "sft_then_rl":
            continue
        lines.append(f"| {g['setting']} | {g['eps']:g} | {g['beta']:g} | {_f(g['ce_rise'])} ± "
                     f"{_f(g['ce_rise_ci95'])} | {_f(g.get('ce_rise_pred'))} | "
                     f"{_f(g.get('rel_err'), 3)} | {_f(g.get('pair_err'))} ± "
                     f"{_f(g.get('pair_err_ci95'))} | {_f(g['target_gap'])} | {_f(g['target_kl'])} | "
                     f"{g['fixed_point']} |")
    lines += ["", "## RL then SFT: the exact reward p(right) over SFT", "",
              "| eps | beta | before SFT | after SFT (± 95%) | predicted (the SFT data's share "
              "of right answers) | largest seed error |", "|---|---|---|---|---|---|"]
    for g in groups:
        if g["order"] != "rl_then_sft":
            continue
        lines.append(f"| {g['eps']:g} | {g['beta']:g} | {_f(g['reward_before_sft'])} | "
                     f"{_f(g['reward_after_sft'])} ± {_f(g['reward_after_sft_ci95'])} | "
                     f"{_f(g['reward_after_sft_pred'])} | {_f(g['max_seed_abs_err'])} |")
    gibbs = [g for g in groups if g["order"] == "rl_then_sft" and "j_drop" in g]
    if gibbs:
        lines += ["", "## RL then SFT: the drop of J_beta over SFT (thm41.gibbs)", "",
                  "On the law over (right, wrong, any other completion), with p* the Gibbs tilt "
                  "of the base: predicted drop beta KL(p_SFT ‖ p*) (exact if RL reached p*); the "
                  "measured drop J_beta(p_RL) − J_beta(p_SFT) is smaller by exactly "
                  "beta KL(p_RL ‖ p*), RL's own distance from p*.", "",
                  "| eps | beta | measured drop | predicted | rel. err. | KL(p_RL ‖ p*) |",
                  "|---|---|---|---|---|---|"]
        for g in gibbs:
            rel = abs(g["j_drop"] - g["j_drop_pred"]) / abs(g["j_drop_pred"])
            lines.append(f"| {g['eps']:g} | {g['beta']:g} | {_f(g['j_drop'])} | "
                         f"{_f(g['j_drop_pred'])} | {_f(rel, 3)} | {_f(g['kl_rl_to_tilt'])} |")
    lines += ["", "eps = 0 is the negative control: a deterministic expert that always earns the "
              "reward. Theory (threshold.kl) says RL cannot raise its SFT loss; from an imperfect "
              "SFT model it predicts a small fall.", ""]
    return "\n".join(lines)


def plot(sc, rows: list[dict], groups: list[dict], path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from llm_check.predictions import ce_change_prediction
    from llm_check.run_config import grpo_setting

    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    ax = axes[0]
    grid = np.geomspace(min(sc.betas) / 1.5, max(sc.betas) * 1.5, 40)
    colors = {"exact": "C0", "paper": "C3"}
    for setting in sc.settings:
        for eps, ls in zip(sc.eps, ("-", "--", ":", "-.")):
            rs = [r for r in rows if r["order"] == "sft_then_rl" and r["setting"] == setting
                  and r["eps"] == eps]
            if not rs:
                continue
            starts = {r["seed"]: np.asarray(r["s_start"]) for r in rs}
            curve = [np.mean([ce_change_prediction(s, eps, grpo_setting(setting, sc.run.grpo,
                                                                        beta=b))
                              for s in starts.values()]) for b in grid]
            c = colors.get(setting, None)
            ax.plot(grid, curve, ls, color=c, lw=1, label=f"{setting}, eps={eps:g}: predicted")
            gs = [g for g in groups if g["order"] == "sft_then_rl" and g["setting"] == setting
                  and g["eps"] == eps]
            ax.errorbar([g["beta"] for g in gs], [g["ce_rise"] for g in gs],
                        yerr=[g["ce_rise_ci95"] for g in gs], fmt="o", color=c, ms=4, capsize=3,
                        label=f"{setting}, eps={eps:g}: measured (mean, 95% over seeds)")
    ax.axhline(0, color="k", lw=0.5)
    ax.set(xscale="log", xlabel="β (KL weight)", ylabel="change of the SFT loss over RL (nats)",
           title="SFT then RL")
    ax.set_xticks(list(sc.betas), [f"{b:g}" for b in sc.betas])  # the grid's betas, plainly
    ax.minorticks_off()
    ax.legend(fontsize=6)
    ax = axes[1]
    rs = [r for r in rows if r["order"] == "rl_then_sft"]
    for eps, m in zip(sc.eps, ("o", "s", "^", "D")):
        sel = [r for r in rs if r["eps"] == eps]
        ax.scatter([r["reward_after_sft_pred"] for r in sel], [r["reward_after_sft"] for r in sel],
                   marker=m, s=18, label=f"eps={eps:g}, after SFT (each seed and beta)")
        ax.scatter([r["reward_after_sft_pred"] for r in sel], [r["reward_before_sft"] for r in sel],
                   marker=m, s=18, facecolors="none", edgecolors="gray",
                   label=f"eps={eps:g}, before SFT (after RL)")
    lo = min([r["reward_after_sft_pred"] for r in rs] + [0.5])
    ax.plot([lo, 1], [lo, 1], "k:", lw=0.8, label="measured = predicted")
    ax.set(xlabel="predicted reward after SFT", ylabel="exact reward p(right)",
           title="RL then SFT")
    ax.legend(fontsize=6)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write(sc, rows: list[dict], out: str, wall_s: float | None = None) -> list[dict]:
    groups = aggregate(rows)
    doc = {"config": json.loads(json.dumps(sc.to_json())), "wall_s": wall_s, "runs": rows,
           "groups": groups}
    for name, text in (("sweep.json", json.dumps(doc, indent=1) + "\n"),
                       ("sweep.md", render(sc, groups, wall_s))):
        tmp = os.path.join(out, name + ".tmp")
        with open(tmp, "w") as f:
            f.write(text)
        os.replace(tmp, os.path.join(out, name))
    plot(sc, rows, groups, os.path.join(out, "sweep.png"))
    return groups
