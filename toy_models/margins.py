"""One margin function per claim of docs/theory.md: margin(case) ≥ 0 iff the claim holds on that case.

A *case* is a tabular ``Instance`` for the claims of §2–§4 and §6, and a ``LandscapeCase`` for the
[reconstructed] landscape claims of §5. Margins are pure, scalar and differentiable almost
everywhere, so the numeric checks ``jax.vmap`` them over batches of random and edge-case instances,
and ``explore`` maximizes −margin by random search and gradient descent to hunt for violations.

Margins are scaled so that a violation is a negative number well above round-off:
identities compare |a − b| with an absolute-plus-relative tolerance; inequalities compare the two
sides with ``TOL`` slack; local expansions extract the Taylor coefficient by Richardson
extrapolation of f(η)/η^k at η = h, h/2 and compare it with the closed form.

The [refuted] ``thm41.paper`` margin is J(p*) − J(p after SFT) for an SFT stage that moves the
policy (E KL > 0, so a band a ≤ E KL ≤ A containing it exists): the paper says it is > 0.
"""

from __future__ import annotations

import dataclasses
import itertools
from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from toy_models import coupling_rl_sft as rls
from toy_models import coupling_sft_rl as srl
from toy_models import estimators as est
from toy_models import fixed_points as _fp
from toy_models import landscape as land
from toy_models import objectives as obj
from toy_models import repaired_checks as _repaired
from toy_models.instance import Instance, random_batch
from toy_models.tabular import fisher, variance

TOL = 1e-9  # slack for identities and inequalities (float64 round-off is ~1e-15 here)
LOCAL_H = 1e-3  # base step of the Richardson extrapolation of local expansions
SFT_STEPS = (0.1, 0.5, 1.0)  # the SFT step sizes of thm41.paper (the README's default)
STRICT = 1e-12  # a raw-reward drop below this is no strict drop (round-off level)
GROUP = 3  # group size of the exact (enumerated) estimator expectations


def _identity(a, b, rtol=1e-9):
    """TOL + rtol(|a| + |b|) − |a − b|; equal infinities (e.g. KL to a reference with zeros) agree."""
    diff = jnp.where(a == b, 0.0, jnp.abs(a - b))
    return TOL + rtol * jnp.where(jnp.isfinite(a + b), jnp.abs(a) + jnp.abs(b), 0.0) - diff


def _richardson(f: Callable, order: int, h: float = LOCAL_H):
    """lim_{η→0} f(η)/η^order from η = h and h/2 (error O(h²))."""
    a1, a2 = f(h) / h**order, f(h / 2) / (h / 2) ** order
    return 2 * a2 - a1


def _reward_range(inst: Instance):
    return jnp.max(inst.reward) - jnp.min(inst.reward)


# ---------------------------------------------------------------------------------------- §2


def softmax_fisher(inst: Instance):
    """∇L = q(p − p_D) and ∇²L = q F by autodiff at θ = log p_SFT; vᵀFv = Var_p(v) ≥ 0."""
    theta = jnp.log(inst.sft_policy)
    loss = lambda th: obj.sft_loss(jax.nn.log_softmax(th, -1), inst.q, inst.expert)
    p = inst.sft_policy
    grad_err = jnp.max(jnp.abs(jax.grad(loss)(theta) - inst.q[:, None] * (p - inst.expert)))
    hess = jax.hessian(loss)(theta)  # [X, Y, X, Y]
    x = jnp.arange(inst.q.shape[0])
    blocks = hess[x, :, x, :]  # diagonal blocks
    off_diag = jnp.sum(jnp.abs(hess)) - jnp.sum(jnp.abs(blocks))
    hess_err = jnp.max(jnp.abs(blocks - inst.q[:, None, None] * fisher(p)))
    v = inst.reward
    quad = jnp.einsum("xy,xyz,xz->x", v, fisher(p), v)
    var_err = jnp.max(jnp.abs(quad - variance(p, v)))
    return jnp.min(jnp.stack([TOL - grad_err, TOL - hess_err, TOL - jnp.abs(off_diag), TOL - var_err,
                              jnp.min(quad) + TOL]))


