"""Landscape results of docs/theory.md §5 [reconstructed]: PL rate, displacement, degradation, optimal
RL duration, the non-decoupling threshold of one RL step, and the spectral bounds.

The bounds are functions of the constants (μ, ℓ, L_s, Δ₀, ...). To check them, ``Quadratic`` is a
landscape where every constant is exact and the RL gradient flow has a closed form:

    J(θ) = J* − ½ (θ − a)ᵀ A (θ − a)    (μ-PL with μ = λ_min(A), ℓ-smooth with ℓ = λ_max(A)),
    L(θ) = L* + ½ (θ − θ₀)ᵀ B (θ − θ₀)  (θ₀ the SFT optimum, L_s = λ_max(B)),
    θ_T  = a + exp(−A T)(θ₀ − a)        (the flow θ̇ = ∇J).

Simplification: the flow is integrated exactly; the checks also run the optax gradient-ascent
trainer with a small step and compare it with the flow.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class Quadratic:
    a: jax.Array  # [D] the RL optimum
    A: jax.Array  # [D, D] symmetric positive definite
    theta0: jax.Array  # [D] the SFT optimum, start of RL
    B: jax.Array  # [D, D] symmetric positive semi-definite

    def reward(self, theta):  # J − J*
        d = theta - self.a
        return -0.5 * d @ self.A @ d

    def sft_excess(self, theta):  # L − L*
        d = theta - self.theta0
        return 0.5 * d @ self.B @ d

    def flow(self, t):
        """θ_T of the gradient flow θ̇ = ∇J = −A(θ − a), exactly (eigendecomposition of A)."""
        lam, vec = jnp.linalg.eigh(self.A)
        return self.a + vec @ (jnp.exp(-lam * t) * (vec.T @ (self.theta0 - self.a)))

    @property
    def mu(self):
        return jnp.linalg.eigvalsh(self.A)[0]

    @property
    def ell(self):
        return jnp.linalg.eigvalsh(self.A)[-1]

    @property
    def smooth_sft(self):
        return jnp.linalg.eigvalsh(self.B)[-1]

    @property
    def delta0(self):
        return -self.reward(self.theta0)


def rate_bound(mu, delta0, t):
    """pl.rate: J* − J(θ_T) ≤ e^{−2μT} Δ₀."""
    return jnp.exp(-2 * mu * t) * delta0


def displacement_bound(mu, ell, delta0, t):
    """pl.displacement: ‖θ_T − θ₀‖ ≤ (sqrt(2ℓΔ₀)/μ)(1 − e^{−μT})."""
    return jnp.sqrt(2 * ell * delta0) / mu * (1 - jnp.exp(-mu * t))


def degradation_bound(mu, ell, smooth_sft, delta0, t):
    """pl.degradation: L(θ_T) − L* ≤ (L_s ℓ Δ₀/μ²)(1 − e^{−μT})²."""
    return smooth_sft * ell * delta0 / mu**2 * (1 - jnp.exp(-mu * t)) ** 2


def tradeoff(mu, ell, smooth_sft, delta0, weight, t):
    """pl.duration: guaranteed reward gain Δ₀(1 − e^{−2μT}) minus λ_w × the degradation bound."""
    return delta0 * (1 - jnp.exp(-2 * mu * t)) - weight * degradation_bound(mu, ell, smooth_sft, delta0, t)


def optimal_duration(mu, ell, smooth_sft, weight):
    """pl.duration: T* = (1/μ) ln(1 + μ²/(λ_w L_s ℓ)), the maximizer of ``tradeoff``."""
    return jnp.log1p(mu**2 / (weight * smooth_sft * ell)) / mu


def step_threshold(cos_phi, smooth_sft, eta, grad_j_norm, grad_l_norm):
    """pl.threshold: the step θ + η∇J is guaranteed (by the descent lemma) to lower L if cos φ >
    this value, L_s η ‖∇J‖ / (2‖∇L‖) (φ the angle between −∇L and ∇J); sufficient, not necessary."""
    del cos_phi
    return smooth_sft * eta * grad_j_norm / (2 * grad_l_norm)


def step_threshold_pl(cos_phi, smooth_sft, eta, grad_j_norm, mu_sft):
    """pl.threshold, PL form: L − L* above L_s² η² ‖∇J‖² / (8 μ_L cos²φ) suffices."""
    return smooth_sft**2 * eta**2 * grad_j_norm**2 / (8 * mu_sft * cos_phi**2)


def cosine(u: jax.Array, v: jax.Array) -> jax.Array:
    return jnp.vdot(u, v) / (jnp.linalg.norm(u) * jnp.linalg.norm(v))


def kantorovich_bound(kappa):
    """spectral.kantorovich: cos(δ, Hδ) ≥ 2√κ/(1 + κ) for δ off H's null space."""
    return 2 * jnp.sqrt(kappa) / (1 + kappa)


def topk_lower_bound(hessian: jax.Array, g: jax.Array, k: int, eta):
    """spectral.topk: (η²/2) λ_k ρ ‖g‖², ρ the fraction of ‖g‖² in the top-k eigenspace of H."""
    lam, vec = jnp.linalg.eigh(hessian)  # ascending
    coef = vec.T @ g
    top = slice(hessian.shape[0] - k, None)
    rho = jnp.sum(coef[top] ** 2) / jnp.sum(coef**2)
    return 0.5 * eta**2 * lam[-k] * rho * jnp.sum(g**2)
