"""What theory predicts for an LLM run before it starts, from the model it actually starts from.

For the built-in task the reward is binary and the rewarded answer can be listed, so a policy is
summarized per prompt by s[x] = p(right answer | x) (``exact_eval``). Every estimator setting of
``GRPOConfig`` has a fixed point (docs/theory.md §6 [grpo.fixedpoint]) that rescales all rewarded
completions by one factor and all others by another, so it is given by the success rate it reaches,
``theory.closed_forms.binary_fixed_point``:

- KL of the whole completion in the reward (``kl_mode="reward"``), no std division: the Gibbs tilt
  p* = ref e^{r/beta} / Z, whatever the baseline (the baseline scales reward and KL alike);
- k2 per token in the loss: the tilt at beta / m, with m the advantage multiplier (1 for RLOO,
  1 - 1/G for the group mean, s-dependent with std division);
- k3 per token in the loss: p_y = beta' ref_y / (beta' + J - r_y) with beta' = beta / m(s);
- k1 in the loss (expected gradient 0), or the KL in the reward with std division: no closed form;
  the prediction is left out (None) and the report says so.

From the target s*, the SFT loss after RL is the SFT model's plus
``theory.closed_forms.binary_ce_change`` (for the tilt, exactly thm31.identity:
E_x[log E_{p_SFT} e^{r/beta}] - (1 - eps)/beta). Simplification: the per-token estimators are
treated as acting on whole completions, which is exact when only the first answer token varies
(the built-in task's answers are one digit then <|im_end|> for ``max_operand`` <= 4, the
default; with larger operands a two-digit sum makes its first digit shared by several answers, and
the prediction is then an approximation).

No JAX here: the report imports this module.
"""

from __future__ import annotations

from functools import partial

import numpy as np

from llm_check.run_config import GRPOConfig
from theory.closed_forms import (binary_advantage_multiplier, binary_ce_change,
                                 binary_fixed_point)


def fixed_point_name(g: GRPOConfig) -> str:
    """A one-line name of where RL with these settings converges (module docstring)."""
    if g.beta == 0:
        return "no KL term: the unregularized optimum (all mass on rewarded answers)"
    if g.kl_mode == "reward":
        if g.std_normalize:
            return "KL in the reward with std division: no closed form"
        return "the Gibbs tilt p* = ref e^{r/beta}/Z (Theorem 3.1's optimum)"
    adv = {("loo", False): "RLOO", ("mean", False): "group mean (beta -> beta G/(G-1))"}.get(
        (g.baseline, g.std_normalize), "std-divided advantages (a per-prompt beta' = beta/m(s))")
    if g.kl_estimator == "k2":
        return f"per-token k2: the tilt at the effective beta, {adv}"
    if g.kl_estimator == "k3":
        return f"per-token k3: p_y = beta' ref_y/(beta' + J - r_y), {adv} (not p*)"
    return "per-token k1 in the loss (zero expected gradient): no closed form"


def rl_target(s_ref, g: GRPOConfig) -> np.ndarray | None:
    """Per-prompt success rate at the fixed point of RL with settings ``g`` from s_ref; None when
    the setting has no closed form."""
    s_ref = np.clip(np.asarray(s_ref, np.float64), 1e-12, 1 - 1e-12)
    if g.beta == 0:
        return None
    if g.kl_mode == "reward":
        return None if g.std_normalize else binary_fixed_point(s_ref, g.beta, kl="forward")
    if g.kl_estimator == "k1":
        return None
    m = partial(binary_advantage_multiplier, group_size=g.group_size, baseline=g.baseline,
                std_normalize=g.std_normalize, ddof=g.std_ddof, std_floor=g.std_floor)
    kl = "forward" if g.kl_estimator == "k2" else "reverse"
    return binary_fixed_point(s_ref, g.beta, kl=kl, multiplier=m)


def ce_change_prediction(s_ref, eps: float, g: GRPOConfig) -> float | None:
    """Predicted change of the exact SFT loss over RL (mean over prompts), or None."""
    target = rl_target(s_ref, g)
    if target is None:
        return None
    s_ref = np.clip(np.asarray(s_ref, np.float64), 1e-12, 1 - 1e-12)
    return float(np.mean(binary_ce_change(s_ref, target, eps)))


