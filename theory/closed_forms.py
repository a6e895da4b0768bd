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


# ------------------------------------------------------------------ estimator fixed points (§6)
# docs/theory.md §6 [grpo.fixedpoint]: where sampled RL stops, per prompt, with exact expectations.
# Every function is vectorised over prompts: ``reference``/``reward`` are [Y] (one prompt) or [X, Y],
# ``beta`` a positive scalar or one value per prompt ([X]); the result has the shape of ``reference``.
# Derivations and checks: theory.fixed_points (sympy), toy_models.fixed_points (JAX trainers).

KL_KINDS = ("k2", "k1_reward", "k3")      # k2 loss / k1 in the reward: grad KL(p||ref); k3 loss: grad KL(ref||p)
BASELINES = ("rloo", "mean", "std")       # leave-one-out; group mean; (r - mean)/(std + std_floor), mean baseline


def _policy_inputs(reference, reward, beta):
    ref = np.asarray(reference, dtype=np.float64)
    if ref.ndim not in (1, 2):
        raise InputError(f"reference: expected [Y] or [X, Y], got shape {ref.shape}")
    ref = _distribution("reference", ref, ref.ndim)
    r = _array("reward", reward, ref.ndim)
    _check_shapes(reference=ref, reward=r)
    b = np.asarray(beta, dtype=np.float64)
    if not (b.ndim == 0 or (b.ndim == 1 and ref.ndim == 2 and b.shape[0] == ref.shape[0])):
        raise InputError(f"beta: expected a scalar or one value per prompt, got shape {b.shape}")
    if not np.all(np.isfinite(b)) or np.any(b <= 0):
        raise InputError(f"beta: must be positive and finite, got {beta!r}")
    b = np.broadcast_to(b, ref.shape[:-1]).astype(np.float64)
    return ref, r, b


def _group_size(group_size) -> int:
    if int(group_size) != group_size or group_size < 2:
        raise InputError(f"group_size: must be an integer >= 2, got {group_size!r}")
    return int(group_size)


def gibbs_tilt(reference, reward, beta) -> np.ndarray:
    """p*(y) = ref(y) e^{r(y)/beta} / Z: the fixed point of RLOO with the exact KL gradient
    (k2 as a loss, or k1 in the reward). [Y] or [X, Y]; ``beta`` scalar or [X]."""
    ref, r, b = _policy_inputs(reference, reward, beta)
    z = np.where(ref > 0, r / b[..., None], -np.inf)
    z = z - np.max(z, axis=-1, keepdims=True)
    w = np.where(ref > 0, ref * np.exp(z), 0.0)
    return w / np.sum(w, axis=-1, keepdims=True)


def group_mean_beta(beta, group_size):
    """beta G/(G - 1): the group-mean baseline scales the expected policy gradient by 1 - 1/G, so its
    fixed point is the exact one at this larger KL weight (works on scalars and arrays)."""
    g = _group_size(group_size)
    b = np.asarray(beta, dtype=np.float64)
    if not np.all(np.isfinite(b)) or np.any(b <= 0):
        raise InputError(f"beta: must be positive and finite, got {beta!r}")
    out = b * g / (g - 1)
    return float(out) if out.ndim == 0 else out


def group_mean_fixed_point(reference, reward, beta, group_size) -> np.ndarray:
    """Group-mean baseline + exact KL gradient: the Gibbs tilt at beta G/(G - 1)."""
    ref, r, b = _policy_inputs(reference, reward, beta)
    return gibbs_tilt(ref, r, group_mean_beta(b, group_size))


def k3_fixed_point(reference, reward, beta, iters: int = 200) -> np.ndarray:
    """k3 as a loss (unbiased baseline): the maximizer of J - beta KL(ref || p),

        p_y = beta ref_y / (beta + J - r_y),   J = E_p r.

    J is found by bisection: h(J) = sum_y beta ref_y/(beta + J - r_y) decreases from +inf at
    J = r_max - beta to h(r_max) <= 1 (r_max over supp ref), and h(J) = 1 forces J = E_p r. Zero
    reference probabilities stay zero.
    """
    ref, r, b = _policy_inputs(reference, reward, beta)
    rs = np.where(ref > 0, r, -np.inf)
    rmax = np.max(rs, axis=-1)
    lo, hi = rmax - b, rmax.copy()
    bb = b[..., None]

    def mass(jv):
        den = np.where(ref > 0, bb + jv[..., None] - r, 1.0)
        return np.sum(np.where(ref > 0, bb * ref / den, 0.0), axis=-1)

    for _ in range(int(iters)):
        mid = 0.5 * (lo + hi)
        too_small = mass(mid) > 1.0      # J below the root: the weights sum to more than 1
        lo, hi = np.where(too_small, mid, lo), np.where(too_small, hi, mid)
    jv = 0.5 * (lo + hi)
    den = np.where(ref > 0, bb + jv[..., None] - r, 1.0)
    p = np.where(ref > 0, bb * ref / den, 0.0)
    return p / np.sum(p, axis=-1, keepdims=True)


