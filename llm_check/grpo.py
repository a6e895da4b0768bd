"""GRPO: group sampling, group advantages, the clipped ratio, KL to a frozen reference, aggregation.

Implements, per prompt x with G sampled completions y_1..y_G and rewards r_i:

- advantages (``group_advantages``): A_i = r_i - b_i with the group-mean baseline b_i = mean(r)
  (which includes r_i itself, so E[sum_i A_i grad log p(y_i)] / G = (1 - 1/G) grad J: docs/theory.md
  [grpo.baseline]) or the leave-one-out baseline b_i = mean_{j != i} r_j (RLOO, unbiased); then,
  optionally, A_i / (std(r; ddof) + eps). Dividing by the group std re-weights prompts by
  1/std, a further bias: the expected update is no longer proportional to grad J.
- the KL to the frozen reference, in one of two places (``GRPOConfig.kl_mode``):
  - ``"reward"``: each completion's reward becomes r_i - beta k_i, with k_i = sum_t (log p -
    log ref)_{i,t} the log-ratio of the whole completion under the sampling policy (a constant, no
    gradient). By default (``kl_in_baseline=False``) only r_i gets the group baseline and
    -beta k_i is added after it (``advantages``); ``kl_in_baseline=True`` forms the advantages of
    r_i - beta k_i. With RLOO, no std division and on-policy samples either is an unbiased
    estimate of grad J_beta = grad (J - beta KL(p || ref)) ([kl.grad]: k1 in the reward;
    [kl.token]: the sequence log-ratio acts as a reward-to-go for every token). Its fixed point is
    the Gibbs tilt p* = ref e^{r/beta} / Z.
  - ``"loss"``: a per-token estimator k(i,t) against the reference is added to the loss,
      l_{i,t} = -min(rho A_i, clip(rho, 1 - eps_low, 1 + eps_high) A_i) + beta * k(i,t),
    with rho = p_theta / p_old and (``kl_per_token``)
      k1 = log p - log ref       (unbiased VALUE of KL(p || ref); its expected gradient is 0),
      k2 = (log p - log ref)^2 / 2  (gradient: the per-token partial of grad KL(p || ref), exact
                                     for one-token responses, [kl.token]),
      k3 = exp(log ref - log p) - (log ref - log p) - 1  (>= 0 and unbiased [kl.k3], but its
                                     expected gradient is grad KL(ref || p), the OTHER direction:
                                     [kl.grad]; fixed point p_y = beta ref_y / (beta + J - r_y)).
- aggregation (``aggregate``): "seq_mean_token_mean" (mean over sequences of each one's token
  mean: the original GRPO, tunix), "token_mean" (one mean over all completion tokens: TRL's default),
  or "fixed_length" (sum over tokens / (number of sequences * max_new_tokens): Dr. GRPO; the
  gradient is then proportional to sum_i A_i grad log p(y_i), the sequence-level estimator).

Log-probabilities are scored at the sampling temperature T, log softmax(z / T), so that the ratio
and the KL refer to the distribution the completions came from.

With one inner iteration (mu = 1) the old policy IS the current one: the step uses the log-probs
of its own forward pass, stop-gradiented, as the old ones, so rho = 1 exactly (also in bf16), and
without a KL term in the loss its VALUE is -mean(A) (0 under the group-mean baseline) while its
GRADIENT is the advantage-weighted log-likelihood gradient ([grpo.onpolicy]). A loss curve stuck at
~0 is therefore expected; watch the reward.

Simplifications: one reference policy for the whole stage (the policy at the stage start); no
entropy bonus; rewards are computed in Python on decoded text, outside jit.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from llm_check.logprobs import grouped_completion_logprobs
from llm_check.run_config import (AGGREGATIONS, BASELINES, KL_ESTIMATORS,  # noqa: F401
                                  GRPOConfig)
from llm_check.sampling import SampleOutput, sample
from llm_check.sharding import to_host
from theory.errors import InputError


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


def shaped_rewards(rewards: jax.Array, seq_logratio: jax.Array, cfg: GRPOConfig) -> jax.Array:
    """r - beta * sum_t (log p - log ref) when the KL sits in the reward (``kl_mode="reward"``),
    else r unchanged. Both arrays are [N]."""
    if cfg.kl_mode == "reward" and cfg.beta > 0:
        return rewards - cfg.beta * seq_logratio
    return rewards


def advantages(rewards: jax.Array, seq_logratio: jax.Array, cfg: GRPOConfig) -> jax.Array:
    """The [N] advantages of one batch: rewards and sequence log-ratios [N], grouped by G.

    With the KL in the reward and ``kl_in_baseline=False`` (the ``exact`` preset) only r gets the
    group baseline and the penalty is added after it: A_i = (r_i - b_i) - beta k_i, k_i the
    sequence log-ratio. Both forms are unbiased, since a baseline that does not depend on y_i
    leaves E[A_i grad log p(y_i)] unchanged, and E[k grad log p] = grad KL(p || ref) because
    E[grad log p] = 0 (docs/theory.md [kl.grad]). They differ on a group of G identical
    completions: there the baselined penalty is 0 for every member, so nothing pulls a prompt
    that collapsed onto one unrewarded answer back towards the reference; -beta k_i still does
    (docs/log.md).
    """
    after = cfg.kl_mode == "reward" and cfg.beta > 0 and not cfg.kl_in_baseline
    base = rewards if after else shaped_rewards(rewards, seq_logratio, cfg)
    adv = group_advantages(base.reshape(-1, cfg.group_size), baseline=cfg.baseline,
                           std_normalize=cfg.std_normalize, ddof=cfg.std_ddof,
                           eps=cfg.std_floor).reshape(-1)
    return adv - cfg.beta * seq_logratio if after else adv


def grpo_loss(logp, old_logp, ref_logp, advantages, mask, cfg: GRPOConfig, beta=None):
    """The clipped GRPO loss over [N, L] completion log-probs; returns (loss, metrics).

    ``advantages`` is [N] (one per sequence). ``old_logp`` and ``ref_logp`` are constants; pass
    ``old_logp=None`` for one inner iteration (the old policy is the current one: rho = 1 exactly).
    The KL estimator enters the loss only with ``kl_mode="loss"``, weighted by ``beta`` (default
    ``cfg.beta``; it may be traced); ``kl`` in the metrics is the chosen estimator's per-token
    mean either way.
    """
    beta = cfg.beta if beta is None else beta
    old_logp = jax.lax.stop_gradient(logp if old_logp is None else old_logp)
    ref_logp = jax.lax.stop_gradient(ref_logp)
    m = mask.astype(logp.dtype)
    a = advantages[:, None]
    ratio = jnp.exp(logp - old_logp)
    clipped = jnp.clip(ratio, 1.0 - cfg.clip_low, 1.0 + cfg.clip_high)
    pg = -jnp.minimum(ratio * a, clipped * a)
    kl = kl_per_token(logp, ref_logp, cfg.kl_estimator)
    per_token = pg + beta * kl if cfg.kl_mode == "loss" else pg
    loss = aggregate(per_token, mask, cfg.aggregation)
    n_tok = jnp.maximum(m.sum(), 1.0)
    low = ((ratio < 1.0 - cfg.clip_low) & (a < 0)).astype(logp.dtype)
    high = ((ratio > 1.0 + cfg.clip_high) & (a > 0)).astype(logp.dtype)
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
    completion = to_host(completion)  # gathered from every process's devices
    lengths = to_host(completion_mask).sum(-1)
    texts = []
    for ids, n in zip(completion, lengths):
        ids = list(ids[:n])
        if ids and ids[-1] == tok.eos_id:
            ids = ids[:-1]
        texts.append(tok.decode(ids, skip_special_tokens=False))
    return texts


def rollout(model, tok, prompt_tokens, prompt_mask, key, cfg: GRPOConfig, *, group_size=None,
            greedy: bool = False) -> SampleOutput:
    """``group_size`` completions for each left-padded prompt (rows grouped: prompt i gives rows
    i*G .. i*G+G-1); each prompt is prefilled once (``sample(repeat=G)``)."""
    g = cfg.group_size if group_size is None else group_size
    return sample(model, prompt_tokens, prompt_mask, key, max_new_tokens=cfg.max_new_tokens,
                  temperature=cfg.temperature, top_p=cfg.top_p, greedy=greedy, eos_id=tok.eos_id,
                  pad_id=tok.pad_id, repeat=g)


def make_completion_logprobs(graphdef, rest, *, temperature: float = 1.0):
    """Jitted (params, prompt_tokens [P, Tp], prompt_mask, completion [P*G, M]) -> (log-probs,
    entropies) [P*G, M] of the next-token law at ``temperature``; each prompt runs once for its
    group (``logprobs.grouped_completion_logprobs``)."""

    @jax.jit
    def fn(params, prompt_tokens, prompt_mask, completion):
        model = nnx.merge(graphdef, params, rest)
        return grouped_completion_logprobs(model, prompt_tokens, prompt_mask, completion,
                                           temperature=temperature, with_entropy=True)

    return fn


def make_grpo_step(graphdef, rest, optimizer, cfg: GRPOConfig):
    """Jitted inner update: (params, opt_state, prompt_tokens, prompt_mask, completion, cmask,
    old_logp, ref_logp, adv, beta=cfg.beta) -> (params, opt_state, metrics). With
    ``cfg.inner_iters == 1`` ``old_logp`` is ignored: the step's own log-probs, stop-gradiented,
    are the old ones. ``beta`` is an argument, not a constant of the program, so one compiled
    step serves every KL weight of a setting (the sweep's beta grid)."""

    def loss_fn(params, prompt_tokens, prompt_mask, completion, cmask, old_logp, ref_logp, adv,
                beta):
        model = nnx.merge(graphdef, params, rest)
        lp = grouped_completion_logprobs(model, prompt_tokens, prompt_mask, completion,
                                         temperature=cfg.temperature)
        old = None if cfg.inner_iters == 1 else old_logp
        return grpo_loss(lp, old, ref_logp, adv, cmask, cfg, beta)

    grad_fn = jax.value_and_grad(loss_fn, has_aux=True)

    @jax.jit
    def jitted(params, opt_state, prompt_tokens, prompt_mask, completion, cmask, old_logp,
               ref_logp, adv, beta):
        (_, metrics), grads = grad_fn(params, prompt_tokens, prompt_mask, completion, cmask,
                                      old_logp, ref_logp, adv, beta)
        updates, opt_state = optimizer.update(grads, opt_state, params)
        params = optax.apply_updates(params, updates)
        metrics["grad_norm"] = optax.tree.norm(grads)
        return params, opt_state, metrics

    def step(params, opt_state, prompt_tokens, prompt_mask, completion, cmask, old_logp,
             ref_logp, adv, beta=None):
        return jitted(params, opt_state, prompt_tokens, prompt_mask, completion, cmask, old_logp,
                      ref_logp, adv, jnp.float32(cfg.beta if beta is None else beta))

    step.jitted = jitted  # the jax.jit function itself (beta required), e.g. to .lower() it
    return step


def make_reward_gradient(graphdef, rest, cfg: GRPOConfig):
    """Jitted (params, prompt_tokens, prompt_mask, completion, cmask, adv) -> an estimate of
    grad J, the RAW reward's gradient (no KL term): mean_i A_i grad log p(y_i). With
    leave-one-out advantages of the raw rewards it is unbiased ([grpo.baseline]);
    ``grad/cos_ce_rl`` is its cosine with grad CE."""

    def surrogate(params, prompt_tokens, prompt_mask, completion, cmask, adv):
        model = nnx.merge(graphdef, params, rest)
        lp = grouped_completion_logprobs(model, prompt_tokens, prompt_mask, completion,
                                         temperature=cfg.temperature)
        return jnp.mean(adv * jnp.sum(lp * cmask, axis=-1))

    return jax.jit(jax.grad(surrogate))


def reward_stats(rewards: np.ndarray, group_size: int) -> dict:
    """TRL's reward metrics over [P*G] rewards: mean, mean group std, share of zero-std groups."""
    r = np.asarray(rewards, np.float64).reshape(-1, group_size)
    std = r.std(axis=1, ddof=1) if group_size > 1 else np.zeros(r.shape[0])
    return {"reward": float(r.mean()), "reward_std": float(std.mean()),
            "frac_reward_zero_std": float(np.mean(std == 0))}
