"""The confirmation runs as one flat loop: base -> SFT -> RL and base -> RL -> SFT, per seed.

For each seed:

1. base: the pretrained snapshot (``--model PATH``), or, for the tiny random-init model, a short SFT
   on the task's prompt format (``data.format_examples``: answers shuffled across prompts), so that
   RL starts with a non-zero reward;
2. ``sft_then_rl``: SFT on the expert data from the base, then GRPO from the SFT model;
3. ``rl_then_sft``: GRPO from the same base, then SFT from the RL model.

Each stage's reference (for GRPO's KL and for the ``*/kl_ref`` metrics) is the policy at the
stage's start. Step 0 of every stage is an evaluation before any update; step k holds the k-th
update's training metrics and, every ``eval_every`` steps and at the last one, an evaluation on
fixed held-out sets:

- ``sft/ce_heldout``: mean -log p(y|x) over the held-out expert responses (nats per response);
- ``rl/reward``, ``rl/reward_robust``, ``rl/format``: strict, robust and format rewards of one
  completion per held-out prompt, sampled with a FIXED key (the same at every evaluation);
- ``eval/greedy_accuracy``: the robust reward of the greedy completion;
- ``*/kl_ref``: KL(policy || stage reference) on those samples (summed k1 over the completion, an
  unbiased estimate), and ``rl/objective`` = ``rl/reward`` - beta * KL.

Beyond the paper, every RL step also logs the local second-order theory (``metrics.py``):
``local/dce_pred`` = grad CE . delta + 1/2 delta^T H delta against ``local/dce_measured``, the
predicted CE after the step ``sft/ce_pred``, and ``grad/cos_ce_rl`` = cos(grad CE, grad J).

Determinism and faults: every random draw of step k of a stage is a function of (seed, stage,
step) (``jax.random.fold_in``; batches from ``data.batch_indices``), so a run resumed from a
checkpoint writes the same metrics as one never interrupted. A non-finite loss stops the run
(``NonFiniteLoss``) before anything is saved for that step; the last good checkpoint stays.

Simplifications: single host; evaluation samples one completion per held-out prompt; the RL
reference is the stage's start (not the SFT model in the RL-first order); the base pre-training
is plain SFT on shuffled answers.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import time
from dataclasses import dataclass

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from tqdm.auto import tqdm

from llm_check import checkpoint as ckpt
from llm_check import data as data_mod
from llm_check.grpo import (GRPOConfig, decode_completions, group_advantages,
                            make_completion_logprobs, make_grpo_step, reward_stats, rollout,
                            sequence_inputs)
from llm_check.metrics import (heldout_ce, local_ce_prediction, relative_error, tree_cos,
                               tree_sub, tree_vdot)
from llm_check.rewards import task_rewards
from llm_check.sft import OptimConfig, make_optimizer, make_sft_step, split_model, stack_micro
from theory.errors import InputError

ORDERS = {"sft-rl": ("sft_then_rl",), "rl-sft": ("rl_then_sft",),
          "both": ("sft_then_rl", "rl_then_sft")}
STAGES = {"sft_then_rl": ("sft", "rl"), "rl_then_sft": ("rl", "sft")}
STAGE_IDS = {"base": 0, "sft": 1, "rl": 2}


class NonFiniteLoss(RuntimeError):
    """A NaN or inf loss: the run stops; the last good checkpoint is kept."""


@dataclass(frozen=True)
class RunConfig:
    """Every setting of ``coupling llm run``; the whole object goes to config.json."""

    model: str = "tiny"
    task: str = "builtin"
    order: str = "both"
    seeds: tuple[int, ...] = (0, 1, 2)
    eps: float = 0.3
    max_operand: int = 4
    n_train: int = 512
    n_heldout: int = 64
    heldout_fraction: float = 0.1
    eval_rows: int = 0  # 0 = every held-out row
    eval_samples: int = 8  # sampled completions per held-out prompt for the rewards
    base_steps: int = 100
    base_p_correct: float = 0.5
    init_std: float = 0.1  # tiny model only: random init std (0.02 leaves it on a long plateau)
    base_optim: OptimConfig = OptimConfig(lr=3e-3, total_steps=100)
    sft_steps: int = 150
    sft_batch: int = 32
    grad_accum: int = 1
    sft_optim: OptimConfig = OptimConfig(lr=3e-3, schedule="cosine", total_steps=150)
    rl_steps: int = 50
    rl_optim: OptimConfig = OptimConfig(lr=2e-3, total_steps=50)
    grpo: GRPOConfig = GRPOConfig()
    eval_every: int = 25
    ckpt_every: int = 25
    chunk_size: int = 64
    local_theory: bool = True
    local_steps: int = 10  # local theory on RL steps 1..N and every eval step; -1 = every step
    mesh: str | None = None
    dtype: str = "float32"  # compute dtype: float32 (CPU) or bfloat16 (GPU/TPU; f32 master weights)

    def validate(self) -> "RunConfig":
        if self.order not in ORDERS:
            raise InputError(f"setting --order {self.order!r}: choose sft-rl, rl-sft or both")
        if not self.seeds:
            raise InputError("setting --seeds: needs at least one seed")
        if len(set(self.seeds)) != len(self.seeds) or min(self.seeds) < 0:
            raise InputError(f"setting --seeds {list(self.seeds)}: seeds must be distinct and >= 0")
        for name in ("base_steps",):
            if getattr(self, name) < 0:
                raise InputError(f"setting {name}={getattr(self, name)}: must be >= 0")
        for name in ("sft_steps", "rl_steps", "sft_batch", "grad_accum", "eval_every",
                     "ckpt_every", "chunk_size"):
            if getattr(self, name) < 1:
                raise InputError(f"setting {name}={getattr(self, name)}: must be >= 1")
        if self.dtype not in ("float32", "bfloat16"):
            raise InputError(f"setting dtype={self.dtype!r}: choose float32 or bfloat16")
        if self.eval_samples < 1:
            raise InputError(f"setting eval_samples={self.eval_samples}: must be >= 1")
        if self.local_steps < -1:
            raise InputError(f"setting local_steps={self.local_steps}: must be >= -1")
        if self.eval_rows < 0:
            raise InputError(f"setting eval_rows={self.eval_rows}: must be >= 0")
        if self.sft_batch % self.grad_accum:
            raise InputError(f"setting grad_accum={self.grad_accum}: must divide sft_batch="
                             f"{self.sft_batch}")
        self.base_optim.validate("base")
        self.sft_optim.validate("sft")
        self.rl_optim.validate("rl")
        self.grpo.validate()
        return self

    def to_json(self) -> dict:
        return dataclasses.asdict(self)


# --------------------------------------------------------------------------- the per-seed context

@dataclass(frozen=True)
class Context:
    """What every stage of one seed shares: data arrays, reward functions, jitted functions."""

    cfg: RunConfig
    seed: int
    tok: object
    task: data_mod.TaskData
    model_config: object
    graphdef: object
    rest: object
    train: data_mod.TokenBatch
    fmt: data_mod.TokenBatch
    train_prompts: np.ndarray
    train_prompt_mask: np.ndarray
    train_answers: list
    eval_prompts: np.ndarray
    eval_prompt_mask: np.ndarray
    eval_answers: list
    heldout: tuple  # (tokens, attn, cmask) as jax arrays
    rewards: tuple
    fns: "Jitted"


@dataclass(frozen=True)
class Jitted:
    """The jitted functions a seed's stages call, each compiled once per run (see ``_cached``)."""

    ce: object      # (params, tokens, attn, cmask) -> held-out CE
    local: object   # (params, delta, *held) -> (linear, quadratic, grad CE): the local prediction
    logp: object    # (params, tokens, attn, cmask) -> (completion log-probs, entropies)
    cos: object     # (tree, tree) -> cosine
    dot: object     # (tree, tree) -> inner product


