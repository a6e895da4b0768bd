"""``coupling llm ...``: run the confirmation pipeline, evaluate a checkpoint, sweep the step size.

    coupling llm run   [--model tiny|PATH] [--order sft_then_rl|rl_then_sft|both] [--task builtin|cola:DIR|
                       jsonl:FILE] [--out DIR] [--seeds N|LIST] [--mesh SPEC] [--resume] ...
    coupling llm eval  --model PATH [--task ...]       held-out SFT loss and rewards of a checkpoint
    coupling llm sweep-lr [--lrs LIST] ...             local second-order prediction vs step size

Every setting is validated before any work starts (``theory.errors.InputError`` names it; the
``coupling`` dispatcher prints one line and exits 2). A non-finite loss stops a run with one line on
stderr and exit code 3, keeping the last good checkpoint.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from typing import TYPE_CHECKING

from theory.errors import InputError

if TYPE_CHECKING:
    from llm_check.run_config import RunConfig


def _seeds(text: str) -> tuple[int, ...]:
    """``3`` -> (0, 1, 2); ``0,5,7`` -> (0, 5, 7)."""
    try:
        if "," in text:
            return tuple(int(x) for x in text.split(",") if x.strip())
        n = int(text)
    except ValueError:
        raise InputError(f"setting --seeds {text!r}: give a count (3) or a list (0,5,7)") from None
    if n < 1:
        raise InputError(f"setting --seeds {text!r}: the count must be >= 1")
    return tuple(range(n))


def _floats(text: str) -> tuple[float, ...]:
    try:
        return tuple(float(x) for x in text.split(",") if x.strip())
    except ValueError:
        raise InputError(f"setting --lrs {text!r}: expected comma-separated numbers") from None


def _add_process_flags(p: argparse.ArgumentParser) -> None:
    """--coordinator, --num-processes, --process-id, --process-timeout (``jax.distributed``)."""
    mp = p.add_argument_group(
        "several processes", "jax.distributed: start the same command once per process (host), "
        "each with its own --process-id; all of them must see the same files (a shared filesystem)")
    mp.add_argument("--coordinator", default=None, help="HOST:PORT where process 0 serves "
                    "the coordination service (every process passes the same)")
    mp.add_argument("--num-processes", type=int, default=None, help="how many processes")
    mp.add_argument("--process-id", type=int, default=None, help="this process, 0 .. N-1 "
                    "(process 0 writes the files and prints the results)")
    mp.add_argument("--process-timeout", type=int, default=100, help="seconds: how long to wait "
                    "for every process to join, and how long a silent (dead) process may stay "
                    "silent before JAX stops every other process with an error naming it")


def _add_common(p: argparse.ArgumentParser, single_eps: bool = True) -> dict:
    """The data, model and sampling flags every subcommand shares; returns the argument groups."""
    d = _defaults()
    groups = {name: p.add_argument_group(title) for name, title in (
        ("data", "data"), ("model", "model"), ("base", "base stage (tiny model: format "
                                                        "pre-training)"),
        ("sft", "SFT stage"), ("rl", "RL stage (GRPO)"), ("eval", "evaluation"),
        ("ckpt", "outputs and checkpoints"), ("devices", "devices"))}
    g = groups["data"]
    g.add_argument("--task", default="builtin", help="builtin | cola:DIR | jsonl:FILE")
    if single_eps:
        g.add_argument("--eps", type=float, default=d.eps,
                       help="built-in task: the expert's error rate")
    g.add_argument("--max-operand", type=int, default=d.max_operand,
                   help="built-in task: operands a, b in 0..N")
    g.add_argument("--n-train", type=int, default=d.n_train, help="built-in task: train rows")
    g.add_argument("--n-heldout", type=int, default=d.n_heldout,
                   help="built-in task: held-out rows")
    g.add_argument("--heldout-fraction", type=float, default=d.heldout_fraction,
                   help="JSONL tasks without a dev split: the share of rows held out")
    g = groups["model"]
    g.add_argument("--model", default="tiny", help="'tiny' (built-in, random init) or a folder "
                   "holding an HF Qwen3 snapshot; eval also takes a stage's final checkpoint "
                   "(RUN/runs/seed0/sft_then_rl/rl/final)")
    g.add_argument("--chunk-size", type=int, default=d.chunk_size,
                   help="sequence positions per LM-head chunk (memory)")
    g = groups["eval"]
    g.add_argument("--eval-rows", type=int, default=d.eval_rows,
                   help="held-out rows evaluated (0 = all)")
    g.add_argument("--eval-samples", type=int, default=d.eval_samples,
                   help="sampled completions per held-out prompt")
    g = groups["rl"]
    g.add_argument("--max-new-tokens", type=int, default=d.grpo.max_new_tokens,
                   help="completion length limit (sampling)")
    g.add_argument("--temperature", type=float, default=d.grpo.temperature,
                   help="sampling temperature (log-probs are scored at it too)")
    return groups


def _defaults():
    from llm_check.run_config import RunConfig

    return RunConfig()


def _add_run_flags(p: argparse.ArgumentParser, d, single_eps: bool = True) -> dict:
    """The settings of one run (``run`` and ``sweep`` share them), in argument groups."""
    from llm_check.run_config import SETTING_RL_OPTIM

    groups = _add_common(p, single_eps)
    g = groups["model"]
    g.add_argument("--init-std", type=float, default=d.init_std,
                   help="tiny model: random-init std")
    g = groups["devices"]
    g.add_argument("--mesh", default=None, help="device mesh, e.g. data=2,fsdp=4: parameters "
                   "split over fsdp, every batch's rows over all D*F devices, so batch sizes must "
                   "be multiples of D*F (default: one device)")
    g.add_argument("--dtype", default=d.dtype, help="compute dtype: float32 (CPU) or bfloat16 "
                   "(GPU/TPU, float32 master weights)")
    g.add_argument("--remat", action=argparse.BooleanOptionalAction, default=d.remat,
                   help="recompute each layer's activations in the backward pass (less memory, "
                   "about one more forward pass of compute)")
    g = groups["base"]
    g.add_argument("--base-steps", type=int, default=None,
                   help=f"format pre-training steps (default: {d.base_steps} for tiny, 0 for a "
                   "snapshot)")
    g.add_argument("--base-p-correct", type=float, default=d.base_p_correct,
                   help="share of base rows that keep their gold answer")
    g = groups["sft"]
    g.add_argument("--sft-steps", type=int, default=d.sft_steps, help="SFT steps")
    g.add_argument("--sft-batch", type=int, default=d.sft_batch, help="SFT rows per step")
    g.add_argument("--grad-accum", type=int, default=d.grad_accum,
                   help="micro-batches per SFT step (must divide --sft-batch)")
    g = groups["rl"]
    g.add_argument("--rl-steps", type=int, default=d.rl_steps, help="GRPO steps")
    for stage in ("base", "sft", "rl"):  # one AdamW per stage, every field its own flag
        g, o = groups[stage], getattr(d, f"{stage}_optim")
        if stage == "rl":
            g.add_argument("--rl-lr", type=float, default=None, help="peak learning rate "
                           "(default: the --setting's: " + ", ".join(
                               f"{k} {v['lr']:g}" for k, v in SETTING_RL_OPTIM.items()) + ")")
        else:
            g.add_argument(f"--{stage}-lr", type=float, default=o.lr, help="peak learning rate")
        g.add_argument(f"--{stage}-schedule", default=o.schedule, help="constant | cosine")
        g.add_argument(f"--{stage}-final-lr-frac", type=float, default=o.final_lr_frac,
                       help="cosine decays to lr times this")
        g.add_argument(f"--{stage}-warmup-steps", type=int, default=o.warmup_steps,
                       help="linear warmup steps")
        g.add_argument(f"--{stage}-weight-decay", type=float, default=o.weight_decay,
                       help="AdamW weight decay (matrices only)")
        g.add_argument(f"--{stage}-clip-norm", type=float, default=o.clip_norm,
                       help="global-norm gradient clipping")
        g.add_argument(f"--{stage}-adam-b1", type=float, default=o.b1, help="Adam beta1")
        g.add_argument(f"--{stage}-adam-b2", type=float, default=o.b2, help="Adam beta2")
        g.add_argument(f"--{stage}-adam-eps", type=float,
                       default=None if stage == "rl" else o.eps,
                       help="Adam's denominator floor" + (" (default: the --setting's: " + ", ".join(
                           f"{k} {v['eps']:g}" for k, v in SETTING_RL_OPTIM.items()) + ")"
                           if stage == "rl" else ""))
    g = groups["sft"]
    for name in ("warmup-steps", "weight-decay", "clip-norm"):  # deprecated: set all three stages
        g.add_argument(f"--{name}", type=float, default=None,
                       help=f"deprecated: sets --base-{name}, --sft-{name} and --rl-{name} alike")
    g = groups["rl"]
    g.add_argument("--setting", default="exact", help="GRPO estimator preset: exact (KL of the "
                   "completion in the reward, RLOO, no std division: converges to the Gibbs tilt "
                   "p*) or paper (k3 loss, group mean, std division); the six flags below "
                   "override single fields of it")
    g.add_argument("--kl-mode", default=None, help="reward | loss (default: from --setting)")
    g.add_argument("--kl-estimator", default=None, help="k1 | k2 | k3, the per-token estimator "
                   "in --kl-mode loss (default: from --setting)")
    g.add_argument("--baseline", default=None, help="mean | loo (default: from --setting)")
    g.add_argument("--std-normalize", action=argparse.BooleanOptionalAction, default=None,
                   help="divide advantages by the group std (default: from --setting)")
    g.add_argument("--aggregation", default=None, help="seq_mean_token_mean | token_mean | "
                   "fixed_length (default: from --setting)")
    g.add_argument("--kl-in-baseline", action=argparse.BooleanOptionalAction, default=None,
                   help="--kl-mode reward: form the group baseline from r - beta*k instead of r "
                   "alone (default: from --setting; exact: no)")
    g.add_argument("--beta", type=float, default=d.grpo.beta, help="KL weight")
    g.add_argument("--group-size", type=int, default=d.grpo.group_size,
                   help="completions per prompt (G)")
    g.add_argument("--prompts-per-step", type=int, default=d.grpo.prompts_per_step,
                   help="prompts per GRPO step")
    g.add_argument("--std-ddof", type=int, default=d.grpo.std_ddof, help="the group std's ddof")
    g.add_argument("--std-floor", type=float, default=d.grpo.std_floor,
                   help="added to the group std before dividing by it")
    # deprecated spellings, still accepted, not listed (docs/glossary.md names them)
    g.add_argument("--std-eps", dest="std_floor", type=float, help=argparse.SUPPRESS)
    g.add_argument("--clip-low", type=float, default=d.grpo.clip_low,
                   help="the ratio's clip range below 1: clip(rho, 1 - low, 1 + high)")
    g.add_argument("--clip-high", type=float, default=None,
                   help="the range above 1 (default: --clip-low)")
    g.add_argument("--clip-eps", dest="clip_low", type=float, help=argparse.SUPPRESS)
    g.add_argument("--clip-eps-high", dest="clip_high", type=float, help=argparse.SUPPRESS)
    g.add_argument("--inner-iters", type=int, default=d.grpo.inner_iters,
                   help="updates per rollout batch (mu)")
    g.add_argument("--top-p", type=float, default=d.grpo.top_p, help="nucleus sampling")
    g = groups["eval"]
    g.add_argument("--sampled-eval", action=argparse.BooleanOptionalAction, default=None,
                   help="sample completions at each evaluation for the strict/robust/format "
                   "rewards and the KL (default: on for run, off for sweep, which needs only the "
                   "exact quantities)")
    g.add_argument("--eval-every", type=int, default=d.eval_every,
                   help="steps between evaluations")
    g.add_argument("--local-steps", type=int, default=d.local_steps,
                   help="local theory on RL steps 1..N and every eval step (-1: every step)")
    g.add_argument("--local-theory", action=argparse.BooleanOptionalAction,
                   default=d.local_theory, help="the per-step second-order prediction of the CE "
                   "change (an HVP per RL step); the sweep leaves it off")
    groups["ckpt"].add_argument("--ckpt-every", type=int, default=d.ckpt_every,
                                help="steps between checkpoints")
    return groups


def _config_defaults(cfg) -> dict:
    """The argument defaults that make ``config_from_args`` return ``cfg`` (``--config FILE``)."""
    from llm_check.run_config import SETTINGS

    g = cfg.grpo
    out = {k: getattr(cfg, k) for k in (
        "model", "task", "order", "eps", "max_operand", "n_train", "n_heldout", "heldout_fraction",
        "eval_rows", "eval_samples", "sampled_eval", "mesh", "remat", "dtype", "base_steps",
        "base_p_correct", "init_std", "sft_steps", "sft_batch", "grad_accum", "rl_steps",
        "eval_every", "ckpt_every", "chunk_size", "local_steps")}
    out.update(seeds=",".join(str(s) for s in cfg.seeds) + ("," if len(cfg.seeds) == 1 else ""),
               local_theory=cfg.local_theory, beta=g.beta, group_size=g.group_size,
               prompts_per_step=g.prompts_per_step, clip_low=g.clip_low,
               clip_high=g.clip_high, inner_iters=g.inner_iters, std_ddof=g.std_ddof,
               std_floor=g.std_floor, max_new_tokens=g.max_new_tokens, temperature=g.temperature,
               top_p=g.top_p, report_to=cfg.report_to)
    # a named setting, and each estimator flag it does not fix (paper leaves kl_in_baseline);
    # every estimator flag of a custom one
    named = g.setting in SETTINGS
    if named:
        out["setting"] = g.setting
    out.update({k: getattr(g, k) for k in SETTINGS["exact"]
                if not (named and k in SETTINGS[g.setting])})
    for stage in ("base", "sft", "rl"):
        o = getattr(cfg, f"{stage}_optim")
        out.update({f"{stage}_{f}": getattr(o, f) for f in (
            "lr", "schedule", "final_lr_frac", "warmup_steps", "weight_decay", "clip_norm")})
        out[f"{stage}_adam_b1"], out[f"{stage}_adam_b2"] = o.b1, o.b2
        out[f"{stage}_adam_eps"] = o.eps
    return out


def _parser(config=None) -> argparse.ArgumentParser:
    """The ``coupling llm`` parser; with ``config`` (a RunConfig) the run and sweep defaults are
    its settings, so only the flags given on the command line change it."""
    ap = argparse.ArgumentParser(prog="coupling llm", description="Qwen3 SFT/GRPO confirmation runs")
    sub = ap.add_subparsers(dest="cmd", required=True)
    d = _defaults()

    fmt = argparse.ArgumentDefaultsHelpFormatter
    run = sub.add_parser("run", help="base -> SFT -> RL and base -> RL -> SFT, with a report",
                         formatter_class=fmt)
    groups = _add_run_flags(run, d)
    groups["data"].add_argument("--order", default=d.order, help="sft_then_rl | rl_then_sft | "
                                "both (sft-rl and rl-sft: deprecated spellings)")
    groups["data"].add_argument("--seeds", default=str(len(d.seeds)),
                                help="a count (3) or a list (0,5,7)")
    g = groups["ckpt"]
    g.add_argument("--out", default=None, help="output folder (default: llm_runs/<time>)")
    g.add_argument("--resume", action="store_true", help="continue the run in --out")
    g.add_argument("--config", default=None, help="start from this run config (a run's "
                   "config.json, or TOML with the same fields); flags given here override it")
    g.add_argument("--report-to", default=d.report_to, help="also log every metrics row to: "
                   "tensorboard, wandb (comma-separated; the [track] extra; WANDB_MODE=offline "
                   "works without a network)")

    _add_process_flags(run)

    swp = sub.add_parser("sweep", help="both couplings over a beta x eps grid, measured against "
                        "theory's predicted sizes (sweep.json, sweep.md, sweep.png)",
                        formatter_class=fmt)
    _add_run_flags(swp, d, single_eps=False)
    grid = swp.add_argument_group("the grid")
    grid.add_argument("--betas", default="0.25,0.5,1", help="KL weights (comma-separated)")
    grid.add_argument("--eps", dest="eps_list", default="0.3,0",
                    help="expert error rates (comma-separated); 0 is the negative control")
    grid.add_argument("--settings", default="exact,paper", help="GRPO settings: exact, paper "
                      "(each fixes its estimator flags, so --kl-mode and the like have no effect "
                      "on a sweep)")
    grid.add_argument("--seeds", default="3", help="a count (3) or a list (0,5,7)")
    grid.add_argument("--out", default=None, help="output folder (default: llm_runs/sweep-<time>)")
    grid.add_argument("--resume", action="store_true", help="skip the runs --out already holds")
    grid.add_argument("--config", default=None, help="the run settings shared by every run of the "
                    "sweep (config.json or TOML); flags given here override them")
    grid.add_argument("--workers", default="auto", help="processes that run the (seed, eps) "
                      "cells side by side, one CPU thread each (auto: one per CPU core on a CPU "
                      "backend without --mesh or several processes, else 1)")
    grid.add_argument("--rl-then-sft-rl-steps", type=int, default=100,
                    help="RL steps before the SFT of the rl_then_sft runs (the prediction is "
                    "about the SFT, so their RL need not reach its fixed point)")
    _add_process_flags(swp)
    from llm_check.run_config import sweep_run_config

    sweep_defaults = _config_defaults(config or sweep_run_config())
    if config is None:  # each setting's own (SweepConfig.rl_lr, rl_adam_eps); the model's own
        del sweep_defaults["rl_lr"], sweep_defaults["rl_adam_eps"], sweep_defaults["base_steps"]
    swp.set_defaults(**{k: v for k, v in sweep_defaults.items() if k not in ("eps", "seeds")})
    if config is not None:
        run.set_defaults(**_config_defaults(config))

    ev = sub.add_parser("eval", help="held-out SFT loss and rewards of a checkpoint",
                        formatter_class=fmt)
    ev_groups = _add_common(ev)
    ev_groups["devices"].add_argument(
        "--mesh", default=None, help="device mesh, e.g. data=2,fsdp=2: the parameters split over "
        "fsdp, the held-out rows over all devices (so their count must be a multiple of D*F)")
    ev.add_argument("--seed", type=int, default=None, help="data seed (default: a stage "
                    "checkpoint's own, from its meta.json, so its held-out rows are its run's; "
                    "else 0)")
    ev.add_argument("--json", action="store_true", help="print JSON")
    _add_process_flags(ev)

    lr = sub.add_parser("sweep-lr", help="measured vs predicted CE change of one RL step, "
                        "over learning rates", formatter_class=fmt)
    lr.add_argument("--lrs", default="1e-4,3e-4,1e-3,3e-3,1e-2", help="learning rates")
    lr.add_argument("--seed", type=int, default=0, help="data and model seed")
    lr.add_argument("--sgd", action="store_true",
                    help="plain SGD steps (delta = -lr * grad) instead of Adam")
    lr.add_argument("--json", action="store_true", help="print JSON")
    return ap


def config_from_args(a) -> RunConfig:
    """The RunConfig of ``coupling llm run``'s arguments, validated."""
    from llm_check.run_config import (ORDER_ALIASES, SETTING_RL_OPTIM, GRPOConfig, OptimConfig,
                                      RunConfig, grpo_setting)

    d = RunConfig()
    base_steps = a.base_steps if a.base_steps is not None else (d.base_steps
                                                                if a.model == "tiny" else 0)
    flags = {k: getattr(a, k) for k in ("kl_mode", "kl_estimator", "baseline", "std_normalize",
                                        "aggregation", "kl_in_baseline")
             if getattr(a, k) is not None}
    grpo = grpo_setting(a.setting, GRPOConfig(
        group_size=a.group_size, prompts_per_step=a.prompts_per_step, beta=a.beta,
        clip_low=a.clip_low,
        clip_high=a.clip_low if a.clip_high is None else a.clip_high,
        inner_iters=a.inner_iters, std_ddof=a.std_ddof, std_floor=a.std_floor,
        max_new_tokens=a.max_new_tokens, temperature=a.temperature, top_p=a.top_p), **flags)
    def optim(stage: str, steps: int) -> OptimConfig:
        kw = {f: getattr(a, f"{stage}_{f}") for f in ("lr", "schedule", "final_lr_frac",
                                                      "warmup_steps", "weight_decay", "clip_norm")}
        own = SETTING_RL_OPTIM.get(a.setting, SETTING_RL_OPTIM["exact"])
        if kw["lr"] is None:  # --rl-lr not given: the setting's own
            kw["lr"] = own["lr"]
        eps = getattr(a, f"{stage}_adam_eps")
        eps = own["eps"] if eps is None else eps  # --rl-adam-eps likewise
        for f in ("warmup_steps", "weight_decay", "clip_norm"):
            if getattr(a, f) is not None:  # the deprecated shared flag
                print(f"coupling llm: --{f.replace('_', '-')} is deprecated; use "
                      f"--{{base,sft,rl}}-{f.replace('_', '-')}", file=sys.stderr)
                kw[f] = int(getattr(a, f)) if f == "warmup_steps" else getattr(a, f)
        return OptimConfig(total_steps=max(steps, 1), b1=getattr(a, f"{stage}_adam_b1"),
                           b2=getattr(a, f"{stage}_adam_b2"), eps=eps,
                           **kw)

    cfg = RunConfig(
        model=a.model, task=a.task, seeds=_seeds(a.seeds),
        order=(lambda o: ORDER_ALIASES.get(o, o))(getattr(a, "order", d.order)),
        eps=getattr(a, "eps", d.eps),
        max_operand=a.max_operand, n_train=a.n_train, n_heldout=a.n_heldout,
        heldout_fraction=a.heldout_fraction,
        eval_rows=a.eval_rows, eval_samples=a.eval_samples, base_steps=base_steps,
        sampled_eval=a.sampled_eval if a.sampled_eval is not None else True,
        base_p_correct=a.base_p_correct, init_std=a.init_std,
        base_optim=optim("base", base_steps),
        sft_steps=a.sft_steps, sft_batch=a.sft_batch, grad_accum=a.grad_accum,
        sft_optim=optim("sft", a.sft_steps),
        rl_steps=a.rl_steps, rl_optim=optim("rl", a.rl_steps),
        grpo=grpo, eval_every=a.eval_every, ckpt_every=a.ckpt_every, chunk_size=a.chunk_size,
        local_theory=a.local_theory, local_steps=a.local_steps, mesh=a.mesh,
        remat=a.remat,
        report_to=getattr(a, "report_to", d.report_to),
        dtype=a.dtype)
    return cfg.validate()


