"""``coupling llm sweep``: the size of both couplings over a beta x eps grid, against theory.

For every seed and expert error rate eps, the base and the SFT model are trained once; every RL run
that starts from them shares them. Then, for every GRPO setting (``run_config.SETTINGS``) and KL
weight beta:

- SFT then RL: RL from the SFT model. Before it starts, theory predicts the change of the exact SFT
  loss (``exact_eval``: the true expert law, every prompt, no sampling) from the SFT model's own
  per-prompt success rates and the fixed point of that setting (``predictions``); after it, the
  change is measured. ``ce_rise_pred`` is thm31.identity for the ``exact`` setting (RL whose fixed
  point is the Gibbs tilt p*) and the k3 fixed point with std-divided advantages for ``paper``.
- RL then SFT (the first setting in the list only; ``rl_then_sft_rl_steps`` RL steps, 100 by
  default, since the prediction is about the SFT that follows): RL from the base, then SFT. SFT
  converges to its data's law, so the predicted reward after SFT is the mean over prompts of the
  training set's per-prompt share of right answers (1 - eps in expectation, [thm41.argmax]).
  When the setting's fixed point is the Gibbs tilt p* of the base, also [thm41.gibbs] on the
  three-cell law (``predictions.gibbs_drop``): the drop of J_beta over SFT against
  beta KL(p_SFT || p*).

eps = 0 is the negative control: a deterministic, reward-optimal expert, for which theory says RL
cannot raise the SFT loss, and from an imperfect SFT model predicts a small fall ([threshold.kl]).

Writes ``sweep.json`` (one row per run), ``sweep.md`` (tables with relative errors and 95%
intervals over seeds) and ``sweep.png``. ``--resume`` skips finished runs (each stage keeps its
``final`` checkpoint and each run's row is appended to ``rows.jsonl`` when it ends).
"""

from __future__ import annotations

import dataclasses
import json
import os
import time
from dataclasses import dataclass

import numpy as np

from llm_check.run_config import (SETTING_RL_LR, SETTINGS, RunConfig, grpo_setting,
                                  sweep_run_config)
from theory.errors import InputError


@dataclass(frozen=True)
class SweepConfig:
    betas: tuple[float, ...] = (0.25, 0.5, 1.0)
    eps: tuple[float, ...] = (0.3, 0.0)
    seeds: tuple[int, ...] = (0, 1, 2)
    settings: tuple[str, ...] = ("exact", "paper")
    run: RunConfig = dataclasses.field(default_factory=sweep_run_config)  # everything else
    rl_then_sft_rl_steps: int = 100
    rl_lr: float | None = None  # None: each setting's own (run_config.SETTING_RL_LR)

    def validate(self) -> "SweepConfig":
        if not self.betas or any(not b > 0 for b in self.betas):
            raise InputError(f"setting --betas {list(self.betas)}: need at least one beta > 0")
        if not self.eps or any(not 0 <= e < 1 for e in self.eps):
            raise InputError(f"setting --eps {list(self.eps)}: each must lie in [0, 1)")
        if not self.settings or any(s not in SETTINGS for s in self.settings):
            raise InputError(f"setting --settings {list(self.settings)}: choose from "
                             f"{', '.join(SETTINGS)}")
        if self.run.task != "builtin":
            raise InputError("coupling llm sweep needs --task builtin (its answers can be listed)")
        if not self.seeds or len(set(self.seeds)) != len(self.seeds) or min(self.seeds) < 0:
            raise InputError(f"setting --seeds {list(self.seeds)}: distinct seeds >= 0")
        if self.rl_lr is not None and not self.rl_lr > 0:
            raise InputError(f"setting --rl-lr {self.rl_lr}: must be > 0")
        if self.rl_then_sft_rl_steps < 1:
            raise InputError(f"setting --rl-then-sft-rl-steps {self.rl_then_sft_rl_steps}: "
                             "must be >= 1")
        dataclasses.replace(self.run, seeds=self.seeds).validate()
        return self

    def to_json(self) -> dict:
        return dataclasses.asdict(self)


def _read_done(path: str) -> dict:
    from llm_check.pipeline import _read_rows

    return {r["key"]: r for r in _read_rows(path)}