def _load_model(cfg: RunConfig, seed: int):
    """(model, config, tokenizer); with ``cfg.mesh`` the parameters are FSDP-sharded over it."""
    from llm_check.tokenizer import load_tokenizer

    mesh = None
    if cfg.mesh is not None:
        from llm_check.sharding import make_mesh

        mesh = make_mesh(cfg.mesh)
    if cfg.model == "tiny":
        from llm_check.config import preset
        from llm_check.model import Qwen3

        mc = preset("tiny")
        model = Qwen3(mc, rngs=nnx.Rngs(seed), init_std=cfg.init_std,
                      dtype=jnp.dtype(cfg.dtype))
        if mesh is not None:
            from llm_check.sharding import shard_model

            shard_model(model, mesh)
        return model, mc, load_tokenizer("tiny")
    from llm_check.weights import load_pretrained

    if not os.path.isdir(cfg.model):
        raise InputError(f"setting --model {cfg.model!r}: neither 'tiny' nor a folder")
    model, mc = load_pretrained(cfg.model, dtype=jnp.dtype(cfg.dtype), mesh=mesh)
    return model, mc, load_tokenizer(cfg.model)


def load_checked_task(cfg: RunConfig, seed: int) -> data_mod.TaskData:
    """The task of ``cfg`` for ``seed``, with the settings that depend on its size checked."""
    task = data_mod.load_task(cfg.task, seed=seed, eps=cfg.eps, n_train=cfg.n_train,
                              n_heldout=cfg.n_heldout, max_operand=cfg.max_operand,
                              heldout_fraction=cfg.heldout_fraction)
    if cfg.sft_batch > len(task.train):
        raise InputError(f"setting sft_batch={cfg.sft_batch}: larger than the train set "
                         f"({len(task.train)} rows)")
    if cfg.grpo.prompts_per_step > len(task.train):
        raise InputError(f"setting prompts_per_step={cfg.grpo.prompts_per_step}: larger than the "
                         f"train set ({len(task.train)} rows)")
    return task


