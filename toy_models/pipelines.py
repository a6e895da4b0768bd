"""The two orders of post-training on a toy instance, with the local theory beside each measurement.

    sft_then_rl:  SFT on p_D from ``init_params``, then RL on J_β with reference = the SFT policy
    rl_then_sft:  RL on J_β with reference ``inst.reference`` from ``init_params``, then SFT on p_D

Both are pure and jit/vmap-able; they return the final parameters and a dict of per-step arrays
(stage 0 then stage 1, keys ``stage`` and ``step`` too) with
the metric names shared with the LLM runs:

    sft/ce_heldout   L (exact, over all prompts: the toy has no sampling error)
    sft/ce_pred      L from the second-order Taylor model of L at the start of the stage
                     (in the RL stage of sft_then_rl, ∇L = 0 there: this is thm31.local)
    rl/reward        J          rl/reward_pred     its second-order model at the stage start
    rl/objective     J_β        rl/objective_pred  its second-order model (thm41.local in rl_then_sft)
    rl/kl_ref        E_x KL(p ‖ π_ref) for the RL stage's reference
    grad/cos_ce_rl   cos(∇L, ∇J) in the parameters

RL is exact policy gradient (optax) unless ``cfg.rl_estimator`` names a sampled estimator; the
sampled estimators then use the instance's β as the weight of their KL estimator.
Simplification: the Hessians of the Taylor models are dense ``jax.hessian`` in the flattened
parameters, fine for the toy sizes (≤ a few hundred parameters).
"""

from __future__ import annotations

import dataclasses
from typing import Callable

import jax
import jax.numpy as jnp
import optax
from jax.flatten_util import ravel_pytree

from toy_models import objectives as obj
from toy_models import trainers
from toy_models.estimators import EstimatorConfig
from toy_models.instance import Instance


@dataclasses.dataclass(frozen=True)
class PipelineConfig:
    sft_steps: int = 100
    rl_steps: int = 100
    sft_learning_rate: float = 1.0
    rl_learning_rate: float = 1.0
    rl_estimator: EstimatorConfig | None = None  # None: exact policy gradient


def _quadratic_model(fn: Callable, params):
    """θ ↦ f(θ₀) + ∇f(θ₀)·Δ + ½ ΔᵀHΔ, as a function of the parameter pytree."""
    flat0, unravel = ravel_pytree(params)
    f_flat = lambda f: fn(unravel(f))
    value, grad, hess = f_flat(flat0), jax.grad(f_flat)(flat0), jax.hessian(f_flat)(flat0)

    def model(prm):
        d = ravel_pytree(prm)[0] - flat0
        return value + grad @ d + 0.5 * d @ hess @ d

    return model


def _metrics_fn(inst: Instance, log_probs_fn: Callable, log_ref: jax.Array, stage_start):
    sft = lambda prm: obj.sft_loss(log_probs_fn(prm), inst.q, inst.expert)
    rew = lambda prm: obj.raw_reward(log_probs_fn(prm), inst.q, inst.reward)
    objective = lambda prm: obj.regularized_objective(log_probs_fn(prm), inst.q, inst.reward, log_ref,
                                                      inst.beta)
    models = {name: _quadratic_model(f, stage_start) for name, f in
              (("sft", sft), ("rew", rew), ("obj", objective))}

    def metrics(prm):
        g_sft = ravel_pytree(jax.grad(sft)(prm))[0]
        g_rew = ravel_pytree(jax.grad(rew)(prm))[0]
        denom = jnp.linalg.norm(g_sft) * jnp.linalg.norm(g_rew)
        return {
            "sft/ce_heldout": sft(prm), "sft/ce_pred": models["sft"](prm),
            "rl/reward": rew(prm), "rl/reward_pred": models["rew"](prm),
            "rl/objective": objective(prm), "rl/objective_pred": models["obj"](prm),
            "rl/kl_ref": obj.kl(log_probs_fn(prm), log_ref, inst.q),
            "grad/cos_ce_rl": jnp.where(denom > 0, g_sft @ g_rew / jnp.where(denom > 0, denom, 1.0), 0.0),
        }

    return metrics


def _sft_stage(inst, log_probs_fn, params, log_ref, cfg):
    loss = lambda prm: obj.sft_loss(log_probs_fn(prm), inst.q, inst.expert)
    return trainers.minimize(loss, params, optax.sgd(cfg.sft_learning_rate), cfg.sft_steps,
                             _metrics_fn(inst, log_probs_fn, log_ref, params))


def _rl_stage(inst, log_probs_fn, params, log_ref, cfg, key):
    metrics = _metrics_fn(inst, log_probs_fn, log_ref, params)
    if cfg.rl_estimator is None:
        loss = lambda prm: -obj.regularized_objective(log_probs_fn(prm), inst.q, inst.reward, log_ref,
                                                      inst.beta)
        return trainers.minimize(loss, params, optax.sgd(cfg.rl_learning_rate), cfg.rl_steps, metrics)
    return trainers.sampled_ascent(key, log_probs_fn, params, inst.reward, inst.q, log_ref, cfg.rl_estimator,
                                   optax.sgd(cfg.rl_learning_rate), cfg.rl_steps, metrics, beta=inst.beta)


def _join(first: dict, second: dict) -> dict[str, jax.Array]:
    out = {k: jnp.concatenate([first[k], second[k]]) for k in first}
    n0, n1 = first["sft/ce_heldout"].shape[0], second["sft/ce_heldout"].shape[0]
    out["stage"] = jnp.concatenate([jnp.zeros(n0, jnp.int32), jnp.ones(n1, jnp.int32)])
    out["step"] = jnp.arange(n0 + n1)
    return out


def sft_then_rl(inst: Instance, log_probs_fn: Callable, init_params, cfg: PipelineConfig,
                key: jax.Array):
    """SFT then RL; the RL reference is the policy at the end of SFT (the thm31 setting)."""
    log_ref0 = jnp.log(inst.reference)
    params, hist_sft = _sft_stage(inst, log_probs_fn, init_params, log_ref0, cfg)
    log_ref = jax.lax.stop_gradient(log_probs_fn(params))
    params, hist_rl = _rl_stage(inst, log_probs_fn, params, log_ref, cfg, key)
    return params, _join(hist_sft, hist_rl)


def rl_then_sft(inst: Instance, log_probs_fn: Callable, init_params, cfg: PipelineConfig,
                key: jax.Array):
    """RL (reference ``inst.reference``) then SFT; the metrics keep that reference throughout."""
    log_ref = jnp.log(inst.reference)
    params, hist_rl = _rl_stage(inst, log_probs_fn, init_params, log_ref, cfg, key)
    params, hist_sft = _sft_stage(inst, log_probs_fn, params, log_ref, cfg)
    return params, _join(hist_rl, hist_sft)