def run_sweep(sc: SweepConfig, out: str, *, resume: bool = False) -> list[dict]:
    """Every combination of ``sc``; writes sweep.json, sweep.md, sweep.png into ``out``."""
    from tqdm.auto import tqdm

    from llm_check import pipeline as P
    from llm_check.grpo import make_grpo_step
    from llm_check.predictions import (ce_change_prediction, coarse_kl, coarse_target,
                                       expert_share, fixed_point_name, gibbs_drop, rl_target)

    sc.validate()
    t0 = time.perf_counter()
    cfg_path = os.path.join(out, "sweep_config.json")
    if os.path.exists(cfg_path) and not resume:
        raise InputError(f"--out {out}: already holds a sweep; pass --resume or choose another folder")
    os.makedirs(out, exist_ok=True)
    now = json.loads(json.dumps(sc.to_json()))
    if os.path.exists(cfg_path):
        with open(cfg_path) as f:
            if json.load(f) != now:
                raise InputError(f"--resume: the settings differ from {cfg_path}")
    else:
        with open(cfg_path + ".tmp", "w") as f:
            json.dump(now, f, indent=1)
        os.replace(cfg_path + ".tmp", cfg_path)
    rows_path = os.path.join(out, "rows.jsonl")
    done = _read_done(rows_path) if resume else {}
    if not resume and os.path.exists(rows_path):
        os.remove(rows_path)

    n_sft_rl = len(sc.seeds) * len(sc.eps) * len(sc.settings) * len(sc.betas)
    n_rl_sft = len(sc.seeds) * len(sc.eps) * len(sc.betas)
    bar = tqdm(total=n_sft_rl + n_rl_sft, desc="sweep runs")
    rows = list(done.values())
    bar.update(len(rows))
    fns, rl_steps = None, {}
    for seed in sc.seeds:
        for eps in sc.eps:
            cfg = dataclasses.replace(sc.run, seeds=(seed,), eps=eps)
            ctx, init = P.build_context(cfg, seed, fns=fns)
            fns = ctx.fns
            root = os.path.join(out, "runs", f"seed{seed}", f"eps{eps:g}")
            todo = [(s, b) for s in sc.settings for b in sc.betas
                    if _key(seed, eps, s, b, "sft_then_rl") not in done]
            todo_rs = [b for b in sc.betas if _key(seed, eps, sc.settings[0], b, "rl_then_sft")
                       not in done]
            if not todo and not todo_rs:
                continue
            base = (P.run_stage(ctx, stage="base", label="base", folder=os.path.join(root, "base"),
                                start_params=init, resume=True) if cfg.base_steps else init)
            sft = P.run_stage(ctx, stage="sft", label="sft", folder=os.path.join(root, "sft"),
                              start_params=base, resume=True)
            ex_sft = P.measure_exact(ctx, sft)
            ex_base = P.measure_exact(ctx, base)
            for setting in sc.settings:
                for beta in sc.betas:
                    g = grpo_setting(setting, sc.run.grpo, beta=beta)
                    for order in ("sft_then_rl", "rl_then_sft"):
                        key = _key(seed, eps, setting, beta, order)
                        if key in done or (order == "rl_then_sft" and setting != sc.settings[0]):
                            continue
                        n_rl = cfg.rl_steps if order == "sft_then_rl" else sc.rl_then_sft_rl_steps
                        optim = dataclasses.replace(cfg.rl_optim, lr=sc.rl_lr or
                                                    SETTING_RL_LR[setting])
                        ocfg = dataclasses.replace(cfg, grpo=g, rl_steps=n_rl, rl_optim=optim)
                        rctx = dataclasses.replace(ctx, cfg=ocfg)
                        # one compiled step per (setting, length, lr): beta is an argument
                        shape = (dataclasses.replace(g, beta=0.0), n_rl, optim.lr)
                        step = rl_steps.get(shape)
                        if step is None:
                            step = rl_steps[shape] = make_grpo_step(
                                ctx.graphdef, ctx.rest, P.stage_optimizer(optim, n_rl), g)
                        folder = os.path.join(root, f"{setting}_beta{beta:g}", order)
                        start = sft if order == "sft_then_rl" else base
                        ex0 = ex_sft if order == "sft_then_rl" else ex_base
                        rl = P.run_stage(rctx, stage="rl", label=order, folder=os.path.join(
                            folder, "rl"), start_params=start, resume=resume, step=step)
                        ex1 = P.measure_exact(rctx, rl)
                        target = rl_target(ex0["s"], g)
                        law = None if target is None else coarse_target(ex0, target)
                        row = {"key": key, "beta": beta, "eps": eps, "seed": seed,
                               "setting": setting, "order": order,
                               "fixed_point": fixed_point_name(g),
                               "s_start": ex0["s"].tolist(),
                               "reward_before_rl": ex0["reward"], "reward_after_rl": ex1["reward"],
                               "reward_target": (None if target is None
                                                 else float(np.mean(target))),
                               "target_gap": (None if target is None else
                                              float(np.mean(np.abs(ex1["s"] - target)))),
                               "target_kl": None if law is None else coarse_kl(law, ex1)}
                        if order == "sft_then_rl":
                            pred = ce_change_prediction(ex0["s"], eps, g)
                            row.update({"ce_before_rl": ex0["ce"], "ce_after_rl": ex1["ce"],
                                        "ce_rise": ex1["ce"] - ex0["ce"], "ce_rise_pred": pred})
                        else:
                            after = P.run_stage(rctx, stage="sft", label=order, folder=os.path.join(
                                folder, "sft"), start_params=rl, resume=resume)
                            ex2 = P.measure_exact(rctx, after)
                            row.update({
                                "reward_before_sft": ex1["reward"],
                                "reward_after_sft": ex2["reward"],
                                "reward_after_sft_pred": expert_share(ctx.task),
                                "reward_at_expert": 1.0 - eps,
                            })
                            if g.kl_mode == "reward" and not g.std_normalize:  # p* the tilt
                                row.update(gibbs_drop(ex_base, ex1, ex2, beta))
                        with open(rows_path, "a") as f:
                            f.write(json.dumps(row) + "\n")
                        rows.append(row)
                        bar.update(1)
    bar.close()
    rows.sort(key=lambda r: (r["order"], r["setting"], r["eps"], r["beta"], r["seed"]))
    from llm_check import sweep_report

    sweep_report.write(sc, rows, out, wall_s=time.perf_counter() - t0)
    return rows


def _key(seed, eps, setting, beta, order) -> str:
    return f"{order}/{setting}/eps{eps:g}/beta{beta:g}/seed{seed}"