def softmax_pg(inst: Instance):
    """∇_θ J = q F r by autodiff at θ = log p_SFT."""
    theta = jnp.log(inst.sft_policy)
    grad = jax.grad(lambda th: obj.raw_reward(jax.nn.log_softmax(th, -1), inst.q, inst.reward))(theta)
    closed = srl.policy_gradient_direction(inst.q, inst.sft_policy, inst.reward)
    return TOL - jnp.max(jnp.abs(grad - closed))


# ---------------------------------------------------------------------------------------- §3


def thm31_identity(inst: Instance):
    """L(p_RL) − L(p_SFT) measured (p_RL the optimum with reference p_SFT) = the closed form."""
    log_sft = jnp.log(inst.sft_policy)
    log_rl = srl.rl_optimum_from(log_sft, inst)
    measured = obj.sft_loss(log_rl, inst.q, inst.expert) - obj.sft_loss(log_sft, inst.q, inst.expert)
    return _identity(measured, srl.sft_loss_change_identity(inst))


def thm31_c1(inst: Instance):
    """C1 (closed form) = E KL(p_D ‖ p_RL) = measured L(p_RL) − L(p_D) ≥ 0."""
    c1 = srl.c1_closed_form(inst)
    log_d = jnp.log(inst.expert)
    measured = obj.sft_loss(srl.rl_optimum_from(log_d, inst), inst.q, inst.expert) - obj.sft_loss(
        log_d, inst.q, inst.expert)
    return jnp.min(jnp.stack([_identity(c1, srl.c1_as_kl(inst)), _identity(c1, measured), c1 + TOL]))


def thm31_beta(inst: Instance):
    """C1 decreasing in β; its large-β series (error ≤ (Δr/β)⁴/100 at β = 10Δr); its small-β
    asymptote (error ≤ E_x Σ_{y∉A} p_D(y) e^{(r_y − r*)/β} / p_D(A), by log(1 + u) ≤ u)."""
    c1 = lambda b: srl.c1_closed_form(dataclasses.replace(inst, beta=b))
    monotone = c1(inst.beta) - c1(1.25 * inst.beta) + TOL
    d_r = _reward_range(inst)
    big = 10 * jnp.maximum(d_r, 1e-3)
    inst_big = dataclasses.replace(inst, beta=big)
    series = (d_r / big) ** 4 / 100 + TOL - jnp.abs(c1(big) - srl.c1_large_beta_series(inst_big))
    on = inst.expert > 0
    r_star = jnp.max(jnp.where(on, inst.reward, -jnp.inf), axis=-1, keepdims=True)
    in_a = on & (inst.reward >= r_star)
    tail = jnp.sum(jnp.where(on & ~in_a, inst.expert * jnp.exp((inst.reward - r_star) / inst.beta), 0.0), -1)
    mass_a = jnp.sum(jnp.where(in_a, inst.expert, 0.0), -1)
    small_err = c1(inst.beta) - srl.c1_small_beta_asymptote(inst)
    small = jnp.sum(inst.q * tail / mass_a) * (1 + 1e-9) + TOL - jnp.abs(small_err)
    return jnp.min(jnp.stack([monotone, series, small, small_err + TOL]))


def thm31_local(inst: Instance):
    """lim (L(θ* + ηd) − L*)/η² = ½ Σ q Var_{p_D}(d) for d the policy gradient at θ* = log p_D;
    and L(θ* + ηd) ≥ L* at every step (θ* is the global minimizer)."""
    log_d = jnp.log(inst.expert)
    d = srl.policy_gradient_direction(inst.q, inst.expert, inst.reward)
    excess = lambda eta: (obj.sft_loss(jax.nn.log_softmax(log_d + eta * d, -1), inst.q, inst.expert)
                          - obj.sft_loss(log_d, inst.q, inst.expert))
    coef = _richardson(excess, 2)
    closed = srl.local_sft_increase(inst.q, inst.expert, d, 1.0)
    scale = jnp.sum(inst.q * jnp.max(jnp.abs(d), -1) ** 2)
    sign = jnp.min(jnp.stack([excess(e) for e in (1e-2, 0.3, 3.0)]))
    roundoff = 1e-14 * (1 + obj.sft_loss(log_d, inst.q, inst.expert)) / LOCAL_H**2
    return jnp.minimum(1e-3 * jnp.abs(closed) + 1e-5 * scale + roundoff - jnp.abs(coef - closed),
                       sign + TOL)


