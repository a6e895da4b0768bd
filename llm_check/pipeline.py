"""The confirmation runs as one flat loop: base -> SFT -> RL and base -> RL -> SFT, per seed.

For each seed:

1. base: the pretrained snapshot (``--model PATH``), or, for the tiny random-init model, a short SFT
   on the task's prompt format (``data.format_examples``: answers shuffled across prompts), so that
   RL starts with a non-zero reward;
2. ``sft_then_rl``: SFT on the expert data from the base, then GRPO from the SFT model;
3. ``rl_then_sft``: GRPO from the same base, then SFT from the RL model.

Each stage's reference (for GRPO's KL and for the ``*/kl_ref`` metrics) is the policy at the
stage's start. Step 0 of every stage is an evaluation before any update; step k holds the k-th
update's training metrics and, every ``eval_every`` steps and at the last one, an evaluation:

- ``sft/ce_heldout``: mean -log p(y|x) over the held-out expert responses (nats per response);
- ``rl/reward``, ``rl/reward_robust``, ``rl/format``: strict, robust and format rewards of
  ``eval_samples`` completions per held-out prompt, sampled with a FIXED key;
- ``eval/greedy_accuracy``: the robust reward of the greedy completion;
- ``*/kl_ref``: KL(policy || stage reference) on those samples (summed k1 over the completion),
  and ``rl/objective`` = ``rl/reward`` - beta * KL;
- on the built-in task, the exact quantities of ``exact_eval`` (no sampling): ``exact/ce`` (the SFT
  loss under the true expert law), ``exact/reward`` (mean p(right answer)); during RL also
  ``exact/target_gap`` = mean_x |s[x] - s*[x]|, the distance to the fixed point that theory
  predicts for the run's GRPO setting from the stage's start (``predictions.rl_target``), and
  ``exact/target_kl``, KL(fixed point || policy) over (right, wrong, any other completion)
  (``predictions.coarse_kl``), which also sees mass left on unlisted completions.

Every RL step may also log the local second-order theory (``metrics.py``): ``local/dce_pred`` =
grad CE . delta + 1/2 delta^T H delta against ``local/dce_measured``, and ``grad/cos_ce_rl`` =
cos(grad CE, grad J) with grad J the raw reward's gradient (no KL term).

The jitted functions are built once per run (``make_jitted``) and passed in; nothing is cached at
module level. Determinism and faults: every random draw of step k of a stage is a function of
(seed, stage, step), so a resumed run writes the same metrics as one never interrupted. A
non-finite loss stops the run (``NonFiniteLoss``); the last good checkpoint stays.

Several processes (``sharding.init_distributed``): every process runs this same loop on its share
of each batch; only process 0 writes the metrics, the ``final`` weights and the report (``is_main``),
while the Orbax training state is written by all (each its own shards).

Simplifications: the RL reference is the stage's start; the base pre-training is
plain SFT on shuffled answers.
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
from llm_check import exact_eval
from llm_check.grpo import (advantages, decode_completions, group_advantages,
                            make_completion_logprobs, make_grpo_step, make_reward_gradient,
                            reward_stats, rollout)
from llm_check.memory import eval_rows, sample_rows
from llm_check.metrics import (heldout_ce, local_ce_prediction, relative_error, tree_cos,
                               tree_sub, tree_vdot)
from llm_check.predictions import (ce_change_prediction, coarse_kl, coarse_target, expert_share,
                                   rl_target)
from llm_check.rewards import task_rewards
from llm_check.run_config import (ORDERS, GRPOConfig, OptimConfig, RunConfig,  # noqa: F401
                                  load_run_config, mesh_devices)
from llm_check.sft import make_optimizer, make_sft_step, split_model, stack_micro
from llm_check.sharding import barrier, is_main, on_mesh, place_like, shard_batch, to_host
from theory.errors import InputError

STAGE_IDS = {"base": 0, "sft": 1, "rl": 2}


class NonFiniteLoss(RuntimeError):
    """A NaN or inf loss: the run stops; the last good checkpoint is kept."""


# --------------------------------------------------------------------------- jitted functions

@dataclass(frozen=True)
class Jitted:
    """The jitted functions of one run, built once (``make_jitted``) and shared by its seeds."""

    ce: object          # (params, prompt, pmask, completion, cmask, rows=R) -> held-out CE
    local: object       # (params, delta, *held, rows=R) -> (linear, quadratic, grad CE)
    logp: object        # (params, prompt, pmask, completion) -> (log-probs, entropies) [P*G, M] at T
    answer_lp: object   # (params, prompt, pmask, completion, cmask, rows=R) -> [N] log p(y | x)
    reward_grad: object  # (params, prompt, pmask, completion, cmask, adv) -> grad J estimate
    cos: object
    dot: object
    base_step: object   # SFT steps of the base, SFT and GRPO stages (optimizer inside)
    sft_step: object
    rl_step: object


def stage_optimizer(optim: OptimConfig, n_steps: int, updates_per_step: int = 1):
    """The stage's optimizer, its schedule sized to all of the stage's updates: an RL step makes
    ``inner_iters`` of them, so its schedule must span ``rl_steps * inner_iters``."""
    return make_optimizer(dataclasses.replace(optim, total_steps=max(n_steps * updates_per_step, 1)))


def make_jitted(cfg: RunConfig, graphdef, rest) -> Jitted:
    chunk = cfg.chunk_size

    def ce(p, *held, rows):
        return heldout_ce(graphdef, rest, p, *held, rows=rows)

    def local(p, d, *held, rows):
        return local_ce_prediction(lambda q: ce(q, *held, rows=rows), p, d)

    return Jitted(
        ce=jax.jit(ce, static_argnames="rows"), local=jax.jit(local, static_argnames="rows"),
        logp=make_completion_logprobs(graphdef, rest, temperature=cfg.grpo.temperature),
        answer_lp=exact_eval.make_answer_logprobs(graphdef, rest),
        reward_grad=make_reward_gradient(graphdef, rest, cfg.grpo),
        cos=jax.jit(tree_cos), dot=jax.jit(tree_vdot),
        base_step=make_sft_step(graphdef, rest, stage_optimizer(cfg.base_optim, cfg.base_steps),
                                chunk_size=chunk),
        sft_step=make_sft_step(graphdef, rest, stage_optimizer(cfg.sft_optim, cfg.sft_steps),
                               chunk_size=chunk),
        rl_step=make_grpo_step(graphdef, rest, stage_optimizer(cfg.rl_optim, cfg.rl_steps,
                                                               cfg.grpo.inner_iters), cfg.grpo),
    )


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
    heldout: tuple  # data.SplitBatch arrays (prompt, pmask, completion, cmask), on the devices
    rewards: tuple
    exact: exact_eval.ExactSet | None  # the built-in task's listed answers
    fns: Jitted
    mesh: object = None  # the cfg.mesh Mesh: batches are split over it (``shard``); None: one device
    eval_batch: int = 0  # rows per mini-batch of the held-out CE and exact log-probs (memory.py)
    sample_batch: int = 0  # prompts per mini-batch of the sampled evaluation (memory.sample_rows)

    def shard(self, batch, axis: int = 0):
        """``shard(self.mesh, batch, axis)``."""
        return shard(self.mesh, batch, axis)


def shard(mesh, batch, axis: int = 0):
    """The arrays of ``batch`` (a pytree) as device arrays: with a ``mesh``, their batch axis
    ``axis`` split over all its devices (``sharding.shard_batch``); with None, plain
    ``jnp.asarray`` (no extra transfer)."""
    if mesh is None:
        return jax.tree.map(jnp.asarray, batch)
    return shard_batch(batch, mesh, axis)


def load_model(cfg: RunConfig, seed: int):
    """(model, config, tokenizer); with ``cfg.mesh`` the parameters are FSDP-sharded over it;
    ``cfg.remat`` turns on the per-layer rematerialization of ``Qwen3``."""
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
                      dtype=jnp.dtype(cfg.dtype), remat=cfg.remat)
        if mesh is not None:
            from llm_check.sharding import shard_model

            shard_model(model, mesh)
        return model, mc, load_tokenizer("tiny")
    from llm_check.weights import load_pretrained

    if not os.path.isdir(cfg.model):
        raise InputError(f"setting --model {cfg.model!r}: neither 'tiny' nor a folder")
    model, mc = load_pretrained(cfg.model, dtype=jnp.dtype(cfg.dtype), mesh=mesh,
                                remat=cfg.remat)
    return model, mc, load_tokenizer(cfg.model)


def check_answers_fit(tok, examples, max_new_tokens: int) -> None:
    """A sampled completion has at most ``max_new_tokens`` tokens, so an answer that takes more
    could never earn its reward (and RL would learn nothing from its prompt): an InputError."""
    n, answer = max((len(tok.encode(ex.answer.strip())), ex.answer) for ex in examples)
    if n > max_new_tokens:
        raise InputError(f"setting --max-new-tokens {max_new_tokens}: the answer {answer!r} takes "
                         f"{n} tokens, so no sampled completion could earn its reward; set "
                         f"--max-new-tokens {n} or more ({n + 1} lets the end-of-turn token in "
                         "too)")


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
    cfg.check_heldout(len(task.heldout[: cfg.eval_rows] if cfg.eval_rows else task.heldout))
    return task


def build_context(cfg: RunConfig, seed: int, loaded=None, fns: Jitted | None = None):
    """Load data and model for one seed; returns (context, initial params).

    ``loaded`` = (model, model config, tokenizer) skips loading the model named in ``cfg``;
    ``fns`` reuses the jitted functions of an earlier seed of the same run. With ``cfg.mesh`` the
    context holds the mesh, and the held-out CE batch and evaluation prompts are split over it.
    """
    cfg.check_mesh()
    task = load_checked_task(cfg, seed)
    model, mc, tok = load_model(cfg, seed) if loaded is None else loaded
    graphdef, params, rest = split_model(model)
    fns = fns or make_jitted(cfg, graphdef, rest)
    heldout_rows = task.heldout[: cfg.eval_rows] if cfg.eval_rows else task.heldout
    check_answers_fit(tok, task.train + heldout_rows, cfg.grpo.max_new_tokens)
    all_prompts = [ex.prompt for ex in task.train + heldout_rows]
    plen = max(len(tok.prompt_ids(p)) for p in all_prompts)
    tp, tm = data_mod.encode_prompts(tok, [ex.prompt for ex in task.train], length=plen)
    ep, em = data_mod.encode_prompts(tok, [ex.prompt for ex in heldout_rows], length=plen)
    held = data_mod.encode_split(tok, heldout_rows)
    exact = (exact_eval.exact_set(tok, max_operand=cfg.max_operand, eps=cfg.eps)
             if cfg.task == "builtin" else None)
    mesh = None
    if cfg.mesh is not None:
        from llm_check.sharding import make_mesh

        mesh = make_mesh(cfg.mesh)
        ep, em = shard(mesh, (ep, em))
    # evaluation mini-batches: what fits each device's memory budget (memory.py)
    fit = dict(n_devices=1 if mesh is None else mesh.devices.size,
               dtype_bytes=jnp.dtype(cfg.dtype).itemsize, at_most=len(heldout_rows))
    ctx = Context(
        cfg=cfg, seed=seed, tok=tok, task=task, model_config=mc, graphdef=graphdef, rest=rest,
        train=data_mod.encode_examples(tok, task.train),
        fmt=data_mod.encode_examples(tok, data_mod.format_examples(
            task.train, seed=seed, p_correct=cfg.base_p_correct)),
        train_prompts=tp, train_prompt_mask=tm, train_answers=[ex.answer for ex in task.train],
        eval_prompts=ep, eval_prompt_mask=em, eval_answers=[ex.answer for ex in heldout_rows],
        heldout=tuple(shard(mesh, held.arrays())),
        rewards=task_rewards(task.answer_pattern), exact=exact, fns=fns, mesh=mesh,
        eval_batch=eval_rows(mc, held.prompt.shape[1], held.completion.shape[1], **fit),
        sample_batch=sample_rows(mc, plen, cfg.grpo.max_new_tokens, cfg.eval_samples, **fit))
    return ctx, params


def _key(seed: int, stage: str, step: int) -> jax.Array:
    return jax.random.fold_in(jax.random.fold_in(jax.random.key(seed), STAGE_IDS[stage]), step)


# --------------------------------------------------------------------------- evaluation

def measure_exact(ctx: Context, params) -> dict | None:
    """``exact_eval.measure`` at ``params`` (None when the task's answers cannot be listed)."""
    return None if ctx.exact is None else exact_eval.measure(ctx.fns.answer_lp, params, ctx.exact,
                                                              ctx.eval_batch)


def evaluate(ctx: Context, params, ref_params, kl_name: str, target=None, ex=None) -> dict:
    """Held-out CE, the exact quantities (with the distance to ``target``, the predicted fixed
    point as ``predictions.coarse_target``, when given; ``ex``: ``measure_exact`` of these params
    when the caller already has it) and, unless ``cfg.sampled_eval`` is off, the
    strict/robust/format rewards with a fixed key, greedy accuracy and the KL to the reference on
    those samples."""
    row = {"sft/ce_heldout": float(ctx.fns.ce(params, *ctx.heldout, rows=ctx.eval_batch))}
    ex = measure_exact(ctx, params) if ex is None else ex
    if ex is not None:
        row["exact/ce"] = ex["ce"]
        row["exact/reward"] = ex["reward"]
        if target is not None:
            row["exact/target_gap"] = float(np.mean(np.abs(ex["s"] - target[:, 0])))
            row["exact/target_kl"] = coarse_kl(target, ex)
    if not ctx.cfg.sampled_eval:
        return row
    model = nnx.merge(ctx.graphdef, params, ctx.rest)
    key = jax.random.fold_in(jax.random.key(ctx.seed), 10_000)  # fixed across steps and stages
    strict, robust, fmt = ctx.rewards
    n = ctx.cfg.eval_samples
    total, size = ctx.eval_prompts.shape[0], ctx.sample_batch
    texts, gtexts, kls = [], [], []
    for i in range(0, total, size):  # mini-batches of prompts (memory.sample_rows)
        prompts, pmask = ctx.eval_prompts[i:i + size], ctx.eval_prompt_mask[i:i + size]
        k = key if size >= total else jax.random.fold_in(key, i)
        out = rollout(model, ctx.tok, prompts, pmask, k, ctx.cfg.grpo, group_size=n)
        texts += decode_completions(ctx.tok, out.completion, out.completion_mask)
        greedy = rollout(model, ctx.tok, prompts, pmask, k, ctx.cfg.grpo, group_size=1,
                         greedy=True)
        gtexts += decode_completions(ctx.tok, greedy.completion, greedy.completion_mask)
        ref_lp, _ = ctx.fns.logp(ref_params, prompts, pmask, out.completion)
        kls.append(to_host(jnp.sum((out.logprobs - ref_lp) * out.completion_mask, axis=-1)))
    kl = float(np.mean(np.concatenate(kls), dtype=np.float64))
    ans = [a for a in ctx.eval_answers for _ in range(n)]
    reward = float(np.mean(strict(None, texts, answer=ans)))
    row.update({
        "rl/reward": reward,
        "rl/reward_robust": float(np.mean(robust(None, texts, answer=ans))),
        "rl/format": float(np.mean(fmt(None, texts, answer=ans))),
        "eval/greedy_accuracy": float(np.mean(robust(None, gtexts, answer=ctx.eval_answers))),
        kl_name: kl,
        "rl/objective": reward - ctx.cfg.grpo.beta * kl,
    })
    return row


# --------------------------------------------------------------------------- one step of each kind

def sft_step_fn(ctx: Context, source: data_mod.TokenBatch, step, stage: str):
    """One SFT step on rows of ``source`` with the jitted ``step`` of that stage."""
    cfg = ctx.cfg
    # the LM head runs only on the window that holds the completions (one width for the stage's
    # rows, so the step compiles once)
    window = data_mod.completion_window(source.completion_mask)

    def run(params, opt_state, k: int):
        idx = data_mod.batch_indices(len(source), cfg.sft_batch, ctx.seed * 7919 + STAGE_IDS[stage],
                                     k - 1)
        # [A, B, T]: the rows of each micro-batch (axis 1) split over the mesh
        arrays = ctx.shard(stack_micro(source.take(idx), cfg.grad_accum), axis=1)
        params, opt_state, m = step(params, opt_state, *arrays, window=window)
        return params, opt_state, {k2: float(v) for k2, v in m.items()}

    return run


def rl_step_fn(ctx: Context, ref_params, step=None):
    """One GRPO step: sample G completions per prompt, score, mu inner updates, local theory."""
    cfg, g = ctx.cfg, ctx.cfg.grpo
    step = step or ctx.fns.rl_step
    strict, robust, fmt = ctx.rewards

    def run(params, opt_state, k: int):
        key = _key(ctx.seed, "rl", k)
        idx = data_mod.batch_indices(len(ctx.train_answers), g.prompts_per_step,
                                     ctx.seed * 7919 + STAGE_IDS["rl"], k - 1)
        prompts, pmask = ctx.train_prompts[idx], ctx.train_prompt_mask[idx]
        answers = [ctx.train_answers[i] for i in idx for _ in range(g.group_size)]
        model = nnx.merge(ctx.graphdef, params, ctx.rest)
        prompts, pmask = ctx.shard((prompts, pmask))  # P rows
        out = rollout(model, ctx.tok, prompts, pmask, key, g)
        texts = decode_completions(ctx.tok, out.completion, out.completion_mask)
        rewards = np.asarray(strict(None, texts, answer=answers), np.float32)
        # P*G rows (grouped: prompt i owns rows i*G .. i*G+G-1, so each device keeps whole groups)
        completion, cmask, old_lp = ctx.shard((out.completion, out.completion_mask, out.logprobs))
        batch = (prompts, pmask, completion)  # one prompt pass a group
        ent = out.entropy  # old_lp above: the sampler's own
        ref_lp, _ = ctx.fns.logp(ref_params, *batch)
        if g.kl_mode == "reward" and g.beta > 0:
            # the log-ratio in the reward comes from the SAME computation for policy and
            # reference, so it is exactly 0 where they agree: the sampler's log-probs differ from
            # it by float noise (~1e-7), which Adam would turn into lr-sized random steps when
            # the rewards carry no signal (a deterministic expert; docs/log.md)
            old_lp, _ = ctx.fns.logp(params, *batch)
        seq_logratio = jnp.sum((old_lp - ref_lp) * cmask, axis=-1)
        adv = advantages(ctx.shard(rewards), seq_logratio, g)
        old_lp, ref_lp, adv = ctx.shard((old_lp, ref_lp, adv))
        start = params
        inner = []
        for _ in range(g.inner_iters):
            params, opt_state, m = step(params, opt_state, *batch, cmask, old_lp, ref_lp, adv,
                                        g.beta)
            inner.append(m)
        m = inner[0]
        cm = to_host(cmask).astype(np.float64)
        row = {
            "loss": float(np.mean([float(x["loss"]) for x in inner])),
            "grad_norm": float(m["grad_norm"]),
            **reward_stats(rewards, g.group_size),
            "reward_robust": float(np.mean(robust(None, texts, answer=answers))),
            "format": float(np.mean(fmt(None, texts, answer=answers))),
            "kl": float(m["kl"]),
            "kl_seq": float(jnp.mean(seq_logratio)),
            "entropy": float((to_host(ent) * cm).sum() / max(cm.sum(), 1.0)),
            "completions/mean_length": float(to_host(out.lengths).mean()),
        }
        for name in ("clip_ratio/low_mean", "clip_ratio/high_mean", "clip_ratio/region_mean"):
            row[name] = float(np.mean([float(x[name]) for x in inner]))
        if cfg.local_theory and (cfg.local_steps < 0 or k <= cfg.local_steps
                                 or k % cfg.eval_every == 0 or k == cfg.rl_steps):
            delta = tree_sub(params, start)
            row["local/delta_norm"] = float(jnp.sqrt(ctx.fns.dot(delta, delta)))
            ce0 = float(ctx.fns.ce(start, *ctx.heldout, rows=ctx.eval_batch))
            ce1 = float(ctx.fns.ce(params, *ctx.heldout, rows=ctx.eval_batch))
            lin, quad, grad_ce = ctx.fns.local(start, delta, *ctx.heldout, rows=ctx.eval_batch)
            raw_adv = group_advantages(jnp.asarray(rewards).reshape(-1, g.group_size),
                                       baseline="loo", std_normalize=False).reshape(-1)
            grad_j = ctx.fns.reward_grad(start, *batch, cmask, ctx.shard(raw_adv))
            row.update({
                "local/ce_before": ce0,
                "local/dce_measured": ce1 - ce0,
                "local/dce_linear": float(lin),
                "local/dce_pred": float(lin) + float(quad),
                "local/ce_pred": ce0 + float(lin) + float(quad),
                "grad/cos_ce_rl": float(ctx.fns.cos(grad_ce, grad_j)),
            })
        return params, opt_state, row

    return run


# --------------------------------------------------------------------------- the stage driver

def _read_rows(path: str) -> list[dict]:
    """The rows of a metrics file. A last line without its newline is a row whose writer was
    killed mid-write: it is dropped (the resumed stage writes its rows again). Any other line that
    is not a JSON object is an InputError naming the file and line."""
    if not os.path.isfile(path):
        return []
    with open(path) as f:
        lines = f.readlines()
    rows = []
    for i, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as e:
            if i == len(lines) and not line.endswith("\n"):
                break  # cut short by a kill
            raise InputError(f"{path}:{i}: not a JSON row ({e.msg})") from None
        if not isinstance(row, dict):
            raise InputError(f"{path}:{i}: not a JSON object")
        rows.append(row)
    return rows


def setting_differs(stored: RunConfig, cfg: RunConfig) -> str | None:
    """The first setting (``grpo.beta`` for a nested one) in which a run's stored settings
    (``load_run_config`` of its config.json, which fills in settings added since) and ``cfg``
    differ, or None."""
    def first(a, b, prefix=""):
        for k in sorted(set(a) | set(b)):
            x, y = a.get(k), b.get(k)
            if isinstance(x, dict) and isinstance(y, dict):
                found = first(x, y, f"{prefix}{k}.")
                if found:
                    return found
            elif x != y:
                return prefix + k
        return None

    return first(*(json.loads(json.dumps(c.to_json())) for c in (stored, cfg)))


def _read_json(path: str) -> dict:
    """A sweep's settings file (sweep_config.json); not a JSON object is an InputError."""
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise InputError(f"{path}: not valid JSON ({e})") from None
    if not isinstance(data, dict):
        raise InputError(f"{path}: not a JSON object of settings")
    return data


def _append_row(path: str, row: dict) -> None:
    with open(path, "a") as f:
        f.write(json.dumps(row) + "\n")


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


STAGE_SETTINGS = {"base": ("base_steps", "base_optim", "base_step"),
                  "sft": ("sft_steps", "sft_optim", "sft_step"),
                  "rl": ("rl_steps", "rl_optim", "rl_step")}


def run_stage(ctx: Context, *, stage: str, label: str, folder: str, start_params, source=None,
              resume: bool, step=None, position: int = 0, trackers=()):
    """Run one stage with checkpoints and resume; returns its final params.

    ``step`` overrides the jitted step of ``ctx.fns`` (the sweep passes each RL setting's own);
    every row written is also handed to each of ``trackers`` (``tracking.py``).
    """
    cfg = ctx.cfg
    steps_name, optim_name, step_name = STAGE_SETTINGS[stage]
    n_steps = getattr(cfg, steps_name)
    step = step or getattr(ctx.fns, step_name)
    main = is_main()  # with several processes, only process 0 writes files
    final = os.path.join(folder, "final")
    root = os.path.join(folder, "ckpt")  # the training state (Orbax), while the stage runs
    rows_path = os.path.join(folder, "metrics.jsonl")
    optimizer = stage_optimizer(getattr(cfg, optim_name), n_steps,
                                cfg.grpo.inner_iters if stage == "rl" else 1)
    opt_state = on_mesh(optimizer.init(start_params), ctx.mesh)
    if resume and os.path.isfile(os.path.join(final, "meta.json")):
        trees, _ = ckpt.load_checkpoint(final, {"params": start_params})
        return place_like(trees["params"], start_params)  # keeps the mesh's sharding
    if main:
        os.makedirs(folder, exist_ok=True)
    kl_name = "rl/kl_ref" if stage == "rl" else "sft/kl_ref"
    ref = start_params
    target, pred, ex0 = None, {}, None
    if ctx.exact is not None:  # theory's prediction for this stage, before it starts
        ex0 = measure_exact(ctx, start_params)
        s0 = ex0["s"]
        if stage == "rl":
            s_star = rl_target(s0, cfg.grpo)
            change = ce_change_prediction(s0, cfg.eps, cfg.grpo)
            if change is not None:
                target = coarse_target(ex0, s_star)
                pred = {"pred/ce_change": change, "pred/reward": float(np.mean(s_star))}
        elif stage == "sft":
            pred = {"pred/reward": expert_share(ctx.task)}
    step_fn = (rl_step_fn(ctx, ref, step) if stage == "rl"
               else sft_step_fn(ctx, ctx.train if stage == "sft" else ctx.fmt, step, stage))
    tag = {"seed": ctx.seed, "order": label, "stage": stage}
    params, first = start_params, 1
    found = ckpt.latest_state(root) if resume else None
    if found is not None:
        # restored straight into the shardings of this run's params and optimizer state, whatever
        # the topology that saved them
        state, meta = ckpt.restore_state(root, found, {"params": params, "opt_state": opt_state})
        params, opt_state = state["params"], state["opt_state"]
        first = meta["step"] + 1
        rows = [r for r in _read_rows(rows_path) if r["step"] <= meta["step"]] if main else []
    else:
        rows = [{**tag, "step": 0, **evaluate(ctx, params, ref, kl_name, target, ex0), **pred}]
    if main:
        _write_rows(rows_path, rows)
    for t in trackers:
        if found is None:
            t.log(rows[0])
    bar = tqdm(range(first, n_steps + 1), desc=f"seed {ctx.seed} {label} {stage}",
               initial=first - 1, total=n_steps, leave=False, position=position, disable=not main)
    for k in bar:
        params, opt_state, row = step_fn(params, opt_state, k)
        _finite(row, f"seed {ctx.seed} {label} {stage} step {k}")
        if k % cfg.eval_every == 0 or k == n_steps:
            row.update(evaluate(ctx, params, ref, kl_name, target))
        if main:
            _append_row(rows_path, {**tag, "step": k, **row})
        for t in trackers:
            t.log({**tag, "step": k, **row})
        if k % cfg.ckpt_every == 0 and k < n_steps:
            ckpt.save_state(root, k, {"params": params, "opt_state": opt_state},
                            {"step": k, "stage": stage, "order": label, "seed": ctx.seed,
                             "key": np.asarray(jax.random.key_data(
                                 _key(ctx.seed, stage, k))).tolist()})
    bar.close()

    def gather(x):  # a collective: every process makes the call, process 0 keeps the result, so
        h = to_host(x)  # the others never hold more than one whole tensor at a time
        return h if main else None

    host_params = jax.tree.map(gather, params)
    if main:
        ckpt.save_checkpoint(final, {"params": host_params},
                             {"step": n_steps, "stage": stage, "order": label, "seed": ctx.seed,
                              "model_config": ctx.model_config.to_hf(), "tokenizer": cfg.model})
        shutil.rmtree(root, ignore_errors=True)
    barrier(f"{folder}: final")
    return params


def run_seed(cfg: RunConfig, seed: int, out: str, *, resume: bool, fns: Jitted | None = None,
             loaded=None, trackers=()):
    """Base, then each requested order, written out plainly; returns (stage metrics files, fns)."""
    ctx, params = build_context(cfg, seed, loaded=loaded, fns=fns)
    root = os.path.join(out, "runs", f"seed{seed}")
    files = []

    def stage(name, label, start):
        folder = os.path.join(root, label, name) if label != "base" else os.path.join(root, "base")
        files.append(os.path.join(folder, "metrics.jsonl"))
        return run_stage(ctx, stage=name, label=label, folder=folder, start_params=start,
                         resume=resume, trackers=trackers)

    base = stage("base", "base", params) if cfg.base_steps else params
    if "sft_then_rl" in ORDERS[cfg.order]:
        sft_model = stage("sft", "sft_then_rl", base)
        stage("rl", "sft_then_rl", sft_model)
    if "rl_then_sft" in ORDERS[cfg.order]:
        rl_model = stage("rl", "rl_then_sft", base)
        stage("sft", "rl_then_sft", rl_model)
    return files, ctx.fns


def run(cfg: RunConfig, out: str, *, resume: bool = False) -> dict:
    """The whole run: config.json, per-stage metrics, metrics.jsonl, summary.json, report, plots."""
    from llm_check import report

    t0 = time.perf_counter()
    cfg.validate()
    load_checked_task(cfg, cfg.seeds[0])  # data-dependent settings, before anything is written
    # the model folder (config, tensor headers and shapes, tokenizer) and the mesh spec too
    loaded = load_model(cfg, cfg.seeds[0])
    cfg_path = os.path.join(out, "config.json")
    main = is_main()  # with several processes, only process 0 writes files
    exists = os.path.exists(cfg_path)
    barrier(f"{out}: config checked")  # every process has looked before process 0 writes
    if exists:
        if not resume:
            raise InputError(f"--out {out}: already holds a run; pass --resume or choose another "
                             "folder")
        diff = setting_differs(load_run_config(cfg_path, "--resume"), cfg)
        if diff:
            raise InputError(f"--resume: setting {diff} differs from {cfg_path}")
    elif main:
        os.makedirs(out, exist_ok=True)
        tmp = cfg_path + ".tmp"
        with open(tmp, "w") as f:
            json.dump(cfg.to_json(), f, indent=1)
        os.replace(tmp, cfg_path)
    from llm_check.tracking import open_trackers

    files, fns = [], None
    trackers = open_trackers(cfg.trackers, out, cfg.to_json()) if main else []
    try:
        for seed in cfg.seeds:
            seed_files, fns = run_seed(cfg, seed, out, resume=resume, fns=fns, trackers=trackers,
                                       loaded=loaded if seed == cfg.seeds[0] else None)
            files += seed_files
    finally:
        for t in trackers:
            t.close()
    if main:
        rows = [r for path in files for r in _read_rows(path)]
        _write_rows(os.path.join(out, "metrics.jsonl"), rows)
        summary = report.write_report(cfg, rows, out, wall_s=time.perf_counter() - t0)
    barrier(f"{out}: report written")
    if not main:
        with open(os.path.join(out, "summary.json")) as f:
            summary = json.load(f)
    return summary


# --------------------------------------------------------------------------- eval and the lr sweep

def is_stage_checkpoint(path: str) -> bool:
    """A stage's ``final`` folder (params.safetensors and meta.json), not 'tiny' or a snapshot."""
    return path != "tiny" and os.path.isfile(os.path.join(path, "params.safetensors"))


def load_checkpoint_model(path: str, seed: int = 0, mesh: str | None = None):
    """(model, config, tokenizer) from 'tiny', a run's ``final`` checkpoint or an HF snapshot;
    with ``mesh`` (a spec) the parameters are FSDP-sharded over it."""
    if not is_stage_checkpoint(path):
        return load_model(RunConfig(model=path, mesh=mesh), seed)
    from llm_check.config import Qwen3Config
    from llm_check.model import Qwen3
    from llm_check.tokenizer import load_tokenizer

    meta = ckpt.read_meta(path)
    if "model_config" not in meta:
        raise InputError(f"{path}/meta.json: no model_config (not a stage's final checkpoint)")
    mc = Qwen3Config.from_hf(meta["model_config"], source=f"{path}/meta.json")
    model = Qwen3(mc, rngs=nnx.Rngs(0))
    graphdef, params, rest = split_model(model)
    trees, _ = ckpt.load_checkpoint(path, {"params": params})
    model = nnx.merge(graphdef, jax.tree.map(jnp.asarray, trees["params"]), rest)
    if mesh is not None:
        from llm_check.sharding import make_mesh, shard_model

        shard_model(model, make_mesh(mesh))
    return model, mc, load_tokenizer(meta.get("tokenizer", "tiny"))


def evaluate_checkpoint(model_path: str, *, task: str, seed: int | None = None,
                        **settings) -> dict:
    """Held-out CE and strict / robust / format rewards and greedy accuracy of one checkpoint;
    ``mesh="data=D,fsdp=F"`` evaluates it on a device mesh (parameters and held-out rows split).

    ``seed`` draws the data split; by default a stage checkpoint's own (its meta.json), so its
    held-out rows are the ones its run held out, else 0. The training batch sizes, which an
    evaluation does not use, are set to the smallest the mesh allows, so that they cannot reject
    a small task or a mesh."""
    if seed is None:
        seed = checkpoint_seed(model_path)
    n = mesh_devices(settings.get("mesh"))
    cfg = dataclasses.replace(RunConfig(), model=model_path, task=task, seeds=(seed,),
                              eps=settings.pop("eps", RunConfig.eps), sft_batch=n, grad_accum=1,
                              grpo=dataclasses.replace(
                                  GRPOConfig(), max_new_tokens=settings.pop("max_new_tokens", 4),
                                  temperature=settings.pop("temperature", 1.0),
                                  prompts_per_step=n),
                              **settings).validate()
    loaded = load_checkpoint_model(model_path, seed, mesh=cfg.mesh)
    ctx, params = build_context(cfg, seed, loaded=loaded)
    result = evaluate(ctx, params, params, "kl_self")
    del result["kl_self"], result["rl/objective"]
    return {"model": model_path, "task": task, "seed": seed,
            "heldout_rows": len(ctx.eval_answers), **result}


def checkpoint_seed(path: str) -> int:
    """The seed in a stage checkpoint's meta.json; 0 for 'tiny' and HF snapshots."""
    if not is_stage_checkpoint(path):
        return 0
    seed = ckpt.read_meta(path).get("seed", 0)
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise InputError(f"{path}/meta.json: seed {seed!r} is not a seed (an integer >= 0)")
    return seed


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
                               start_params=params, resume=False)
        params = run_stage(ctx, stage="sft", label="sweep", folder=os.path.join(tmp, "sft"),
                           start_params=params, resume=False)
    rows = []
    for lr in lrs:
        if not lr > 0:
            raise InputError(f"setting --lrs: learning rate {lr} must be > 0")
        optimizer = optax.sgd(lr) if sgd else make_optimizer(OptimConfig(lr=lr))
        step = make_grpo_step(ctx.graphdef, ctx.rest, optimizer, cfg.grpo)
        _, _, r = rl_step_fn(ctx, params, step)(params, optimizer.init(params), 1)
        rows.append({"lr": lr, "delta_norm": r["local/delta_norm"],
                     "dce_measured": r["local/dce_measured"], "dce_linear": r["local/dce_linear"],
                     "dce_pred": r["local/dce_pred"],
                     "rel_err_linear": relative_error(r["local/dce_linear"], r["local/dce_measured"]),
                     "rel_err_pred": relative_error(r["local/dce_pred"], r["local/dce_measured"]),
                     "cos_ce_rl": r["grad/cos_ce_rl"]})
    return rows
