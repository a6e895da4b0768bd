"""Closed forms of docs/theory.md §3-§5 as small NumPy float64 functions (no sympy needed to call them).

Shapes: ``prompt_weights`` [X] (positive, sums to 1), ``expert``, ``reward``, ``reference``,
``sft_policy`` [X, Y] (rows are probability vectors over the Y responses; zeros allowed where
stated). Malformed input raises ``theory.errors.InputError`` naming the argument.

Log-sum-exp is taken over the support only, so deterministic experts and references with zeros
are exact, and large rewards/beta ratios do not overflow.
"""

from __future__ import annotations

import numpy as np

from theory.errors import InputError

_TOL = 1e-9


def _array(name: str, value, ndim: int) -> np.ndarray:
    arr = np.asarray(value, dtype=np.float64)
    if arr.ndim != ndim:
        raise InputError(f"{name}: expected {ndim} dimension(s), got shape {arr.shape}")
    if not np.all(np.isfinite(arr)):
        raise InputError(f"{name}: contains a non-finite value")
    return arr


def _distribution(name: str, value, ndim: int, positive: bool = False) -> np.ndarray:
    arr = _array(name, value, ndim)
    if np.any(arr < 0) or (positive and np.any(arr <= 0)):
        raise InputError(f"{name}: entries must be {'> 0' if positive else '>= 0'}")
    sums = arr.sum(axis=-1)
    if np.any(np.abs(sums - 1.0) > 1e-6):
        bad = np.flatnonzero(np.abs(np.atleast_1d(sums) - 1.0) > 1e-6)[0]
        where = f" (row {bad})" if ndim == 2 else ""
        raise InputError(f"{name}: probabilities must sum to 1{where}, got {np.atleast_1d(sums)[bad]:.6g}")
    return arr


def _beta(beta) -> float:
    b = float(beta)
    if not np.isfinite(b) or b <= 0:
        raise InputError(f"beta: must be a positive number, got {beta!r}")
    return b


def _check_shapes(**arrays) -> None:
    shapes = {k: v.shape for k, v in arrays.items()}
    first = next(iter(shapes.values()))
    for k, s in shapes.items():
        if s != first:
            raise InputError(f"{k}: shape {s} does not match {next(iter(shapes))} shape {first}")


def _log_mean_exp(weights: np.ndarray, values: np.ndarray) -> np.ndarray:
    """log sum_y w_y e^{v_y} per row, over the support of w (rows of [X, Y])."""
    logw = np.where(weights > 0, np.log(np.where(weights > 0, weights, 1.0)), -np.inf)
    z = logw + values
    top = np.max(z, axis=-1, keepdims=True)
    return top[..., 0] + np.log(np.sum(np.exp(z - top), axis=-1))


def _inputs(prompt_weights, expert, reward):
    q = _distribution("prompt_weights", prompt_weights, 1, positive=True)
    pd = _distribution("expert", expert, 2)
    r = _array("reward", reward, 2)
    _check_shapes(expert=pd, reward=r)
    if pd.shape[0] != q.shape[0]:
        raise InputError(f"prompt_weights: {q.shape[0]} prompts, but expert has {pd.shape[0]} rows")
    return q, pd, r


def regularized_optimum(reference, reward, beta) -> np.ndarray:
    """p*(y|x) = pi_ref(y|x) e^{r(x,y)/beta} / Z_beta(x)   (docs/theory.md §1). Returns [X, Y]."""
    ref = _distribution("reference", reference, 2)
    r = _array("reward", reward, 2)
    _check_shapes(reference=ref, reward=r)
    b = _beta(beta)
    log_z = _log_mean_exp(ref, r / b)
    with np.errstate(divide="ignore"):
        logp = np.log(ref) + r / b - log_z[:, None]
    return np.where(ref > 0, np.exp(logp), 0.0)