def threshold_kl(inst: Instance):
    """RL lowers L iff E E_{p_D} r/β > E log E_{p_SFT} e^{r/β} iff E KL(p_D‖p_RL) < E KL(p_D‖p_SFT):
    the measured change equals right − left and the KL difference; at β = 10Δr the large-β form
    β·(left − right) ≈ (E_D r − E_SFT r) − Var_SFT r/(2β) is within Δr³/(36√3 β²): the Lagrange
    remainder of the cumulant series, a third central moment over 6β², and a distribution on an
    interval of length Δr has one of at most Δr³/(6√3). That pins the variance term: half or 0.9 of
    it breaks the bound."""
    log_sft = jnp.log(inst.sft_policy)
    log_rl = srl.rl_optimum_from(log_sft, inst)
    change = obj.sft_loss(log_rl, inst.q, inst.expert) - obj.sft_loss(log_sft, inst.q, inst.expert)
    left, right = srl.threshold_sides(inst)
    log_d = jnp.log(inst.expert)
    kl_diff = obj.kl(log_d, log_rl, inst.q) - obj.kl(log_d, log_sft, inst.q)
    d_r = _reward_range(inst)
    big = 10 * jnp.maximum(d_r, 1e-3)
    inst_big = dataclasses.replace(inst, beta=big)
    l_big, r_big = srl.threshold_sides(inst_big)
    gap, var_term = srl.threshold_large_beta_sides(inst_big)
    large = d_r ** 3 / (36 * jnp.sqrt(3.0) * big ** 2) + TOL - jnp.abs(big * (l_big - r_big)
                                                                    - (gap - var_term))
    return jnp.min(jnp.stack([_identity(change, right - left), _identity(change, kl_diff), large]))


# ---------------------------------------------------------------------------------------- §4


def thm41_gibbs(inst: Instance):
    """J_β(p*) − J_β(p) = β E KL(p ‖ p*) for p = p_SFT and for p after an SFT step from p*."""
    gaps = [rls.gibbs_gap(jnp.log(inst.sft_policy), inst),
            rls.gibbs_gap(rls.sft_step_from_optimum(inst, 0.7), inst)]
    return jnp.min(jnp.stack([jnp.minimum(_identity(g, b), g + TOL) for g, b in gaps]))


def thm41_local(inst: Instance):
    """Second-order ΔJ_β and first-order ΔJ of one SFT step from θ* against the closed forms."""
    log_star = rls.rl_optimum(inst)
    j_beta0, j0 = rls.objective(log_star, inst), obj.raw_reward(log_star, inst.q, inst.reward)
    d_obj = lambda eta: rls.objective(rls.sft_step_from_optimum(inst, eta), inst) - j_beta0
    d_rew = lambda eta: obj.raw_reward(rls.sft_step_from_optimum(inst, eta), inst.q, inst.reward) - j0
    c_obj, c_rew = rls.local_sft_changes(inst, 1.0)
    scale = inst.beta + _reward_range(inst) + 1.0
    m_obj = 1e-3 * jnp.abs(c_obj) + 1e-6 * scale - jnp.abs(_richardson(d_obj, 2) - c_obj)
    m_rew = 1e-3 * jnp.abs(c_rew) + 1e-6 * scale - jnp.abs(_richardson(d_rew, 1) - c_rew)
    return jnp.min(jnp.stack([m_obj, m_rew, -d_obj(0.5) + TOL]))


def thm41_argmax(inst: Instance):
    """J(p_RL) − J(p_D) ≥ E[δ(1 − p_D(A))] ≥ 0 (p_RL the unregularized optimum)."""
    gap, bound = rls.argmax_gap_and_bound(inst)
    return jnp.minimum(gap - bound + TOL, bound + TOL)


def thm41_pinsker(inst: Instance):
    """|J(p) − J(p')| ≤ Δr E TV ≤ Δr sqrt(E KL/2), for (p_SFT, p*) and (SFT step, p*)."""
    log_star = rls.rl_optimum(inst)
    margins = []
    for logp in (jnp.log(inst.sft_policy), rls.sft_step_from_optimum(inst, 1.0)):
        d_j, tv_b, kl_b = rls.pinsker_chain(logp, log_star, inst)
        margins += [tv_b - d_j + TOL, kl_b - tv_b + TOL]
    return jnp.min(jnp.stack(margins))


