"""The optax trainers: SFT, exact and natural policy gradient, sampled RL."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
from numpy.testing import assert_allclose

from toy_models import estimators as est
from toy_models import objectives as obj
from toy_models import tabular, trainers

RNG = np.random.default_rng(0)
Q = jnp.asarray([0.3, 0.7])
EXPERT = jnp.asarray(RNG.dirichlet(5 * np.ones(3), 2))
REWARD = jnp.asarray(RNG.uniform(-1, 1, (2, 3)))
REF = jnp.asarray(RNG.dirichlet(np.ones(3), 2))
BETA = 0.7


def test_sft_by_sgd_reaches_the_expert_and_records_metrics():
    loss = lambda th: obj.sft_loss(tabular.log_probs(th), Q, EXPERT)
    theta, hist = jax.jit(lambda t: trainers.minimize(loss, t, optax.sgd(5.0), 2000, loss))(jnp.zeros((2, 3)))
    assert_allclose(tabular.probs(theta), EXPERT, rtol=0, atol=1e-8)
    assert hist.shape == (2000,) and float(hist[-1]) <= float(hist[0])


def test_natural_direction_is_the_centered_reward_for_the_tabular_policy():
    theta = jnp.asarray(RNG.normal(size=(2, 3)))
    raw = lambda th: obj.raw_reward(tabular.log_probs(th), Q, REWARD)
    nat = trainers.natural_direction(tabular.log_probs, theta, jax.grad(raw)(theta), Q)
    assert_allclose(nat, REWARD - REWARD.mean(-1, keepdims=True), rtol=1e-8, atol=1e-10)


def test_exact_and_natural_policy_gradient_reach_the_regularized_optimum():
    log_ref = jnp.log(REF)
    objective = lambda th: obj.regularized_objective(tabular.log_probs(th), Q, REWARD, log_ref, BETA)
    star = np.exp(np.asarray(obj.regularized_optimum(log_ref, REWARD, BETA)))
    th_pg, _ = jax.jit(lambda t: trainers.minimize(lambda x: -objective(x), t, optax.adam(0.05), 3000))(log_ref)
    assert_allclose(tabular.probs(th_pg), star, rtol=0, atol=1e-6)
    th_npg, _ = jax.jit(lambda t: trainers.natural_ascent(objective, tabular.log_probs, t, Q, 0.5 / BETA, 60))(log_ref)
    assert_allclose(tabular.probs(th_npg), star, rtol=0, atol=1e-12)


def test_sampled_rloo_ascent_approaches_the_optimum():
    log_ref = jnp.log(REF)
    cfg = est.EstimatorConfig(group_size=8, advantage="rloo", kl_estimator="k3", beta=0.0)
    theta, hist = jax.jit(lambda t: trainers.sampled_ascent(
        jax.random.key(0), tabular.log_probs, t, REWARD, Q, log_ref, cfg, optax.sgd(0.5), 400,
        lambda th: obj.raw_reward(tabular.log_probs(th), Q, REWARD)))(log_ref)
    # unregularized: J climbs towards E max r
    assert float(hist[-1]) > float(obj.raw_reward(log_ref, Q, REWARD)) + 0.1
    assert float(hist[-1]) > float(obj.unregularized_optimum_value(Q, REWARD)) - 0.1
