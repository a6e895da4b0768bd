"""The landscape bounds (docs/theory.md §5) on exact quadratic landscapes."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st
from numpy.testing import assert_allclose

from toy_models import landscape as land
from toy_models.margins import random_landscape_cases


def test_optimal_duration_example_and_maximizer():
    assert_allclose(float(land.optimal_duration(0.5, 1.5, 2.0, 0.3)), 0.4902, atol=5e-5)
    t = jnp.linspace(0.0, 5.0, 50001)
    f = land.tradeoff(0.5, 1.5, 2.0, 1.0, 0.3, t)
    assert_allclose(float(t[jnp.argmax(f)]), 0.4902, atol=2e-4)


_velocity_and_gradient = jax.jit(lambda quad, t: (jax.jacfwd(quad.flow)(t), jax.grad(quad.reward)(quad.flow(t))))


@settings(max_examples=5)
@given(seed=st.integers(0, 2**31 - 1))
def test_flow_solves_the_gradient_flow_and_obeys_the_bounds(seed):
    cases = random_landscape_cases(np.random.default_rng(seed), 1)
    case = jax.tree.map(lambda a: a[0], cases)
    quad = case.quad
    # θ̇ = ∇J along the closed-form flow
    velocity, grad = _velocity_and_gradient(quad, case.t)
    assert_allclose(velocity, grad, rtol=1e-9, atol=1e-12)
    theta = quad.flow(case.t)
    assert -float(quad.reward(theta)) <= float(land.rate_bound(quad.mu, quad.delta0, case.t)) * (1 + 1e-12)
    assert float(jnp.linalg.norm(theta - quad.theta0)) <= float(
        land.displacement_bound(quad.mu, quad.ell, quad.delta0, case.t)) * (1 + 1e-12)
    assert float(quad.sft_excess(theta)) <= float(
        land.degradation_bound(quad.mu, quad.ell, quad.smooth_sft, quad.delta0, case.t)) * (1 + 1e-12)


@given(kappa=st.floats(1.0, 1e6))
def test_kantorovich_bound_is_attained(kappa):
    # equality at δ ∝ (1/√λ_min, 1/√λ_max) coordinates: the classical worst case
    h = jnp.diag(jnp.asarray([1.0, kappa]))
    d = jnp.asarray([np.sqrt(kappa), 1.0])
    assert_allclose(float(land.cosine(d, h @ d)), float(land.kantorovich_bound(kappa)), rtol=1e-10)


def test_bounds_are_tight_for_an_isotropic_landscape():
    # A = μI, B = L_s I: the flow moves straight to a, and every bound holds with equality.
    mu, ls, t = 0.7, 2.0, 1.3
    quad = land.Quadratic(a=jnp.asarray([1.0, -2.0, 0.5]), A=mu * jnp.eye(3), theta0=jnp.zeros(3), B=ls * jnp.eye(3))
    theta = quad.flow(t)
    assert_allclose(-float(quad.reward(theta)), float(land.rate_bound(quad.mu, quad.delta0, t)), rtol=1e-12)
    assert_allclose(float(jnp.linalg.norm(theta - quad.theta0)),
                    float(land.displacement_bound(quad.mu, quad.ell, quad.delta0, t)), rtol=1e-12)
    assert_allclose(float(quad.sft_excess(theta)),
                    float(land.degradation_bound(quad.mu, quad.ell, quad.smooth_sft, quad.delta0, t)), rtol=1e-12)