def build_context(cfg: RunConfig, seed: int, loaded=None) -> tuple[Context, object]:
    """Load data and model for one seed; returns (context, initial params).

    ``loaded`` = (model, model config, tokenizer) skips loading the model named in ``cfg``.
    """
    task = load_checked_task(cfg, seed)
    model, mc, tok = _load_model(cfg, seed) if loaded is None else loaded
    graphdef, params, rest = split_model(model)
    heldout_rows = task.heldout[: cfg.eval_rows] if cfg.eval_rows else task.heldout
    all_prompts = [ex.prompt for ex in task.train + heldout_rows]
    plen = max(len(tok.prompt_ids(p)) for p in all_prompts)
    tp, tm = data_mod.encode_prompts(tok, [ex.prompt for ex in task.train], length=plen)
    ep, em = data_mod.encode_prompts(tok, [ex.prompt for ex in heldout_rows], length=plen)
    held = data_mod.encode_examples(tok, heldout_rows)
    chunk = cfg.chunk_size

    def ce(p, *held):
        return heldout_ce(graphdef, rest, p, *held, chunk_size=chunk)

    def local(p, d, *held):
        return local_ce_prediction(lambda q: ce(q, *held), p, d)

    fns = Jitted(
        ce=_cached(("ce", graphdef, chunk), lambda: jax.jit(ce)),
        local=_cached(("local", graphdef, chunk), lambda: jax.jit(local)),
        logp=_cached(("logp", graphdef, chunk),
                     lambda: make_completion_logprobs(graphdef, rest, chunk_size=chunk)),
        cos=_cached(("cos",), lambda: jax.jit(tree_cos)),
        dot=_cached(("dot",), lambda: jax.jit(tree_vdot)),
    )
    ctx = Context(
        cfg=cfg, seed=seed, tok=tok, task=task, model_config=mc, graphdef=graphdef, rest=rest,
        train=data_mod.encode_examples(tok, task.train),
        fmt=data_mod.encode_examples(tok, data_mod.format_examples(
            task.train, seed=seed, p_correct=cfg.base_p_correct)),
        train_prompts=tp, train_prompt_mask=tm, train_answers=[ex.answer for ex in task.train],
        eval_prompts=ep, eval_prompt_mask=em, eval_answers=[ex.answer for ex in heldout_rows],
        heldout=tuple(jnp.asarray(x) for x in (held.tokens, held.attention_mask,
                                               held.completion_mask)),
        rewards=task_rewards(task.answer_pattern), fns=fns)
    return ctx, params