def _check_processes(a) -> bool:
    """True when the flags ask for several processes; half-given or out-of-range ones are an
    InputError (before JAX starts)."""
    given = {"--coordinator": a.coordinator, "--num-processes": a.num_processes,
             "--process-id": a.process_id}
    if all(v is None for v in given.values()):
        return False
    missing = [k for k, v in given.items() if v is None]
    if missing:
        raise InputError(f"setting {missing[0]}: needed with "
                         + ", ".join(k for k, v in given.items() if v is not None))
    host, _, port = a.coordinator.rpartition(":")
    if not host or not port.isdigit():
        raise InputError(f"setting --coordinator {a.coordinator!r}: expected HOST:PORT")
    if a.num_processes < 1:
        raise InputError(f"setting --num-processes {a.num_processes}: must be >= 1")
    if not 0 <= a.process_id < a.num_processes:
        raise InputError(f"setting --process-id {a.process_id}: expected 0 .. "
                         f"{a.num_processes - 1} (--num-processes {a.num_processes})")
    if getattr(a, "out", "") is None:  # run: every process must write into one folder
        raise InputError("setting --out: needed with several processes (every process must name "
                         "the same folder)")
    if a.process_timeout < 1:
        raise InputError(f"setting --process-timeout {a.process_timeout}: must be >= 1 second")
    return True


