"""Objectives of docs/theory.md §1 and the exact optima."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from hypothesis import given
from hypothesis import strategies as st
from numpy.testing import assert_allclose

from tests.strategies import instances, simplex
from toy_models import objectives as obj


@given(inst=instances())
def test_sft_loss_is_entropy_plus_kl(inst):
    d = np.asarray(inst.expert)
    entropy = -(d * np.log(d)).sum(-1)
    logp = jnp.log(inst.sft_policy)
    expect = np.asarray(inst.q) @ (entropy + np.asarray(obj.kl_rows(jnp.log(inst.expert), logp)))
    assert_allclose(float(obj.sft_loss(logp, inst.q, inst.expert)), expect, rtol=1e-12, atol=1e-14)


@given(inst=instances(), other=st.integers(0, 2**31 - 1))
def test_regularized_optimum_beats_every_other_policy(inst, other):
    log_ref = jnp.log(inst.reference)
    log_star = obj.regularized_optimum(log_ref, inst.reward, inst.beta)
    rng = np.random.default_rng(other)
    z = np.asarray(log_star) + rng.normal(0, 0.5, inst.reward.shape)
    logp = jax.nn.log_softmax(jnp.asarray(z), -1)
    j = lambda lp: float(obj.regularized_objective(lp, inst.q, inst.reward, log_ref, inst.beta))
    assert j(log_star) >= j(logp) - 1e-13
    # value at the optimum: β E_x log Z_β(x)
    assert_allclose(j(log_star), float(inst.beta * inst.q @ obj.log_partition(log_ref, inst.reward, inst.beta)),
                    rtol=1e-12, atol=1e-13)


@given(p=simplex((2, 3)))
def test_zero_probabilities_follow_0_log_0_convention(p):
    expert = jnp.asarray([[1.0, 0.0, 0.0], [0.0, 0.5, 0.5]])
    loss = obj.sft_loss(jnp.log(jnp.asarray(p)), jnp.asarray([0.5, 0.5]), expert)
    assert np.isfinite(float(loss))
    assert float(obj.kl(jnp.log(expert), jnp.log(jnp.asarray(p)), jnp.asarray([0.5, 0.5]))) >= 0