def thm41_paper(inst: Instance):
    """[refuted] The paper: an SFT stage that moves p* (E KL > 0) strictly lowers J. Margin:
    min over the SFT step sizes of J(p*) − J(p_η) (negative = counterexample), +1 where E KL ≈ 0."""
    log_star = rls.rl_optimum(inst)
    j_star = obj.raw_reward(log_star, inst.q, inst.reward)
    out = []
    for eta in SFT_STEPS:
        logp = rls.sft_step_from_optimum(inst, eta)
        moved = obj.kl(logp, log_star, inst.q) > 1e-12
        drop = j_star - obj.raw_reward(logp, inst.q, inst.reward) - STRICT
        out.append(jnp.where(moved, drop, 1.0))
    return jnp.min(jnp.stack(out))


# ---------------------------------------------------------------------------------------- §6


def _score(p: jax.Array, y: jax.Array) -> jax.Array:
    """∇_{θ_x} log p(y|x) = e_y − p, for tabular θ: ``p[Y]``, ``y[...]`` -> ``[..., Y]``."""
    return jax.nn.one_hot(y, p.shape[-1], dtype=p.dtype) - p


def exact_estimator_mean(p: jax.Array, r: jax.Array, kind: str, group: int) -> jax.Array:
    """E[(1/G) Σ_i A_i ∇log p(y_i)] for one prompt, by enumerating all Y^G groups."""
    num_y = p.shape[-1]
    groups = jnp.asarray(np.array(list(itertools.product(range(num_y), repeat=group))), jnp.int32)
    prob = jnp.prod(p[groups], axis=-1)  # [Y^G]
    adv = est.advantages(r[groups], kind)  # [Y^G, G]
    grad = jnp.mean(adv[..., None] * _score(p, groups), axis=1)  # [Y^G, Y]
    return jnp.sum(prob[:, None] * grad, axis=0)


def grpo_baseline(inst: Instance):
    """Group-mean baseline: E = (1 − 1/G) ∇J (per prompt, ∇J/q = F r); RLOO and REINFORCE: E = ∇J."""
    p, r = inst.sft_policy, inst.reward
    exact = p * (r - jnp.sum(p * r, -1, keepdims=True))  # F r per prompt
    margins = []
    for kind, factor in (("mean", 1 - 1 / GROUP), ("rloo", 1.0), ("none", 1.0)):
        mean = jax.vmap(lambda pp, rr: exact_estimator_mean(pp, rr, kind, GROUP))(p, r)
        margins.append(TOL - jnp.max(jnp.abs(mean - factor * exact)))
    return jnp.min(jnp.stack(margins))


def grpo_onpolicy(inst: Instance):
    """One inner iteration (ratio ≡ 1), no KL: ∇(clipped surrogate) = ∇(advantage-weighted log-lik)."""
    theta = jnp.log(inst.sft_policy)
    cfg = est.EstimatorConfig(group_size=4, advantage="grpo", clip_low=0.2, beta=0.0)
    # any responses will do: take the policy's quantiles at fixed levels (no PRNG to compile).
    levels = (jnp.arange(cfg.group_size) + 0.5) / cfg.group_size
    ys = jax.vmap(lambda c: jnp.searchsorted(c, levels * c[-1], method="compare_all"))(
        jnp.cumsum(inst.sft_policy, -1))
    ys = jnp.minimum(ys, inst.sft_policy.shape[-1] - 1)
    rewards = jnp.take_along_axis(inst.reward, ys, axis=-1)
    adv = est.advantages(rewards, "grpo", cfg.std_floor)
    g_clip = jax.grad(lambda th: est.surrogate(jax.nn.log_softmax(th, -1), ys, rewards, inst.q, theta, cfg))(theta)
    g_ll = jax.grad(lambda th: est.weighted_loglik(jax.nn.log_softmax(th, -1), ys, adv, inst.q))(theta)
    return TOL * (1 + jnp.max(jnp.abs(g_ll))) - jnp.max(jnp.abs(g_clip - g_ll))