def _cmd_distributed(a, cmd) -> int:
    """``cmd(a)`` (``_cmd_run``, ``_cmd_eval`` or ``_cmd_sweep_grid``) as one process of several. A process that fails
    prints its error and exits at once (``os._exit``, no shutdown handshake), so the others are
    stopped by JAX's missing-heartbeat check within --process-timeout seconds instead of waiting
    for it in a collective."""
    from llm_check.sharding import init_distributed

    init_distributed(a.coordinator, a.num_processes, a.process_id, timeout_s=a.process_timeout,
                     heartbeat_timeout_s=a.process_timeout)
    who = f"coupling llm {a.cmd} (process {a.process_id} of {a.num_processes})"
    try:
        rc = cmd(a)
    except InputError as e:
        print(f"{who}: {e}", file=sys.stderr, flush=True)
        rc = 2
    except BaseException:  # noqa: BLE001 - any failure must stop this process at once
        import traceback

        traceback.print_exc()
        print(f"{who}: failed; the other processes stop within {a.process_timeout} s",
              file=sys.stderr, flush=True)
        rc = 1
    sys.stdout.flush()
    os._exit(rc)


def _cmd_run(a) -> int:
    from llm_check import pipeline

    cfg = config_from_args(a)
    if a.resume and a.out is None:
        raise InputError("--resume needs --out (the folder of the run to continue)")
    out = a.out or time.strftime("llm_runs/%Y%m%d-%H%M%S")
    try:
        summary = pipeline.run(cfg, out, resume=a.resume)
    except pipeline.NonFiniteLoss as e:
        print(f"coupling llm run: stopped: {e}", file=sys.stderr)
        return 3
    import jax

    if jax.process_index() != 0:
        print(f"process {jax.process_index()}: done; process 0 wrote {out}")
        return 0
    print(f"GRPO setting {summary['setting']!r}: RL converges to {summary['fixed_point']}")
    if "sft_then_rl" in summary:
        a = summary["sft_then_rl"]
        print(f"sft_then_rl: SFT loss {a['ce_before_rl']:.4f} -> {a['ce_after_rl']:.4f} over RL; "
              f"change {a['ce_rise']:.4f} ± {a['ci95']['ce_rise']:.4f} (95%), predicted "
              + (f"{a['ce_change_pred']:.4f} (rel. err. {a['rel_err']:.3f})"
                 if "ce_change_pred" in a else "n/a")
              + f"; rises in every seed: {a['holds_in_all_seeds']}")
    if "rl_then_sft" in summary:
        a = summary["rl_then_sft"]
        print(f"rl_then_sft: reward {a['reward_before_sft']:.4f} -> {a['reward_after_sft']:.4f} "
              "over SFT, predicted "
              + (f"{a['reward_after_sft_pred']:.4f}" if "reward_after_sft_pred" in a else "n/a")
              + f"; falls in every seed: {a['holds_in_all_seeds']}")
    print(f"wrote {out}/report.md, summary.json, metrics.jsonl, config.json and plots "
          f"({summary.get('wall_s', 0):.0f} s)")
    return 0


