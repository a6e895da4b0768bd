"""The check catalogue: every claim ID of docs/theory.md, in its order, with its label and symbolic check.

Labels follow docs/theory.md: ``paper`` (the paper's statement, known exactly), ``corrected`` (the
provable version of a wrong or under-specified statement), ``reconstructed`` (our derivation
standing in for an unknown v2 formula), ``refuted`` (a counterexample exists; ``pass`` means it
was reproduced). The softmax-calculus and estimator facts of docs/theory.md §2 and §6 carry no paper
label there; they are labelled ``standard`` (textbook facts the toolkit relies on).

The numeric column lives in ``toy_models.numeric_checks.NUMERIC_CHECKS`` (same IDs, same
``CheckResult``); this module imports neither toy_models nor llm_check.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Callable

from theory import counterexamples, estimators, landscape, rl_then_sft, sft_then_rl, softmax
from theory import fixed_points, kl_gradients, npg_path, repaired
from theory.derivation import Result

STATUSES = ("pass", "fail", "n/a")
LABELS = ("paper", "corrected", "reconstructed", "refuted", "standard", "extension")


@dataclasses.dataclass(frozen=True)
class CheckResult:
    status: str  # "pass" | "fail" | "n/a"
    detail: str
    sampled: tuple[str, ...] = ()   # steps that are only checked at random points (not proved)


@dataclasses.dataclass(frozen=True)
class Claim:
    id: str
    label: str
    title: str
    symbolic: Callable[[], CheckResult]
    proved_for: str = "fixed instances (see the claim's steps)"   # what the symbolic column proves


def as_check(derive: Callable[[], Result]) -> CheckResult:
    """Run one derivation; an exception inside it is a ``fail`` with the exception as detail."""
    try:
        result = derive()
    except Exception as e:  # noqa: BLE001 - a crashing check is a failing check, not a crash
        return CheckResult("fail", f"{type(e).__name__}: {e}")
    sampled = tuple(s.name for s in result.steps if getattr(s, "sampled", False))
    return CheckResult("pass" if result.ok else "fail", result.summary(), sampled)


# What the symbolic column proves, per claim (docs/theory.md §9): "any n" means the identity is
# proved by theory.sums with the number of responses (prompts, dimension) left symbolic; steps that
# are only sampled are listed by each run in CheckResult.sampled.
PROVED_FOR = {
    "softmax.fisher": "any n (gradient, Hessian, v^T F v = Var >= 0, sum of squares, F 1 = 0); rank, two prompts: n = 2..4",
    "softmax.pg": "any n; stacked for two prompts at n = 2..4",
    "thm31.identity": "any n, any prompts",
    "thm31.c1": "any n, any prompts (identity, KL form, C1 >= 0); zero cases at n = 3",
    "thm31.beta": "any n (C1 decreasing in beta: f', f'' = Var of the tilt); series in moment coordinates with moments at n = 2, 3; beta -> 0 at n = 3",
    "thm31.local": "any n, any prompts (m2 - m1^2 = d^T F d, L - L* = E KL >= 0); the series in cumulant coordinates (any distribution)",
    "threshold.kl": "any n, any prompts (the iff); reward-maximal case any n; large-beta series in moment coordinates",
    "thm41.gibbs": "any n, any prompts (identity and drop >= 0)",
    "thm41.local": "n = 2, 3, one prompt of weight q (the Hessian is block-diagonal over prompts)",
    "thm41.argmax": "any n, any |A| (per prompt; E_x is linear); the limit at n = 3, 4",
    "thm41.pinsker": "any n, any prompts (|J(p) - J(p')| <= Delta r TV termwise, binary Pinsker, log-sum inequality, Jensen)",
    "thm41.paper": "two exact rational counterexamples",
    "thm41.repaired": "any n (the true direction); the paper's direction by a limit and an exact tie example",
    "thm31.robust": "any n, any prompts (the chain of identities, |E_SFT f - E_D f| <= (M - m) TV termwise, the constant); the end-to-end bound sampled at n = 3",
    "pl.rate": "a class of functions, lemma skeleton (Gronwall on an abstract gap; rate pinned); 2-D quadratics sampled",
    "pl.displacement": "the integral exactly; the bound sampled on 2-D quadratics",
    "pl.degradation": "the squared displacement exactly; the bound sampled on 2-D quadratics",
    "pl.duration": "any constants (stationarity, concavity sampled); the example exactly",
    "pl.threshold": "a class of functions, lemma skeleton (descent lemma, PL; both thresholds pinned); 2-D quadratics sampled",
    "spectral.kantorovich": "any dimension (the bound); its tightness by the 2-D extremum",
    "spectral.topk": "any dimension, any k",
    "grpo.baseline": "any G, any n (score mean 0; the 1/G self-term; RLOO); enumeration at n = 2, 3, G = 2, 3",
    "grpo.onpolicy": "one token and two sequences, exactly",
    "kl.k3": "any n, any prompts; k3 >= 0 pointwise proved",
    "kl.grad": "any n (theory.sums); n = 2 with explicit logits",
    "kl.token": "a 2-token, 3-symbol policy by exact enumeration",
    "grpo.fixedpoint": "any n and symbolic G (theory.sums); the conditional-independence premise by enumeration",
    "thm31.path": "the ODE for any n; the path identities at n = 2, 3",
}


def _claim(claim_id: str, label: str, title: str, derive: Callable[[], Result]) -> Claim:
    return Claim(claim_id, label, title, functools.partial(as_check, derive),
                 PROVED_FOR.get(claim_id, Claim.proved_for))


CLAIMS: tuple[Claim, ...] = (
    _claim("softmax.fisher", "standard", "grad L = q(p - p_D), Hessian q F (PSD, null space = constants)",
           softmax.check_fisher),
    _claim("softmax.pg", "standard", "grad J = q F r", softmax.check_policy_gradient),
    _claim("thm31.identity", "paper", "L(p_RL) - L(p_SFT) = E[log E_SFT e^{r/beta} - E_D r/beta] for any p_SFT",
           sft_then_rl.check_identity),
    _claim("thm31.c1", "paper", "C1 = E KL(p_D || p_RL) >= 0, zero iff r constant on supp p_D",
           sft_then_rl.check_c1),
    _claim("thm31.beta", "corrected", "C1 decreasing in beta; Var/(2 beta^2) + k3/(6 beta^3); beta -> 0 form",
           sft_then_rl.check_beta),
    _claim("thm31.local", "corrected", "L - L* = (eta^2/2) sum q d^T F d + O(eta^3)", sft_then_rl.check_local),
    _claim("thm31.robust", "extension", "TV-close p_SFT: Delta L >= C1 + E log(1 - (e^{Delta r/beta} - 1) TV)",
           repaired.check_robust),
    _claim("threshold.kl", "reconstructed", "RL lowers L iff E KL(p_D||p_RL) < E KL(p_D||p_SFT)",
           sft_then_rl.check_threshold),
    _claim("thm41.gibbs", "corrected", "J_beta(p*) - J_beta(p) = beta E KL(p || p*)", rl_then_sft.check_gibbs),
    _claim("thm41.local", "corrected", "Hessian -beta q F; Delta J_beta <= 0, Delta J either sign",
           rl_then_sft.check_local),
    _claim("thm41.argmax", "corrected", "J(p_RL) - J(p_D) >= E[delta (1 - p_D(A))]", rl_then_sft.check_argmax),
    _claim("thm41.pinsker", "corrected", "|J(p) - J(p')| <= Delta r E TV <= Delta r sqrt(E KL/2)",
           rl_then_sft.check_pinsker),
    _claim("thm41.paper", "refuted", "SFT after RL with a <= E KL <= A strictly lowers J (two counterexamples)",
           counterexamples.check_counterexamples),
    _claim("thm41.repaired", "corrected", "unregularized reading: vacuous/false in the paper's KL direction; "
           "J(p_RL) - J(p) >= delta (1 - e^{-KL(p_RL||p)}), C2 = delta_min (1 - e^{-a})", repaired.check_repaired),
    _claim("pl.rate", "reconstructed", "J* - J(theta_T) <= e^{-2 mu T} Delta_0", landscape.check_rate),
    _claim("pl.displacement", "reconstructed", "||theta_T - theta_0|| <= sqrt(2 ell Delta_0)/mu (1 - e^{-mu T})",
           landscape.check_displacement),
    _claim("pl.degradation", "reconstructed", "L(theta_T) - L* <= L_s ell Delta_0/mu^2 (1 - e^{-mu T})^2",
           landscape.check_degradation),
    _claim("pl.duration", "reconstructed", "T* = (1/mu) ln(1 + mu^2/(lambda_w L_s ell))", landscape.check_duration),
    _claim("pl.threshold", "reconstructed", "an RL step is guaranteed to lower L if cos phi > L_s eta ||grad J||/(2 ||grad L||) (sufficient)",
           landscape.check_threshold),
    _claim("spectral.kantorovich", "reconstructed", "cos(delta, H delta) >= 2 sqrt(kappa)/(1 + kappa)",
           landscape.check_kantorovich),
    _claim("spectral.topk", "reconstructed", "an RL step raises L by >= (eta^2/2) lambda_k rho ||g||^2",
           landscape.check_topk),
    _claim("grpo.baseline", "standard", "group-mean baseline gives (1 - 1/G) grad J; RLOO unbiased",
           estimators.check_baseline),
    _claim("grpo.onpolicy", "standard", "on-policy clipped GRPO gradient = advantage-weighted log-lik gradient",
           estimators.check_onpolicy),
    _claim("kl.k3", "standard", "k3 >= 0 and unbiased for KL(p || ref)", estimators.check_k3),
    _claim("kl.grad", "standard", "as losses: E grad k1 = 0, E grad k2 = grad KL(p||ref), E grad k3 = grad KL(ref||p); "
           "k1 in the reward = grad KL(p||ref)", kl_gradients.check_grad),
    _claim("kl.token", "standard", "grad sequence KL = E[sum_t (sum_{s>=t} l_s) grad log p_t]; per-token k2 is partial",
           kl_gradients.check_token),
    _claim("grpo.fixedpoint", "extension", "fixed points: RLOO tilt; group mean tilt at beta G/(G-1); k3 "
           "beta ref/(beta + J - r); std division beta/m(s)", fixed_points.check_fixedpoint),
    _claim("thm31.path", "extension", "NPG from theta*: theta* + r tau(t), tau = (1 - e^{-beta t})/beta; "
           "L - L* = f(tau(t)) rises to C1", npg_path.check_path),
)

IDS: tuple[str, ...] = tuple(c.id for c in CLAIMS)


def claim(claim_id: str) -> Claim:
    for c in CLAIMS:
        if c.id == claim_id:
            return c
    raise KeyError(claim_id)