def sft_loss_change_after_rl(prompt_weights, expert, reward, beta, sft_policy) -> float:
    """thm31.identity: L(p_RL) - L(p_SFT) = E_x[log E_{p_SFT} e^{r/beta} - E_{p_D} r / beta].

    p_RL is the exact regularized optimum with reference p_SFT. Infinite if p_SFT misses part of
    the expert's support (the SFT loss itself is then infinite).
    """
    q, pd, r = _inputs(prompt_weights, expert, reward)
    s = _distribution("sft_policy", sft_policy, 2)
    _check_shapes(expert=pd, sft_policy=s)
    b = _beta(beta)
    if np.any((pd > 0) & (s == 0)):
        return float("inf")
    per_prompt = _log_mean_exp(s, r / b) - np.sum(pd * r, axis=-1) / b
    return float(np.dot(q, per_prompt))


def c1(prompt_weights, expert, reward, beta) -> float:
    """thm31.c1: C1(beta) = E_x[log Z_beta(x) - E_{p_D}[r]/beta], Z_beta = E_{p_D}[e^{r/beta}].

    The SFT-loss increase when exact regularized RL starts at the SFT optimum (reference = p_D);
    equal to E_x KL(p_D || p_RL) >= 0.
    """
    q, pd, r = _inputs(prompt_weights, expert, reward)
    b = _beta(beta)
    per_prompt = _log_mean_exp(pd, r / b) - np.sum(pd * r, axis=-1) / b
    return float(np.dot(q, per_prompt))


def c1_large_beta(prompt_weights, expert, reward, beta) -> float:
    """thm31.beta: E_x[Var_{p_D}(r)/(2 beta^2) + k3/(6 beta^3)], the large-beta expansion of C1."""
    q, pd, r = _inputs(prompt_weights, expert, reward)
    b = _beta(beta)
    centred = r - np.sum(pd * r, axis=-1, keepdims=True)
    var = np.sum(pd * centred ** 2, axis=-1)
    k3 = np.sum(pd * centred ** 3, axis=-1)
    return float(np.dot(q, var / (2 * b ** 2) + k3 / (6 * b ** 3)))


def c1_noisy_expert(eps, beta, n_wrong: int = 1) -> float:
    """C1 for one prompt whose expert is right with probability 1 - eps (reward 1) and otherwise
    gives one of ``n_wrong`` wrong answers (reward 0, probability eps/n_wrong each):

        C1 = log((1 - eps) e^{1/beta} + eps) - (1 - eps)/beta.

    It does not depend on n_wrong; it is 0 at eps = 0 and eps = 1 (reward constant on the support).
    """
    e = float(eps)
    if not 0.0 <= e <= 1.0:
        raise InputError(f"eps: must lie in [0, 1], got {eps!r}")
    if int(n_wrong) != n_wrong or n_wrong < 1:
        raise InputError(f"n_wrong: must be a positive integer, got {n_wrong!r}")
    n = int(n_wrong)
    expert = np.array([[1.0 - e] + [e / n] * n])
    reward = np.array([[1.0] + [0.0] * n])
    return c1([1.0], expert, reward, beta)


def kl_divergence(p, p_ref) -> np.ndarray:
    """KL(p || p_ref) per row of [X, Y] (inf where p puts mass outside supp p_ref)."""
    a = _distribution("p", p, 2)
    b = _distribution("p_ref", p_ref, 2)
    _check_shapes(p=a, p_ref=b)
    with np.errstate(divide="ignore", invalid="ignore"):
        terms = np.where(a > 0, a * (np.log(np.where(a > 0, a, 1.0)) - np.log(b)), 0.0)
    return np.sum(terms, axis=-1)


def optimal_rl_duration(mu, weight, smooth_l, smooth_j) -> float:
    """pl.duration [reconstructed]: T* = (1/mu) ln(1 + mu^2/(lambda_w L_s ell))."""
    values = {"mu": mu, "lambda_w": weight, "L_s": smooth_l, "ell": smooth_j}
    for name, v in values.items():
        if not float(v) > 0:
            raise InputError(f"{name}: must be > 0, got {v!r}")
    return float(np.log1p(mu ** 2 / (weight * smooth_l * smooth_j)) / mu)
