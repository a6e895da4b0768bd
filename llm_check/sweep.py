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

from llm_check.run_config import (SETTING_RL_OPTIM, SETTINGS, RunConfig, grpo_setting,
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
    rl_lr: float | None = None  # None: each setting's own (run_config.SETTING_RL_OPTIM)
    rl_adam_eps: float | None = None  # likewise

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
        for name, v in (("rl-lr", self.rl_lr), ("rl-adam-eps", self.rl_adam_eps)):
            if v is not None and not v > 0:
                raise InputError(f"setting --{name} {v}: must be > 0")
        if self.rl_then_sft_rl_steps < 1:
            raise InputError(f"setting --rl-then-sft-rl-steps {self.rl_then_sft_rl_steps}: "
                             "must be >= 1")
        dataclasses.replace(self.run, seeds=self.seeds).validate()
        return self

    def to_json(self) -> dict:
        return dataclasses.asdict(self)


def _read_done(path: str) -> dict:
    from llm_check.pipeline import _read_rows

    rows = _read_rows(path)
    if any("key" not in r for r in rows):
        raise InputError(f"{path}: a row without its 'key' (not a sweep's rows.jsonl)")
    return {r["key"]: r for r in rows}


def run_sweep(sc: SweepConfig, out: str, *, resume: bool = False, workers: int = 1) -> list[dict]:
    """Every combination of ``sc``; writes sweep.json, sweep.md, sweep.png into ``out``.

    The (seed, eps) cells are independent (each trains its own base and SFT model), so with
    ``workers`` > 1 they run in that many processes, each on one CPU thread (the tiny model's
    steps are too small for XLA's intra-op threads to help: one 2-thread process makes a GRPO
    step in the time two 1-thread processes make one each, docs/benchmarks.md). Each finished run
    is appended to ``rows.jsonl`` by the process that ran it; the progress bar follows that file.

    In a run of several JAX processes (``jax.distributed``), every process runs every cell
    together (``workers`` must be 1) and process 0 alone writes the folder's files.
    """
    import jax
    from tqdm.auto import tqdm

    from llm_check.pipeline import _read_json, _write_rows
    from llm_check.sharding import barrier, is_main

    sc.validate()
    if workers < 1:
        raise InputError(f"setting --workers {workers}: must be >= 1")
    if workers > 1 and jax.process_count() > 1:
        raise InputError(f"setting --workers {workers}: must be 1 with several processes")
    t0 = time.perf_counter()
    cfg_path = os.path.join(out, "sweep_config.json")
    if os.path.exists(cfg_path) and not resume:
        raise InputError(f"--out {out}: already holds a sweep; pass --resume or choose another folder")
    now = json.loads(json.dumps(sc.to_json()))
    if os.path.exists(cfg_path) and _read_json(cfg_path) != now:
        raise InputError(f"--resume: the settings differ from {cfg_path}")
    rows_path = os.path.join(out, "rows.jsonl")
    done = _read_done(rows_path) if resume else {}
    barrier("sweep: settings checked")  # every process has read the folder before 0 writes it
    if is_main():
        os.makedirs(out, exist_ok=True)
        if done:  # rewritten whole, so that no row cut short by a kill is left to append after
            _write_rows(rows_path, list(done.values()))
        if not os.path.exists(cfg_path):
            with open(cfg_path + ".tmp", "w") as f:
                json.dump(now, f, indent=1)
            os.replace(cfg_path + ".tmp", cfg_path)
        if not resume and os.path.exists(rows_path):
            os.remove(rows_path)

    all_cells = [(seed, eps) for seed in sc.seeds for eps in sc.eps]
    bar = tqdm(total=sum(len(_runs(sc, *c)) for c in all_cells), desc="sweep runs",
               disable=not is_main())
    bar.update(len(done))
    cells = [c for c in all_cells if any(_key(*c, *r) not in done for r in _runs(sc, *c))]
    workers = max(1, min(workers, len(cells)))
    if workers == 1:
        run_cells(sc, cells, out, set(done), resume, on_row=lambda: bar.update(1))
    else:
        import multiprocessing
        from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait

        with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn"),
                                 initializer=_one_thread_worker) as pool:
            pending = {pool.submit(run_cells, sc, cells[i::workers], out, set(done), resume)
                       for i in range(workers)}
            while pending:
                finished, pending = wait(pending, timeout=2.0, return_when=FIRST_COMPLETED)
                for fut in finished:
                    fut.result()  # a worker's error stops the sweep (--resume continues it)
                bar.update(len(_read_done(rows_path)) - bar.n)
    bar.close()
    if not is_main():
        return []
    rows = list(_read_done(rows_path).values())
    rows.sort(key=lambda r: (r["order"], r["setting"], r["eps"], r["beta"], r["seed"]))
    from llm_check import sweep_report

    sweep_report.write(sc, rows, out, wall_s=time.perf_counter() - t0)
    return rows