def std_division_multiplier(s, group_size, ddof: int = 1, std_floor: float = 1e-4) -> np.ndarray:
    """m(s) = E[A_i | r_i = 1] - E[A_i | r_i = 0] for A_i = (r_i - mean)/(std + std_floor) over a group of
    G binary rewards with success probability s (std with ``ddof``, as TRL's GRPO: ddof=1).

    Exact: sums over the binomial number K of successes among the other G - 1 samples. Given r_i, A_i
    depends on y_i through r_i only, so E[A_i grad log p(y_i)] = m(s) grad s = m(s) grad J.
    """
    g = _group_size(group_size)
    if ddof not in (0, 1):
        raise InputError(f"ddof: must be 0 or 1, got {ddof!r}")
    if not float(std_floor) >= 0:
        raise InputError(f"std_floor: must be >= 0, got {std_floor!r}")
    s = _array("s", s, np.ndim(s))
    if np.any((s < 0) | (s > 1)):
        raise InputError("s: success probabilities must lie in [0, 1]")
    from math import comb

    def adv(k_total: int, own: int) -> float:
        mean = k_total / g
        sd = np.sqrt(k_total * (g - k_total) / g / (g - ddof))
        denom = sd + std_floor
        return 0.0 if denom == 0 else (own - mean) / denom

    out = np.zeros_like(s)
    for k in range(g):   # successes among the other G - 1
        weight = comb(g - 1, k) * s ** k * (1 - s) ** (g - 1 - k)
        out = out + weight * (adv(k + 1, 1) - adv(k, 0))
    return out


def std_division_fixed_point(s_ref, group_size, beta, kl: str = "k2", ddof: int = 1,
                             std_floor: float = 1e-4, grid: int = 2048) -> np.ndarray:
    """Success probability s* where GRPO with std-divided advantages stops, per prompt (binary reward).

    The expected update of a prompt is m(s) grad J - beta grad KL, i.e. an effective KL weight
    beta' = beta/m(s). Stationarity, in the logit u = log(s/(1-s)) of the success set:

    - ``kl`` = "k2" or "k1_reward" (grad KL(p||ref)): s = tilt(s_ref, beta/m(s)), i.e.
      m(s) = beta (u - u_ref);
    - ``kl`` = "k3" (grad KL(ref||p)): the k3 form with beta', i.e. m(s) s (1 - s) = beta (s - s_ref).

    Returns the first root above s_ref (the one the flow from the reference reaches: the residual is
    > 0 at s_ref), found by a grid scan in u then bisection. s_ref in {0, 1} is returned unchanged.
    ``s_ref`` and ``beta`` broadcast against each other.
    """
    if kl not in KL_KINDS:
        raise InputError(f"kl: choose one of {KL_KINDS}, got {kl!r}")
    g = _group_size(group_size)
    s_ref = _array("s_ref", s_ref, np.ndim(s_ref))
    if np.any((s_ref < 0) | (s_ref > 1)):
        raise InputError("s_ref: success probabilities must lie in [0, 1]")
    b = np.asarray(beta, dtype=np.float64)
    if not np.all(np.isfinite(b)) or np.any(b <= 0):
        raise InputError(f"beta: must be positive and finite, got {beta!r}")
    s_ref, b = np.broadcast_arrays(s_ref, b)
    inner = (s_ref > 0) & (s_ref < 1)
    sr = np.where(inner, s_ref, 0.5)
    u_ref = np.log(sr) - np.log1p(-sr)
    m_max = 2.0 * g   # |A_i| <= sqrt(G), so m <= 2G

    def residual(u):
        s = 1.0 / (1.0 + np.exp(-u))
        m = std_division_multiplier(s, g, ddof, std_floor)
        if kl == "k3":
            return m * s * (1 - s) - b_ * (s - sr_)
        return m - b_ * (u - ur_)

    span = np.where(kl == "k3", np.log(m_max / (b * (1 - sr)) + 1.0) + np.abs(u_ref) + 4.0, m_max / b + 1.0)
    steps = np.linspace(0.0, 1.0, grid + 1)
    us = u_ref[..., None] + span[..., None] * steps                       # [..., grid+1]
    b_, sr_, ur_ = b[..., None], sr[..., None], u_ref[..., None]
    res = residual(us)
    below = res <= 0
    first = np.argmax(below, axis=-1)                                       # first grid point with res <= 0
    if not np.all(np.any(below, axis=-1) | ~inner):
        raise InputError("std_division_fixed_point: no root found on the scanned range")
    first = np.maximum(first, 1)
    lo = np.take_along_axis(us, (first - 1)[..., None], -1)[..., 0]
    hi = np.take_along_axis(us, first[..., None], -1)[..., 0]
    b_, sr_, ur_ = b, sr, u_ref
    for _ in range(100):
        mid = 0.5 * (lo + hi)
        pos = residual(mid) > 0
        lo, hi = np.where(pos, mid, lo), np.where(pos, hi, mid)
    s_star = 1.0 / (1.0 + np.exp(-0.5 * (lo + hi)))
    return np.where(inner, s_star, s_ref)