def kl_k3(inst: Instance):
    """k3 ≥ 0 pointwise; E_p k3 = E_p k1 = KL(p ‖ ref) exactly (enumerated), p = p_SFT, ref = π_ref."""
    logp, log_ref = jnp.log(inst.sft_policy), jnp.log(inst.reference)
    k1, k3 = est.kl_estimate(logp, log_ref, "k1"), est.kl_estimate(logp, log_ref, "k3")
    kl_rows = obj.kl_rows(logp, log_ref)
    p = inst.sft_policy
    mean_k3 = jnp.sum(jnp.where(p > 0, p * k3, 0.0), -1)
    mean_k1 = jnp.sum(jnp.where(p > 0, p * k1, 0.0), -1)
    return jnp.min(jnp.stack([jnp.min(jnp.where(p > 0, k3, 0.0)) + TOL,
                              jnp.min(_identity(mean_k3, kl_rows)), jnp.min(_identity(mean_k1, kl_rows))]))


# ---------------------------------------------------------------------------------------- §5


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class LandscapeCase:
    quad: land.Quadratic
    t: jax.Array  # RL duration T
    eta: jax.Array  # an RL step size
    weight: jax.Array  # λ_w of pl.duration
    offset: jax.Array  # [D] a point θ₀ + offset away from the SFT optimum
    direction: jax.Array  # [D] a displacement δ / step direction g


def random_landscape_cases(rng: np.random.Generator, batch: int, dim: int = 4) -> LandscapeCase:
    """Random quadratic landscapes (A, B = MMᵀ/D + 0.05 I: J is μ-PL and L is μ_L-PL), a, θ₀,
    offsets and directions standard normal, T ∈ [e⁻³, e²], η ∈ [e⁻⁴, 1], λ_w ∈ [e⁻³, e]."""
    def spd():
        m = rng.standard_normal((batch, dim, dim))
        return m @ np.swapaxes(m, -1, -2) / dim + 0.05 * np.eye(dim)

    normal = lambda: jnp.asarray(rng.standard_normal((batch, dim)))
    loguni = lambda lo, hi: jnp.asarray(np.exp(rng.uniform(lo, hi, batch)))
    quad = land.Quadratic(a=normal(), A=jnp.asarray(spd()), theta0=normal(), B=jnp.asarray(spd()))
    return LandscapeCase(quad=quad, t=loguni(-3.0, 2.0), eta=loguni(-4.0, 0.0), weight=loguni(-3.0, 1.0),
                         offset=normal(), direction=normal())


def _flow(case: LandscapeCase):
    quad = case.quad
    return quad, quad.flow(case.t), quad.mu, quad.ell, quad.smooth_sft, quad.delta0


def pl_rate(case: LandscapeCase):
    quad, theta_t, mu, _, _, d0 = _flow(case)
    return land.rate_bound(mu, d0, case.t) * (1 + 1e-9) + TOL - (-quad.reward(theta_t))


def pl_displacement(case: LandscapeCase):
    quad, theta_t, mu, ell, _, d0 = _flow(case)
    return land.displacement_bound(mu, ell, d0, case.t) * (1 + 1e-9) + TOL - jnp.linalg.norm(theta_t - quad.theta0)


def pl_degradation(case: LandscapeCase):
    quad, theta_t, mu, ell, ls, d0 = _flow(case)
    return land.degradation_bound(mu, ell, ls, d0, case.t) * (1 + 1e-9) + TOL - quad.sft_excess(theta_t)


def pl_duration(case: LandscapeCase):
    """T* maximizes the trade-off: its value beats T and its derivative vanishes there."""
    _, _, mu, ell, ls, d0 = _flow(case)
    f = lambda t: land.tradeoff(mu, ell, ls, d0, case.weight, t)
    t_star = land.optimal_duration(mu, ell, ls, case.weight)
    slope = jax.grad(f)(t_star)
    return jnp.minimum(f(t_star) - f(case.t) + TOL * (1 + d0), TOL * 1e3 * (1 + d0) - jnp.abs(slope))