# Jitted functions, shared by every stage and seed with the same model structure and settings, so
# each compiles once per run. (The model's non-Param state is empty, so closing over it is safe.)
_JIT: dict = {}


def _cached(key, build):
    if key not in _JIT:
        _JIT[key] = build()
    return _JIT[key]


def _key(seed: int, stage: str, step: int) -> jax.Array:
    return jax.random.fold_in(jax.random.fold_in(jax.random.key(seed), STAGE_IDS[stage]), step)


# --------------------------------------------------------------------------- evaluation

def evaluate(ctx: Context, params, ref_params, kl_name: str) -> dict:
    """Held-out CE, strict/robust/format reward with a fixed key, greedy accuracy, KL to reference."""
    model = nnx.merge(ctx.graphdef, params, ctx.rest)
    key = jax.random.fold_in(jax.random.key(ctx.seed), 10_000)  # fixed across steps and stages
    strict, robust, fmt = ctx.rewards
    n = ctx.cfg.eval_samples
    out = rollout(model, ctx.tok, ctx.eval_prompts, ctx.eval_prompt_mask, key, ctx.cfg.grpo,
                  group_size=n)
    texts = decode_completions(ctx.tok, out.completion, out.completion_mask)
    greedy = rollout(model, ctx.tok, ctx.eval_prompts, ctx.eval_prompt_mask, key, ctx.cfg.grpo,
                     group_size=1, greedy=True)
    gtexts = decode_completions(ctx.tok, greedy.completion, greedy.completion_mask)
    tokens, attn, cmask = sequence_inputs(out, np.repeat(ctx.eval_prompt_mask, n, axis=0))
    lp, _ = ctx.fns.logp(params, tokens, attn, cmask)
    ref_lp, _ = ctx.fns.logp(ref_params, tokens, attn, cmask)
    kl = float(jnp.mean(jnp.sum((lp - ref_lp) * cmask, axis=-1)))
    ans = [a for a in ctx.eval_answers for _ in range(n)]
    reward = float(np.mean(strict(None, texts, answer=ans)))
    return {
        "sft/ce_heldout": float(ctx.fns.ce(params, *ctx.heldout)),
        "rl/reward": reward,
        "rl/reward_robust": float(np.mean(robust(None, texts, answer=ans))),
        "rl/format": float(np.mean(fmt(None, texts, answer=ans))),
        "eval/greedy_accuracy": float(np.mean(robust(None, gtexts, answer=ctx.eval_answers))),
        kl_name: kl,
        "rl/objective": reward - ctx.cfg.grpo.beta * kl,
    }


# --------------------------------------------------------------------------- one step of each kind

def sft_step_fn(ctx: Context, source: data_mod.TokenBatch, optimizer, stage: str, optim_key=None):
    """One SFT step on rows of ``source``; ``optim_key`` (hashable) shares the compiled step."""
    cfg = ctx.cfg
    build = lambda: make_sft_step(ctx.graphdef, ctx.rest, optimizer,  # noqa: E731
                                  chunk_size=cfg.chunk_size)
    step = build() if optim_key is None else _cached(("sft", ctx.graphdef, optim_key,
                                                      cfg.chunk_size), build)

    def run(params, opt_state, k: int):
        idx = data_mod.batch_indices(len(source), cfg.sft_batch, ctx.seed * 7919 + STAGE_IDS[stage],
                                     k - 1)
        arrays = [jnp.asarray(x) for x in stack_micro(source.take(idx), cfg.grad_accum)]
        params, opt_state, m = step(params, opt_state, *arrays)
        return params, opt_state, {"loss": float(m["loss"]), "grad_norm": float(m["grad_norm"])}

    return run