def _cmd_eval(a) -> int:
    from llm_check import pipeline

    result = pipeline.evaluate_checkpoint(
        a.model, task=a.task, seed=a.seed, eps=a.eps, max_operand=a.max_operand,
        n_train=a.n_train, n_heldout=a.n_heldout, heldout_fraction=a.heldout_fraction,
        eval_rows=a.eval_rows,
        eval_samples=a.eval_samples, max_new_tokens=a.max_new_tokens, temperature=a.temperature,
        chunk_size=a.chunk_size, mesh=a.mesh)
    import jax

    if jax.process_index() != 0:  # the same result on every process; process 0 prints it
        return 0
    if a.json:
        print(json.dumps(result, indent=1))
    else:
        for k, v in result.items():
            print(f"{k:24s} {v:.4f}" if isinstance(v, float) else f"{k:24s} {v}")
    return 0


def _cmd_sweep(a) -> int:
    from llm_check import pipeline

    rows = pipeline.lr_sweep(_floats(a.lrs), seed=a.seed, sgd=a.sgd)
    if a.json:
        print(json.dumps(rows, indent=1))
        return 0
    print(f"{'lr':>9} {'|delta|':>10} {'dCE measured':>13} {'linear':>11} {'2nd order':>11} "
          f"{'rel.err lin':>11} {'rel.err 2nd':>11}")
    for r in rows:
        print(f"{r['lr']:9.1e} {r['delta_norm']:10.3e} {r['dce_measured']:13.4e} "
              f"{r['dce_linear']:11.4e} {r['dce_pred']:11.4e} {r['rel_err_linear']:11.2e} "
              f"{r['rel_err_pred']:11.2e}")
    return 0


