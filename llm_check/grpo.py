"""GRPO: group sampling, group advantages, the clipped ratio, KL to a frozen reference, aggregation.

Implements, per prompt x with G sampled completions y_1..y_G and rewards r_i:

- advantages (``group_advantages``): A_i = r_i - b_i with the group-mean baseline b_i = mean(r)
  (which includes r_i itself, so E[sum_i A_i grad log p(y_i)] / G = (1 - 1/G) grad J: docs/theory.md
  [grpo.baseline]) or the leave-one-out baseline b_i = mean_{j != i} r_j (RLOO, unbiased); then,
  optionally, A_i / (std(r; ddof) + eps). Dividing by the group std re-weights prompts by
  1/std, a further bias: the expected update is no longer proportional to grad J.
- per token t of completion i, with ratio rho = p_theta / p_old:
      l_{i,t} = -min(rho A_i, clip(rho, 1 - eps_low, 1 + eps_high) A_i) + beta * k(i,t)
  where k is the KL estimator against the frozen reference (``kl_per_token``):
      k1 = log p - log ref       (unbiased for KL(p || ref), can be negative)
      k2 = (log p - log ref)^2 / 2
      k3 = exp(log ref - log p) - (log ref - log p) - 1   (>= 0 and unbiased: docs/theory.md [kl.k3])
- aggregation (``aggregate``): "seq_mean_token_mean" (mean over sequences of each one's token
  mean: the original GRPO, tunix), "token_mean" (one mean over all completion tokens: TRL's default),
  or "fixed_length" (sum over tokens / (number of sequences * max_new_tokens): Dr. GRPO).

With one inner iteration (mu = 1) the old policy IS the current one, so rho = 1 and, without the
KL term, the loss VALUE is -mean(A) = 0 exactly under the group-mean baseline, while its GRADIENT
is the advantage-weighted log-likelihood gradient ([grpo.onpolicy]). A loss curve stuck at ~0 is
therefore expected; watch the reward.

Simplifications: one reference policy for the whole stage (the policy at the stage start); no
entropy bonus; rewards are computed in Python on decoded text, outside jit.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from llm_check.logprobs import token_logprobs, token_logprobs_and_entropy
from llm_check.sampling import SampleOutput, sample
from theory.errors import InputError

KL_ESTIMATORS = ("k1", "k2", "k3")
BASELINES = ("mean", "loo")
AGGREGATIONS = ("seq_mean_token_mean", "token_mean", "fixed_length")


@dataclass(frozen=True)
class GRPOConfig:
    """Every GRPO setting; all of them go to config.json."""

    group_size: int = 8
    prompts_per_step: int = 8
    beta: float = 0.04
    kl_estimator: str = "k3"
    clip_eps_low: float = 0.2
    clip_eps_high: float = 0.2
    inner_iters: int = 1
    baseline: str = "mean"
    std_normalize: bool = True
    std_ddof: int = 1
    std_eps: float = 1e-4
    aggregation: str = "seq_mean_token_mean"
    max_new_tokens: int = 4
    temperature: float = 1.0
    top_p: float = 1.0

    def validate(self) -> "GRPOConfig":
        """Reject invalid settings with an InputError naming the setting."""
        if self.group_size < 2:
            raise InputError(f"setting group_size={self.group_size}: GRPO needs at least 2 "
                             "completions per prompt")
        if self.prompts_per_step < 1:
            raise InputError(f"setting prompts_per_step={self.prompts_per_step}: must be >= 1")
        if not self.beta >= 0:
            raise InputError(f"setting beta={self.beta}: the KL weight must be >= 0")
        if self.kl_estimator not in KL_ESTIMATORS:
            raise InputError(f"setting kl_estimator={self.kl_estimator!r}: unknown estimator "
                             f"(choose from {', '.join(KL_ESTIMATORS)})")
        if self.baseline not in BASELINES:
            raise InputError(f"setting baseline={self.baseline!r}: choose from {', '.join(BASELINES)}")
        if self.aggregation not in AGGREGATIONS:
            raise InputError(f"setting aggregation={self.aggregation!r}: choose from "
                             f"{', '.join(AGGREGATIONS)}")
        if not (0 <= self.clip_eps_low < 1 and self.clip_eps_high >= 0):
            raise InputError(f"settings clip_eps_low={self.clip_eps_low}, clip_eps_high="
                             f"{self.clip_eps_high}: need 0 <= low < 1 and high >= 0")
        if self.inner_iters < 1:
            raise InputError(f"setting inner_iters={self.inner_iters}: must be >= 1")
        if self.std_ddof not in (0, 1) or self.std_ddof >= self.group_size:
            raise InputError(f"setting std_ddof={self.std_ddof}: must be 0 or 1")
        if not self.std_eps >= 0:
            raise InputError(f"setting std_eps={self.std_eps}: must be >= 0")
        if self.max_new_tokens < 1:
            raise InputError(f"setting max_new_tokens={self.max_new_tokens}: must be >= 1")
        if not self.temperature > 0:
            raise InputError(f"setting temperature={self.temperature}: must be > 0")
        if not 0 < self.top_p <= 1:
            raise InputError(f"setting top_p={self.top_p}: must lie in (0, 1]")
        return self

    def to_json(self) -> dict:
        return asdict(self)


# --------------------------------------------------------------------------- pure loss math

def group_advantages(rewards: jax.Array, *, baseline: str = "mean", std_normalize: bool = True,
                     ddof: int = 1, eps: float = 1e-4) -> jax.Array:
    """Advantages for rewards of shape [P, G] (P prompts, G completions each); returns [P, G]."""
    g = rewards.shape[-1]
    mean = rewards.mean(axis=-1, keepdims=True)
    if baseline == "mean":
        adv = rewards - mean
    elif baseline == "loo":
        adv = rewards - (rewards.sum(axis=-1, keepdims=True) - rewards) / (g - 1)
    else:
        raise InputError(f"setting baseline={baseline!r}: choose from {', '.join(BASELINES)}")
    if std_normalize:
        adv = adv / (rewards.std(axis=-1, ddof=ddof, keepdims=True) + eps)
    return adv


def kl_per_token(logp: jax.Array, ref_logp: jax.Array, estimator: str) -> jax.Array:
    """Per-token estimate of KL(p || ref) from samples of p (module docstring)."""
    d = ref_logp - logp
    if estimator == "k1":
        return -d
    if estimator == "k2":
        return 0.5 * d * d
    if estimator == "k3":
        return jnp.expm1(d) - d
    raise InputError(f"setting kl_estimator={estimator!r}: unknown estimator "
                     f"(choose from {', '.join(KL_ESTIMATORS)})")


def aggregate(per_token: jax.Array, mask: jax.Array, mode: str) -> jax.Array:
    """Reduce [N, L] per-token losses over the completion mask to one number (module docstring)."""
    mask = mask.astype(per_token.dtype)
    summed = (per_token * mask).sum(axis=-1)
    if mode == "seq_mean_token_mean":
        return (summed / jnp.maximum(mask.sum(axis=-1), 1.0)).mean()
    if mode == "token_mean":
        return summed.sum() / jnp.maximum(mask.sum(), 1.0)
    if mode == "fixed_length":
        return summed.sum() / (per_token.shape[0] * per_token.shape[1])
    raise InputError(f"setting aggregation={mode!r}: choose from {', '.join(AGGREGATIONS)}")


def grpo_loss(logp, old_logp, ref_logp, advantages, mask, cfg: GRPOConfig):
    """The clipped GRPO loss over [N, L] completion log-probs; returns (loss, metrics).

    ``advantages`` is [N] (one per sequence). ``old_logp`` and ``ref_logp`` are constants.
    """
    old_logp = jax.lax.stop_gradient(old_logp)
    ref_logp = jax.lax.stop_gradient(ref_logp)
    m = mask.astype(logp.dtype)
    a = advantages[:, None]
    ratio = jnp.exp(logp - old_logp)
    clipped = jnp.clip(ratio, 1.0 - cfg.clip_eps_low, 1.0 + cfg.clip_eps_high)
    pg = -jnp.minimum(ratio * a, clipped * a)
    kl = kl_per_token(logp, ref_logp, cfg.kl_estimator)
    per_token = pg + cfg.beta * kl if cfg.beta > 0 else pg
    loss = aggregate(per_token, mask, cfg.aggregation)
    n_tok = jnp.maximum(m.sum(), 1.0)
    low = ((ratio < 1.0 - cfg.clip_eps_low) & (a < 0)).astype(logp.dtype)
    high = ((ratio > 1.0 + cfg.clip_eps_high) & (a > 0)).astype(logp.dtype)
    metrics = {
        "loss": loss,
        "kl": (kl * m).sum() / n_tok,
        "clip_ratio/low_mean": (low * m).sum() / n_tok,
        "clip_ratio/high_mean": (high * m).sum() / n_tok,
        "clip_ratio/region_mean": ((low + high) * m).sum() / n_tok,
    }
    return loss, metrics


# --------------------------------------------------------------------------- rollouts and the step

def decode_completions(tok, completion, completion_mask) -> list[str]:
    """Decoded completion texts, without the closing end-of-turn token."""
    completion = np.asarray(completion)
    lengths = np.asarray(completion_mask).sum(-1)
    texts = []
    for ids, n in zip(completion, lengths):
        ids = list(ids[:n])
        if ids and ids[-1] == tok.eos_id:
            ids = ids[:-1]
        texts.append(tok.decode(ids, skip_special_tokens=False))
    return texts


def rollout(model, tok, prompt_tokens, prompt_mask, key, cfg: GRPOConfig, *, group_size=None,
            greedy: bool = False) -> SampleOutput:
    """``group_size`` completions for each left-padded prompt (rows repeated G times, grouped)."""
    g = cfg.group_size if group_size is None else group_size
    return sample(model, np.repeat(prompt_tokens, g, axis=0), np.repeat(prompt_mask, g, axis=0),
                  key, max_new_tokens=cfg.max_new_tokens, temperature=cfg.temperature,
                  top_p=cfg.top_p, greedy=greedy, eos_id=tok.eos_id, pad_id=tok.pad_id)


def sequence_inputs(out: SampleOutput, prompt_mask):
    """(tokens, attention mask, completion mask) of prompt + completion, for the log-prob pass."""
    attn = jnp.concatenate([jnp.asarray(prompt_mask, jnp.int32),
                            jnp.asarray(out.completion_mask, jnp.int32)], axis=1)
    return out.tokens, attn, out.completion_mask


def make_completion_logprobs(graphdef, rest, *, chunk_size: int = 64):
    """Jitted (params, tokens, attn, cmask) -> (log-probs, entropies) of the completion, [N, M]."""

    @jax.jit
    def fn(params, tokens, attn, cmask):
        model = nnx.merge(graphdef, params, rest)
        lp, ent = token_logprobs_and_entropy(model, tokens, attn, chunk_size=chunk_size)
        start = tokens.shape[1] - cmask.shape[1] - 1
        return lp[:, start:], ent[:, start:]

    return fn


def make_grpo_step(graphdef, rest, optimizer, cfg: GRPOConfig, *, chunk_size: int = 64):
    """Jitted inner update: (params, opt_state, tokens, attn, cmask, old_logp, ref_logp, adv) ->
    (params, opt_state, metrics, grads); ``grads`` is the (unclipped) gradient of the GRPO loss."""

    def loss_fn(params, tokens, attn, cmask, old_logp, ref_logp, adv):
        model = nnx.merge(graphdef, params, rest)
        lp = token_logprobs(model, tokens, attn, chunk_size=chunk_size)
        lp = lp[:, tokens.shape[1] - cmask.shape[1] - 1:]
        return grpo_loss(lp, old_logp, ref_logp, adv, cmask, cfg)

    grad_fn = jax.value_and_grad(loss_fn, has_aux=True)

    @jax.jit
    def step(params, opt_state, tokens, attn, cmask, old_logp, ref_logp, adv):
        (_, metrics), grads = grad_fn(params, tokens, attn, cmask, old_logp, ref_logp, adv)
        updates, opt_state = optimizer.update(grads, opt_state, params)
        params = optax.apply_updates(params, updates)
        metrics["grad_norm"] = optax.tree.norm(grads)
        return params, opt_state, metrics, grads

    return step


def reward_stats(rewards: np.ndarray, group_size: int) -> dict:
    """TRL's reward metrics over [P*G] rewards: mean, mean group std, share of zero-std groups."""
    r = np.asarray(rewards, np.float64).reshape(-1, group_size)
    std = r.std(axis=1, ddof=1) if group_size > 1 else np.zeros(r.shape[0])
    return {"reward": float(r.mean()), "reward_std": float(std.mean()),
            "frac_reward_zero_std": float(np.mean(std == 0))}