def rl_step_fn(ctx: Context, optimizer, ref_params, optim_key=None):
    """One GRPO step: sample G completions per prompt, score, mu inner updates, local theory."""
    cfg, g = ctx.cfg, ctx.cfg.grpo
    build = lambda: make_grpo_step(ctx.graphdef, ctx.rest, optimizer, g,  # noqa: E731
                                   chunk_size=cfg.chunk_size)
    train_step = build() if optim_key is None else _cached(("grpo", ctx.graphdef, optim_key, g,
                                                            cfg.chunk_size), build)
    strict, robust, fmt = ctx.rewards

    def run(params, opt_state, k: int):
        key = _key(ctx.seed, "rl", k)
        idx = data_mod.batch_indices(len(ctx.train_answers), g.prompts_per_step,
                                     ctx.seed * 7919 + STAGE_IDS["rl"], k - 1)
        prompts, pmask = ctx.train_prompts[idx], ctx.train_prompt_mask[idx]
        answers = [ctx.train_answers[i] for i in idx for _ in range(g.group_size)]
        model = nnx.merge(ctx.graphdef, params, ctx.rest)
        out = rollout(model, ctx.tok, prompts, pmask, key, g)
        texts = decode_completions(ctx.tok, out.completion, out.completion_mask)
        rewards = np.asarray(strict(None, texts, answer=answers), np.float32)
        adv = group_advantages(jnp.asarray(rewards).reshape(-1, g.group_size),
                               baseline=g.baseline, std_normalize=g.std_normalize,
                               ddof=g.std_ddof, eps=g.std_eps).reshape(-1)
        tokens, attn, cmask = sequence_inputs(out, np.repeat(pmask, g.group_size, axis=0))
        old_lp, ent = ctx.fns.logp(params, tokens, attn, cmask)
        ref_lp, _ = ctx.fns.logp(ref_params, tokens, attn, cmask)
        start = params
        first_grads, inner = None, []
        for _ in range(g.inner_iters):
            params, opt_state, m, grads = train_step(params, opt_state, tokens, attn, cmask,
                                                     old_lp, ref_lp, adv)
            first_grads = grads if first_grads is None else first_grads
            inner.append(m)
        m = inner[0]
        cm = np.asarray(cmask, np.float64)
        row = {
            "loss": float(np.mean([float(x["loss"]) for x in inner])),
            "grad_norm": float(m["grad_norm"]),
            **reward_stats(rewards, g.group_size),
            "reward_robust": float(np.mean(robust(None, texts, answer=answers))),
            "format": float(np.mean(fmt(None, texts, answer=answers))),
            "kl": float(m["kl"]),
            "entropy": float((np.asarray(ent) * cm).sum() / max(cm.sum(), 1.0)),
            "clip_ratio/low_mean": float(np.mean([float(x["clip_ratio/low_mean"]) for x in inner])),
            "clip_ratio/high_mean": float(np.mean([float(x["clip_ratio/high_mean"]) for x in inner])),
            "clip_ratio/region_mean": float(np.mean([float(x["clip_ratio/region_mean"])
                                                     for x in inner])),
            "completions/mean_length": float(np.asarray(out.lengths).mean()),
        }
        if cfg.local_theory and (cfg.local_steps < 0 or k <= cfg.local_steps
                                 or k % cfg.eval_every == 0 or k == cfg.rl_steps):
            delta = tree_sub(params, start)
            row["local/delta_norm"] = float(jnp.sqrt(ctx.fns.dot(delta, delta)))
            ce0 = float(ctx.fns.ce(start, *ctx.heldout))
            ce1 = float(ctx.fns.ce(params, *ctx.heldout))
            lin, quad, grad_ce = ctx.fns.local(start, delta, *ctx.heldout)
            neg_grad_j = jax.tree.map(jnp.negative, first_grads)
            row.update({
                "local/ce_before": ce0,
                "local/dce_measured": ce1 - ce0,
                "local/dce_linear": float(lin),
                "local/dce_pred": float(lin) + float(quad),
                "sft/ce_pred": ce0 + float(lin) + float(quad),
                "grad/cos_ce_rl": float(ctx.fns.cos(grad_ce, neg_grad_j)),
            })
        return params, opt_state, row

    return run