def expert_share(task) -> float:
    """Mean over prompts of the training set's share of right answers: the reward an SFT stage
    that reaches its data's law ends at (1 - eps in expectation; docs/theory.md [thm41.argmax])."""
    by_prompt: dict[str, list[float]] = {}
    for ex in task.train:
        by_prompt.setdefault(ex.prompt, []).append(float(ex.completion == ex.answer))
    return float(np.mean([np.mean(v) for v in by_prompt.values()]))


def coarse_target(start: dict, s_star) -> np.ndarray:
    """The fixed point's law over three cells per prompt, [X, 3]: (right answer, the expert's
    wrong answer, every other completion). Every fixed point above scales the unrewarded cells by
    one factor, (1 - s*) / (1 - s0), so their ratio stays that of the stage's start ``start``
    (an ``exact_eval.measure`` result)."""
    s0, w0 = np.asarray(start["s"], np.float64), np.exp(np.asarray(start["log_wrong"], np.float64))
    scale = (1 - np.asarray(s_star)) / np.maximum(1 - s0, 1e-300)
    return np.stack([np.asarray(s_star), w0 * scale, np.clip(1 - s0 - w0, 0, None) * scale], -1)


def coarse_kl(target: np.ndarray, now: dict) -> float:
    """Mean over prompts of KL(target || policy) over the three cells of ``coarse_target``: 0 at
    the fixed point; it also sees mass left on unlisted completions, which ``exact/target_gap``
    (the reward alone) does not."""
    s, w = np.asarray(now["s"], np.float64), np.exp(np.asarray(now["log_wrong"], np.float64))
    p = np.clip(np.stack([s, w, 1 - s - w], -1), 1e-12, None)
    t = np.clip(target, 1e-300, None)
    return float(np.mean(np.sum(np.where(target > 0, target * (np.log(t) - np.log(p)), 0), -1)))


def coarse_law(now: dict) -> np.ndarray:
    """A policy's law over the three cells of ``coarse_target``, [X, 3], from an
    ``exact_eval.measure`` result."""
    s, w = np.asarray(now["s"], np.float64), np.exp(np.asarray(now["log_wrong"], np.float64))
    return np.clip(np.stack([s, w, 1 - s - w], -1), 1e-12, None)


def _kl_cells(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.sum(np.where(a > 0, a * (np.log(np.clip(a, 1e-300, None)) - np.log(b)), 0), -1)


def coarse_objective(law: np.ndarray, ref_law: np.ndarray, beta: float) -> float:
    """J_beta = E_x [p(right | x) - beta KL(p(. | x) || ref(. | x))] over the three cells."""
    return float(np.mean(law[:, 0] - beta * _kl_cells(law, ref_law)))


def gibbs_drop(ref: dict, after_rl: dict, after_sft: dict, beta: float) -> dict:
    """[thm41.gibbs] for RL then SFT, on the three-cell law: with p* the Gibbs tilt of the RL
    reference, J_beta(p*) - J_beta(p) = beta KL(p || p*) for every p (the reward is constant on
    each cell, so the identity holds on the cells exactly). Predicted: SFT after an RL that reached
    p* lowers J_beta by beta KL(p_SFT || p*). Measured: J_beta(p_RL) - J_beta(p_SFT); the two differ
    by exactly beta KL(p_RL || p*), the distance RL itself stopped short of p*."""
    ref_law = coarse_law(ref)
    tilt = coarse_target(ref, binary_fixed_point(np.clip(ref["s"], 1e-12, 1 - 1e-12), beta,
                                                 kl="forward"))
    rl, sft = coarse_law(after_rl), coarse_law(after_sft)
    j_rl, j_sft = (coarse_objective(x, ref_law, beta) for x in (rl, sft))
    return {"j_beta_after_rl": j_rl, "j_beta_after_sft": j_sft, "j_drop": j_rl - j_sft,
            "j_drop_pred": float(beta * np.mean(_kl_cells(sft, tilt))),
            "kl_rl_to_tilt": float(np.mean(_kl_cells(rl, tilt)))}
