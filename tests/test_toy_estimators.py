"""Sampled policy-gradient and KL estimators (docs/theory.md §6): exact expectations by enumeration,
sampled means within a stated number of standard errors, and the on-policy GRPO identity."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st
from numpy.testing import assert_allclose

from tests.strategies import simplex
from toy_models import estimators as est
from toy_models import objectives as obj
from toy_models import tabular
from toy_models.margins import exact_estimator_mean

Z_TOL = 5.0  # sampled means must lie within 5 standard errors of the exact value


@functools.partial(jax.jit, static_argnums=2)
def _exact_means(p, r, group):
    return {kind: exact_estimator_mean(p, r, kind, group) for kind in ("mean", "rloo", "none")}


@settings(max_examples=10)
@given(p=simplex((3,)), r=simplex((3,), bound=3.0), group=st.sampled_from([2, 3, 4]))
def test_group_mean_baseline_is_biased_by_one_minus_one_over_g_and_rloo_is_not(p, r, group):
    p, r = jnp.asarray(p), jnp.asarray(r)
    exact = p * (r - jnp.sum(p * r))  # F r: the per-prompt ∇J
    means = _exact_means(p, r, group)
    assert_allclose(means["mean"], (1 - 1 / group) * exact, rtol=0, atol=1e-14)
    assert_allclose(means["rloo"], exact, rtol=0, atol=1e-14)
    assert_allclose(means["none"], exact, rtol=0, atol=1e-14)


def test_sampled_estimators_converge_to_the_exact_gradient():
    rng = np.random.default_rng(0)
    theta = jnp.asarray(rng.normal(size=(2, 3)))
    reward, q = jnp.asarray(rng.uniform(-1, 1, (2, 3))), jnp.asarray([0.4, 0.6])
    exact = jax.grad(lambda th: obj.raw_reward(tabular.log_probs(th), q, reward))(theta)
    keys = jax.random.split(jax.random.key(0), 20000)
    kinds = (("none", 1.0), ("mean", 0.75), ("rloo", 1.0))

    @jax.jit
    def stats(keys):
        out = []
        for kind, _ in kinds:
            cfg = est.EstimatorConfig(group_size=4, advantage=kind)
            g = jax.vmap(lambda k: est.sampled_gradient(k, tabular.log_probs, theta, reward, q, theta, cfg))(keys)
            out.append((jnp.mean(g, 0), jnp.std(g, 0) / np.sqrt(keys.shape[0])))
        return out

    for (kind, factor), (mean, se) in zip(kinds, stats(keys)):
        z = np.abs(np.asarray(mean) - factor * np.asarray(exact)) / np.asarray(se)
        assert z.max() < Z_TOL, (kind, z.max())


@given(p=simplex((4,)), ref=simplex((4,), bound=8.0))
def test_k3_is_nonnegative_and_unbiased_k1_unbiased(p, ref):
    logp, log_ref = jnp.log(jnp.asarray(p)), jnp.log(jnp.asarray(ref))
    kl = float(obj.kl_rows(logp[None], log_ref[None])[0])
    k3 = est.kl_estimate(logp, log_ref, "k3")
    assert float(jnp.min(k3)) >= 0
    assert_allclose(float(jnp.sum(jnp.exp(logp) * k3)), kl, rtol=1e-10, atol=1e-14)
    assert_allclose(float(jnp.sum(jnp.exp(logp) * est.kl_estimate(logp, log_ref, "k1"))), kl, rtol=1e-10, atol=1e-14)


def test_sampled_k3_mean_converges_and_k1_goes_negative():
    logp, log_ref = jnp.log(jnp.asarray([[0.7, 0.2, 0.1]])), jnp.log(jnp.asarray([[0.2, 0.3, 0.5]]))
    ys = est.sample_groups(jax.random.key(1), logp, 50000)
    kl = float(obj.kl_rows(logp, log_ref)[0])
    for kind in ("k1", "k3"):
        k = est.kl_estimate(jnp.take_along_axis(logp, ys, -1), jnp.take_along_axis(log_ref, ys, -1), kind)
        assert abs(float(jnp.mean(k)) - kl) < Z_TOL * float(jnp.std(k)) / np.sqrt(k.size)
    assert float(jnp.min(est.kl_estimate(jnp.take_along_axis(logp, ys, -1), jnp.take_along_axis(log_ref, ys, -1), "k1"))) < 0


@jax.jit
def _onpolicy_grads(theta, reward, q, key):
    cfg = est.EstimatorConfig(group_size=8, advantage="grpo", clip_low=0.2, beta=0.0)
    ys = est.sample_groups(key, theta, 8)
    rw = jnp.take_along_axis(reward, ys, -1)
    g1 = jax.grad(lambda th: est.surrogate(tabular.log_probs(th), ys, rw, q, theta, cfg))(theta)
    g2 = jax.grad(lambda th: est.weighted_loglik(tabular.log_probs(th), ys, est.advantages(rw, "grpo"), q))(theta)
    return g1, g2


@settings(max_examples=10)
@given(seed=st.integers(0, 2**31 - 1))
def test_on_policy_clipped_surrogate_gradient_is_the_advantage_weighted_score(seed):
    rng = np.random.default_rng(seed)
    theta = jnp.asarray(rng.normal(size=(2, 3)))
    g1, g2 = _onpolicy_grads(theta, jnp.asarray(rng.uniform(-1, 1, (2, 3))), jnp.asarray([0.5, 0.5]),
                             jax.random.key(seed))
    assert_allclose(g1, g2, rtol=1e-12, atol=1e-15)