# --------------------------------------------------------------------------- the stage driver

def _read_rows(path: str) -> list[dict]:
    if not os.path.isfile(path):
        return []
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


def _write_rows(path: str, rows: list[dict]) -> None:
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        for r in rows:
            f.write(json.dumps(r) + "\n")
    os.replace(tmp, path)


def _finite(row: dict, where: str) -> None:
    loss = row.get("loss")
    if loss is not None and not np.isfinite(loss):
        raise NonFiniteLoss(f"{where}: loss is {loss}; stopped, the last good checkpoint is kept")


def run_stage(ctx: Context, *, stage: str, label: str, folder: str, start_params, n_steps: int,
              optim: OptimConfig, source=None, resume: bool, position: int = 0):
    """Run one stage with checkpoints and resume; returns its final params."""
    cfg = ctx.cfg
    final = os.path.join(folder, "final")
    rows_path = os.path.join(folder, "metrics.jsonl")
    optim = dataclasses.replace(optim, total_steps=n_steps)
    optimizer = make_optimizer(optim)
    opt_state = optimizer.init(start_params)
    if resume and os.path.isfile(os.path.join(final, "meta.json")):
        trees, _ = ckpt.load_checkpoint(final, {"params": start_params})
        return jax.tree.map(jnp.asarray, trees["params"])
    os.makedirs(folder, exist_ok=True)
    kl_name = "rl/kl_ref" if stage == "rl" else "sft/kl_ref"
    ref = start_params
    step_fn = (rl_step_fn(ctx, optimizer, ref, optim_key=optim) if stage == "rl"
               else sft_step_fn(ctx, source, optimizer, stage, optim_key=optim))
    tag = {"seed": ctx.seed, "run": label, "stage": stage}
    params, first = start_params, 1
    found = ckpt.latest_checkpoint(os.path.join(folder, "ckpt")) if resume else None
    if found:
        trees, meta = ckpt.load_checkpoint(found[0], {"params": params, "opt_state": opt_state})
        params = jax.tree.map(jnp.asarray, trees["params"])
        opt_state = jax.tree.map(jnp.asarray, trees["opt_state"])
        first = meta["step"] + 1
        rows = [r for r in _read_rows(rows_path) if r["step"] <= meta["step"]]
    else:
        rows = [{**tag, "step": 0, **evaluate(ctx, params, ref, kl_name)}]
    _write_rows(rows_path, rows)
    with open(rows_path, "a") as f:
        bar = tqdm(range(first, n_steps + 1), desc=f"seed {ctx.seed} {label} {stage}",
                   initial=first - 1, total=n_steps, leave=False, position=position)
        for k in bar:
            params, opt_state, row = step_fn(params, opt_state, k)
            _finite(row, f"seed {ctx.seed} {label} {stage} step {k}")
            if k % cfg.eval_every == 0 or k == n_steps:
                row.update(evaluate(ctx, params, ref, kl_name))
            f.write(json.dumps({**tag, "step": k, **row}) + "\n")
            f.flush()
            if k % cfg.ckpt_every == 0 and k < n_steps:
                root = os.path.join(folder, "ckpt")
                ckpt.save_checkpoint(ckpt.step_dir(root, k),
                                     {"params": params, "opt_state": opt_state},
                                     {"step": k, "stage": stage, "run": label, "seed": ctx.seed,
                                      "key": np.asarray(jax.random.key_data(
                                          _key(ctx.seed, stage, k))).tolist()})
                ckpt.prune_checkpoints(root, keep=1)
        bar.close()
    ckpt.save_checkpoint(final, {"params": params},
                         {"step": n_steps, "stage": stage, "run": label, "seed": ctx.seed,
                          "model_config": ctx.model_config.to_hf(), "tokenizer": cfg.model})
    shutil.rmtree(os.path.join(folder, "ckpt"), ignore_errors=True)
    return params