def _one_thread_worker() -> None:
    """Set up a sweep worker process before it imports JAX: one XLA CPU thread, no stage bars."""
    os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " --xla_cpu_multi_thread_eigen="
                               "false intra_op_parallelism_threads=1").strip()
    os.environ["TQDM_DISABLE"] = "1"


def run_cells(sc: SweepConfig, cells, out: str, done: set, resume: bool, on_row=None) -> int:
    """Run every (seed, eps) cell of ``cells``, appending each finished run's row to
    ``rows.jsonl`` (runs whose key is in ``done`` are skipped); returns the number of rows
    written. The jitted functions are shared by the cells of one call."""
    from llm_check import pipeline as P
    from llm_check.grpo import make_grpo_step
    from llm_check.predictions import (ce_change_prediction, coarse_kl, coarse_target,
                                       expert_share, fixed_point_name, gibbs_drop, rl_target)
    from llm_check.sharding import is_main

    rows_path = os.path.join(out, "rows.jsonl")
    fns, rl_steps, written = None, {}, 0
    for seed, eps in cells:
        cfg = dataclasses.replace(sc.run, seeds=(seed,), eps=eps)
        todo = [r for r in _runs(sc, seed, eps) if _key(seed, eps, *r) not in done]
        if not todo:
            continue
        ctx, init = P.build_context(cfg, seed, fns=fns)
        fns = ctx.fns
        root = os.path.join(out, "runs", f"seed{seed}", f"eps{eps:g}")
        base = (P.run_stage(ctx, stage="base", label="base", folder=os.path.join(root, "base"),
                            start_params=init, resume=True) if cfg.base_steps else init)
        sft = P.run_stage(ctx, stage="sft", label="sft", folder=os.path.join(root, "sft"),
                          start_params=base, resume=True)
        ex_sft = P.measure_exact(ctx, sft)
        ex_base = P.measure_exact(ctx, base)
        for setting, beta, order in todo:
            g = grpo_setting(setting, sc.run.grpo, beta=beta)
            key = _key(seed, eps, setting, beta, order)
            n_rl = cfg.rl_steps if order == "sft_then_rl" else sc.rl_then_sft_rl_steps
            own = SETTING_RL_OPTIM[setting]
            optim = dataclasses.replace(cfg.rl_optim, lr=sc.rl_lr or own["lr"],
                                        eps=sc.rl_adam_eps or own["eps"])
            ocfg = dataclasses.replace(cfg, grpo=g, rl_steps=n_rl, rl_optim=optim)
            rctx = dataclasses.replace(ctx, cfg=ocfg)
            # one compiled step per (setting, length, optimizer): beta is an argument
            shape = (dataclasses.replace(g, beta=0.0), n_rl, optim)
            step = rl_steps.get(shape)
            if step is None:
                step = rl_steps[shape] = make_grpo_step(
                    ctx.graphdef, ctx.rest, P.stage_optimizer(optim, n_rl, g.inner_iters), g)
            folder = os.path.join(root, f"{setting}_beta{beta:g}", order)
            start = sft if order == "sft_then_rl" else base
            ex0 = ex_sft if order == "sft_then_rl" else ex_base
            rl = P.run_stage(rctx, stage="rl", label=order, folder=os.path.join(
                folder, "rl"), start_params=start, resume=resume, step=step)
            ex1 = P.measure_exact(rctx, rl)
            target = rl_target(ex0["s"], g)
            law = None if target is None else coarse_target(ex0, target)
            row = {"key": key, "beta": beta, "eps": eps, "seed": seed,
                   "setting": setting, "order": order, "rl_lr": optim.lr,
                   "rl_adam_eps": optim.eps,
                   "fixed_point": fixed_point_name(g),
                   "s_start": ex0["s"].tolist(),
                   "reward_before_rl": ex0["reward"], "reward_after_rl": ex1["reward"],
                   "reward_target": None if target is None else float(np.mean(target)),
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
            if is_main():  # (one JAX process of several: the others computed the same row)
                with open(rows_path, "a") as f:  # one write per row: safe across workers
                    f.write(json.dumps(row) + "\n")
            written += 1
            if on_row is not None:
                on_row()
    return written


def _runs(sc: SweepConfig, seed, eps) -> list[tuple]:
    """The (setting, beta, order) runs of one (seed, eps) cell, in the order they run: SFT then
    RL for every setting, RL then SFT for the first setting only."""
    return [(s, b, o) for s in sc.settings for b in sc.betas
            for o in ("sft_then_rl", "rl_then_sft") if o == "sft_then_rl" or s == sc.settings[0]]


def _key(seed, eps, setting, beta, order) -> str:
    return f"{order}/{setting}/eps{eps:g}/beta{beta:g}/seed{seed}"