def pl_threshold(case: LandscapeCase):
    """At θ = θ₀ + offset: cos φ above the threshold ⇒ the step θ + η∇J lowers L; the PL
    condition ⇒ the cosine condition; at θ₀ (∇L = 0) no step lowers L."""
    quad = case.quad
    theta = quad.theta0 + case.offset
    g_j = jax.grad(quad.reward)(theta)
    g_l = jax.grad(quad.sft_excess)(theta)
    cos_phi = land.cosine(-g_l, g_j)
    ls = quad.smooth_sft
    mu_l = jnp.linalg.eigvalsh(quad.B)[0]
    thr = land.step_threshold(cos_phi, ls, case.eta, jnp.linalg.norm(g_j), jnp.linalg.norm(g_l))
    drop = quad.sft_excess(theta) - quad.sft_excess(theta + case.eta * g_j)
    guaranteed = jnp.where(cos_phi > thr, drop + TOL, 1.0)
    pl_suff = (cos_phi > 0) & (quad.sft_excess(theta) > land.step_threshold_pl(
        cos_phi, ls, case.eta, jnp.linalg.norm(g_j), mu_l))
    implies = jnp.where(pl_suff, cos_phi - thr + TOL, 1.0)
    at_opt = quad.sft_excess(quad.theta0 + case.eta * case.direction) + TOL
    return jnp.min(jnp.stack([guaranteed, implies, at_opt]))


def spectral_kantorovich(case: LandscapeCase):
    h = case.quad.B
    lam = jnp.linalg.eigvalsh(h)
    d = case.direction
    return land.cosine(d, h @ d) - land.kantorovich_bound(lam[-1] / lam[0]) + TOL


def spectral_topk(case: LandscapeCase):
    """L(θ₀ + ηg) − L* ≥ (η²/2) λ_k ρ ‖g‖² for k = 1..D (exact on the quadratic)."""
    quad, g = case.quad, case.direction
    rise = quad.sft_excess(quad.theta0 + case.eta * g)
    dim = g.shape[0]
    return jnp.min(jnp.stack([rise - land.topk_lower_bound(quad.B, g, k, case.eta) + TOL * (1 + rise)
                              for k in range(1, dim + 1)]))


class ClaimMargin(NamedTuple):
    sample: Callable[[np.random.Generator, int], object]  # (rng, n) -> a batch of n random cases
    margin: Callable[[object], jax.Array]  # case -> margin (≥ 0 iff the claim holds)
    tabular: bool  # whether a case is an ``Instance``


def _tab(fn):
    return ClaimMargin(lambda rng, n: random_batch(rng, n, 3, 4), fn, True)


def _land(fn):
    return ClaimMargin(random_landscape_cases, fn, False)


MARGINS: dict[str, ClaimMargin] = {
    "softmax.fisher": _tab(softmax_fisher),
    "softmax.pg": _tab(softmax_pg),
    "thm31.identity": _tab(thm31_identity),
    "thm31.c1": _tab(thm31_c1),
    "thm31.beta": _tab(thm31_beta),
    "thm31.local": _tab(thm31_local),
    "thm31.robust": _tab(_repaired.robust_margin),
    "threshold.kl": _tab(threshold_kl),
    "thm41.gibbs": _tab(thm41_gibbs),
    "thm41.local": _tab(thm41_local),
    "thm41.argmax": _tab(thm41_argmax),
    "thm41.pinsker": _tab(thm41_pinsker),
    "thm41.paper": _tab(thm41_paper),
    "thm41.repaired": _tab(_repaired.repaired_margin),
    "pl.rate": _land(pl_rate),
    "pl.displacement": _land(pl_displacement),
    "pl.degradation": _land(pl_degradation),
    "pl.duration": _land(pl_duration),
    "pl.threshold": _land(pl_threshold),
    "spectral.kantorovich": _land(spectral_kantorovich),
    "spectral.topk": _land(spectral_topk),
    "grpo.baseline": _tab(grpo_baseline),
    "grpo.onpolicy": _tab(grpo_onpolicy),
    "kl.k3": _tab(kl_k3),
    "kl.grad": _tab(_fp.kl_grad_margin),
    "kl.token": _tab(_fp.kl_token_margin),
    "grpo.fixedpoint": _tab(_fp.fixedpoint_margin),
    "thm31.path": _tab(_fp.path_margin),
}