def run_seed(cfg: RunConfig, seed: int, out: str, *, resume: bool) -> list[str]:
    """Base, then each requested order, for one seed; returns the stage metrics files in order."""
    ctx, params = build_context(cfg, seed)
    root = os.path.join(out, "runs", f"seed{seed}")
    files = []
    if cfg.base_steps:
        params = run_stage(ctx, stage="base", label="base", folder=os.path.join(root, "base"),
                           start_params=params, n_steps=cfg.base_steps, optim=cfg.base_optim,
                           source=ctx.fmt, resume=resume)
        files.append(os.path.join(root, "base", "metrics.jsonl"))
    base = params
    for label in ORDERS[cfg.order]:
        params = base
        for stage in STAGES[label]:
            folder = os.path.join(root, label, stage)
            if stage == "sft":
                params = run_stage(ctx, stage="sft", label=label, folder=folder,
                                   start_params=params, n_steps=cfg.sft_steps, optim=cfg.sft_optim,
                                   source=ctx.train, resume=resume)
            else:
                params = run_stage(ctx, stage="rl", label=label, folder=folder,
                                   start_params=params, n_steps=cfg.rl_steps, optim=cfg.rl_optim,
                                   resume=resume)
            files.append(os.path.join(folder, "metrics.jsonl"))
    return files


def run(cfg: RunConfig, out: str, *, resume: bool = False) -> dict:
    """The whole run: config.json, per-stage metrics, metrics.jsonl, summary.json, report, plots."""
    from llm_check import report

    t0 = time.perf_counter()
    cfg.validate()
    load_checked_task(cfg, cfg.seeds[0])  # data-dependent settings, before anything is written
    if cfg.mesh is not None:
        from llm_check.sharding import make_mesh

        make_mesh(cfg.mesh)  # a bad spec fails here, before anything is written
    cfg_path = os.path.join(out, "config.json")
    if os.path.exists(cfg_path):
        if not resume:
            raise InputError(f"--out {out}: already holds a run; pass --resume or choose another "
                             "folder")
        with open(cfg_path) as f:
            stored = json.load(f)
        now = json.loads(json.dumps(cfg.to_json()))
        diff = sorted(k for k in set(stored) | set(now) if stored.get(k) != now.get(k))
        if diff:
            raise InputError(f"--resume: setting {diff[0]} differs from {cfg_path}")
    else:
        os.makedirs(out, exist_ok=True)
        tmp = cfg_path + ".tmp"
        with open(tmp, "w") as f:
            json.dump(cfg.to_json(), f, indent=1)
        os.replace(tmp, cfg_path)
    files = []
    for seed in cfg.seeds:
        files += run_seed(cfg, seed, out, resume=resume)
    rows = [r for path in files for r in _read_rows(path)]
    _write_rows(os.path.join(out, "metrics.jsonl"), rows)
    return report.write_report(cfg, rows, out, eps=ctx_eps(cfg),
                               wall_s=time.perf_counter() - t0)


def ctx_eps(cfg: RunConfig) -> float | None:
    """The expert's error rate when the task has a known one (the built-in task)."""
    return cfg.eps if cfg.task == "builtin" else None


# --------------------------------------------------------------------------- eval and the lr sweep