def binary_rescale(reference, reward, s_new) -> np.ndarray:
    """The policy that keeps ref's shape inside the rewarded set {r = 1} and the unrewarded set, with
    success probability ``s_new`` per prompt ([X] or scalar): every fixed point above has this form
    for a binary reward."""
    ref = np.asarray(reference, dtype=np.float64)
    ref = _distribution("reference", ref, ref.ndim)
    r = _array("reward", reward, ref.ndim)
    _check_shapes(reference=ref, reward=r)
    if not np.all((r == 0) | (r == 1)):
        raise InputError("reward: a binary reward must be 0 or 1")
    s_ref = np.sum(ref * r, axis=-1, keepdims=True)
    s_new = np.asarray(s_new, dtype=np.float64)[..., None] if np.ndim(s_new) else float(s_new)
    with np.errstate(divide="ignore", invalid="ignore"):
        up = np.where(s_ref > 0, s_new / s_ref, 0.0)
        down = np.where(s_ref < 1, (1 - s_new) / (1 - s_ref), 0.0)
    return ref * np.where(r == 1, up, down)


def estimator_fixed_point(reference, reward, beta, group_size, baseline: str = "rloo", kl: str = "k2",
                          ddof: int = 1, std_floor: float = 1e-4) -> np.ndarray:
    """The policy where sampled RL with this estimator stops, per prompt (docs/theory.md §6):

    ============  =================  ======================================================
    baseline      kl                 fixed point
    ============  =================  ======================================================
    rloo          k2 / k1_reward     gibbs_tilt(ref, r, beta)
    mean          k2 / k1_reward     gibbs_tilt(ref, r, beta G/(G-1))
    rloo          k3                 k3_fixed_point(ref, r, beta)
    mean          k3                 k3_fixed_point(ref, r, beta G/(G-1))
    std           any                binary reward only: success rate from std_division_fixed_point
    ============  =================  ======================================================
    """
    if baseline not in BASELINES:
        raise InputError(f"baseline: choose one of {BASELINES}, got {baseline!r}")
    if kl not in KL_KINDS:
        raise InputError(f"kl: choose one of {KL_KINDS}, got {kl!r}")
    ref, r, b = _policy_inputs(reference, reward, beta)
    g = _group_size(group_size)
    if baseline == "std":
        s_ref = np.sum(ref * r, axis=-1)
        if not np.all((r == 0) | (r == 1)):
            raise InputError("reward: std division is characterised for binary rewards (0 or 1) only")
        return binary_rescale(ref, r, std_division_fixed_point(s_ref, g, b, kl, ddof, std_floor))
    eff = b if baseline == "rloo" else group_mean_beta(b, g)
    return k3_fixed_point(ref, r, eff) if kl == "k3" else gibbs_tilt(ref, r, eff)


# --------------------------------------------------------------------------- binary rewards
# docs/theory.md §6 [grpo.fixedpoint] for a reward in {0, 1}: a policy is summarized per prompt by
# s = p(reward = 1). Every fixed point below rescales all rewarded responses by one factor and all
# unrewarded ones by another, so s alone determines it, and the SFT-loss change follows from s.