def _workers(text: str, run) -> int:
    """--workers: a count, or auto (one per CPU core on a CPU backend without a mesh, else 1)."""
    if text != "auto":
        try:
            n = int(text)
        except ValueError:
            raise InputError(f"setting --workers {text!r}: a count >= 1, or auto") from None
        if n < 1:
            raise InputError(f"setting --workers {text!r}: a count >= 1, or auto")
        return n
    import jax

    if run.mesh or jax.default_backend() != "cpu" or jax.process_count() > 1:
        return 1
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def _cmd_sweep_grid(a) -> int:
    from llm_check.sweep import SweepConfig, run_sweep

    def floats(text, name):
        try:
            return tuple(float(x) for x in text.split(",") if x.strip())
        except ValueError:
            raise InputError(f"setting --{name} {text!r}: expected comma-separated numbers") from None

    sc = SweepConfig(betas=floats(a.betas, "betas"), eps=floats(a.eps_list, "eps"),
                     seeds=_seeds(a.seeds),
                     settings=tuple(x.strip() for x in a.settings.split(",") if x.strip()),
                     run=config_from_args(a), rl_lr=a.rl_lr, rl_adam_eps=a.rl_adam_eps,
                     rl_then_sft_rl_steps=a.rl_then_sft_rl_steps).validate()
    if a.resume and a.out is None:
        raise InputError("--resume needs --out (the folder of the sweep to continue)")
    out = a.out or time.strftime("llm_runs/sweep-%Y%m%d-%H%M%S")
    run_sweep(sc, out, resume=a.resume, workers=_workers(a.workers, sc.run))
    import jax

    if jax.process_index() != 0:
        print(f"process {jax.process_index()}: done; process 0 wrote {out}")
        return 0
    with open(f"{out}/sweep.md") as f:
        print(f.read())
    print(f"wrote {out}/sweep.json, sweep.md, sweep.png")
    return 0


def main(argv: list[str] | None = None) -> int:
    pre = argparse.ArgumentParser(add_help=False)
    pre.add_argument("--config", default=None)
    known, _ = pre.parse_known_args(argv)
    config = None
    if known.config is not None:
        from llm_check.run_config import load_run_config

        config = load_run_config(known.config)
    a = _parser(config).parse_args(argv)
    if a.cmd == "run":
        return _cmd_distributed(a, _cmd_run) if _check_processes(a) else _cmd_run(a)
    if a.cmd == "eval":
        return _cmd_distributed(a, _cmd_eval) if _check_processes(a) else _cmd_eval(a)
    if a.cmd == "sweep":
        return _cmd_distributed(a, _cmd_sweep_grid) if _check_processes(a) else _cmd_sweep_grid(a)
    return _cmd_sweep(a)


if __name__ == "__main__":
    sys.exit(main())