def load_checkpoint_model(path: str, seed: int = 0):
    """(model, config, tokenizer) from 'tiny', a run's ``final`` checkpoint or an HF snapshot."""
    if path == "tiny" or not os.path.isfile(os.path.join(path, "params.safetensors")):
        return _load_model(RunConfig(model=path), seed)
    from llm_check.config import Qwen3Config
    from llm_check.model import Qwen3
    from llm_check.tokenizer import load_tokenizer

    with open(os.path.join(path, "meta.json")) as f:
        meta = json.load(f)
    if "model_config" not in meta:
        raise InputError(f"{path}/meta.json: no model_config (not a stage's final checkpoint)")
    mc = Qwen3Config.from_hf(meta["model_config"], source=f"{path}/meta.json")
    model = Qwen3(mc, rngs=nnx.Rngs(0))
    graphdef, params, rest = split_model(model)
    trees, _ = ckpt.load_checkpoint(path, {"params": params})
    model = nnx.merge(graphdef, jax.tree.map(jnp.asarray, trees["params"]), rest)
    return model, mc, load_tokenizer(meta.get("tokenizer", "tiny"))


def evaluate_checkpoint(model_path: str, *, task: str, seed: int = 0, **settings) -> dict:
    """Held-out CE and strict / robust / format rewards and greedy accuracy of one checkpoint."""
    cfg = dataclasses.replace(RunConfig(), model=model_path, task=task, seeds=(seed,),
                              eps=settings.pop("eps", RunConfig.eps),
                              grpo=dataclasses.replace(
                                  GRPOConfig(), max_new_tokens=settings.pop("max_new_tokens", 4),
                                  temperature=settings.pop("temperature", 1.0)),
                              **settings).validate()
    loaded = load_checkpoint_model(model_path, seed)
    ctx, params = build_context(cfg, seed, loaded=loaded)
    result = evaluate(ctx, params, params, "kl_self")
    del result["kl_self"], result["rl/objective"]
    return {"model": model_path, "task": task, "heldout_rows": len(ctx.eval_answers), **result}


def lr_sweep(lrs, *, seed: int = 0, sgd: bool = False, cfg: RunConfig | None = None) -> list[dict]:
    """From the SFT model of ``cfg`` (base + SFT, trained in a temporary folder), one GRPO step per
    learning rate, all on the same rollout; measured CE change against the local prediction."""
    import tempfile

    import optax

    cfg = (cfg or RunConfig(seeds=(seed,))).validate()
    ctx, params = build_context(cfg, seed)
    with tempfile.TemporaryDirectory() as tmp:
        if cfg.base_steps:
            params = run_stage(ctx, stage="base", label="base", folder=os.path.join(tmp, "base"),
                               start_params=params, n_steps=cfg.base_steps, optim=cfg.base_optim,
                               source=ctx.fmt, resume=False)
        params = run_stage(ctx, stage="sft", label="sweep", folder=os.path.join(tmp, "sft"),
                           start_params=params, n_steps=cfg.sft_steps, optim=cfg.sft_optim,
                           source=ctx.train, resume=False)
    rows = []
    for lr in lrs:
        if not lr > 0:
            raise InputError(f"setting --lrs: learning rate {lr} must be > 0")
        optimizer = optax.sgd(lr) if sgd else make_optimizer(OptimConfig(lr=lr))
        step = rl_step_fn(ctx, optimizer, params)
        _, _, r = step(params, optimizer.init(params), 1)
        rows.append({"lr": lr, "delta_norm": r["local/delta_norm"],
                     "dce_measured": r["local/dce_measured"], "dce_linear": r["local/dce_linear"],
                     "dce_pred": r["local/dce_pred"],
                     "rel_err_linear": relative_error(r["local/dce_linear"], r["local/dce_measured"]),
                     "rel_err_pred": relative_error(r["local/dce_pred"], r["local/dce_measured"]),
                     "cos_ce_rl": r["grad/cos_ce_rl"]})
    return rows