def binary_advantage_multiplier(s, group_size: int, *, baseline: str = "mean",
                                std_normalize: bool = False, ddof: int = 1,
                                std_floor: float = 1e-4) -> np.ndarray:
    """m(s) = E[A_i | r_i = 1] - E[A_i | r_i = 0] for G binary rewards with success rate s.

    Given r_i, the response y_i is independent of the other rewards, so
    E[A_i grad log p(y_i)] = (E[A_i | r_i=1] - E[A_i | r_i=0]) grad s = m(s) grad J: a sampled
    update moves like m(s) times the policy gradient. Computed exactly by summing over the
    binomial number k of successes among the other G - 1 samples. m = 1 for the leave-one-out
    baseline, 1 - 1/G for the group mean; with std division it depends on s.
    """
    from math import comb

    s = np.asarray(s, dtype=np.float64)
    g = int(group_size)
    if g < 2:
        raise InputError(f"group_size: must be >= 2, got {group_size!r}")
    if baseline not in ("mean", "loo"):
        raise InputError(f"baseline: choose 'mean' or 'loo', got {baseline!r}")
    if np.any((s < 0) | (s > 1)):
        raise InputError("s: success rates must lie in [0, 1]")
    total = np.zeros_like(s)
    for k in range(g):  # successes among the other G - 1 samples
        w = comb(g - 1, k) * s ** k * (1 - s) ** (g - 1 - k)
        diff = 0.0
        for ri in (1, 0):
            n1 = k + ri
            others_mean = k / (g - 1)
            base = n1 / g if baseline == "mean" else others_mean
            a = ri - base
            if std_normalize:
                mean = n1 / g
                var = (n1 * (1 - mean) ** 2 + (g - n1) * mean ** 2) / (g - ddof)
                a = a / (np.sqrt(var) + std_floor)
            diff = diff + (a if ri == 1 else -a)
        total = total + w * diff
    return total


def _bisect(residual, lo, hi, iters: int = 200) -> np.ndarray:
    """Vectorized bisection for residual(lo) < 0 < residual(hi)."""
    lo, hi = np.array(lo, dtype=np.float64), np.array(hi, dtype=np.float64)
    for _ in range(iters):
        mid = 0.5 * (lo + hi)
        neg = residual(mid) < 0
        lo, hi = np.where(neg, mid, lo), np.where(neg, hi, mid)
    return 0.5 * (lo + hi)


def binary_fixed_point(s_ref, beta, *, kl: str = "forward", multiplier=None) -> np.ndarray:
    """The success rate s at which sampled RL with binary reward stops, per prompt.

    Stationarity of m(s) * grad J - beta * grad KL in the logits, with m(s) the advantage multiplier
    (a callable; None means m = 1):

    - ``kl="forward"`` (grad KL(p || ref): k1 in the reward, k2): the Gibbs tilt at beta / m(s),
      beta (logit s - logit s_ref) = m(s);
    - ``kl="reverse"`` (grad KL(ref || p): k3 in the loss): p_y = beta' ref_y / (beta' + J - r_y)
      with beta' = beta / m(s), i.e. beta (s - s_ref) = m(s) s (1 - s).

    With m constant, the forward case is the tilt s* = s_ref e^{m/beta} / (s_ref e^{m/beta} + 1 - s_ref)
    and the reverse case has the root s = ((1 - beta') + sqrt((1 - beta')^2 + 4 beta' s_ref)) / 2.
    """
    s_ref = np.asarray(s_ref, dtype=np.float64)
    b = _beta(beta)
    if np.any((s_ref <= 0) | (s_ref >= 1)):
        raise InputError("s_ref: success rates must lie strictly between 0 and 1")
    m = (lambda s: np.ones_like(s)) if multiplier is None else multiplier
    if kl == "forward":
        logit = lambda x: np.log(x) - np.log1p(-x)  # noqa: E731
        residual = lambda s: b * (logit(s) - logit(s_ref)) - m(s)  # noqa: E731
    elif kl == "reverse":
        residual = lambda s: b * (s - s_ref) - m(s) * s * (1 - s)  # noqa: E731
    else:
        raise InputError(f"kl: choose 'forward' or 'reverse', got {kl!r}")
    return _bisect(residual, s_ref, np.nextafter(np.ones_like(s_ref), 0))


def binary_ce_change(s_ref, s_new, eps) -> np.ndarray:
    """Change of -(1-eps) log p(right) - eps log p(wrong) when every rewarded response is rescaled
    by s_new / s_ref and every unrewarded one by (1 - s_new) / (1 - s_ref), per prompt."""
    s_ref, s_new = np.asarray(s_ref, np.float64), np.asarray(s_new, np.float64)
    e = float(eps)
    return -(1 - e) * (np.log(s_new) - np.log(s_ref)) - e * (np.log1p(-s_new) - np.log1p(-s_ref))
