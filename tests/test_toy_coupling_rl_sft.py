"""RL then SFT (docs/theory.md §4): the Gibbs identity, local changes, argmax bound, Pinsker, and the
counterexample to the paper's Theorem 4.1."""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
from hypothesis import given
from numpy.testing import assert_allclose

from tests.strategies import instances
from toy_models import coupling_rl_sft as rls
from toy_models import objectives as obj
from toy_models.instance import make_instance


def test_counterexample_2_raises_the_raw_reward():
    inst = make_instance([1.0], [[0.9, 0.1]], [[1.0, 0.0]], 1.0, reference=[[0.5, 0.5]])
    j_star = float(obj.raw_reward(rls.rl_optimum(inst), inst.q, inst.reward))
    assert_allclose(j_star, 0.7311, atol=5e-5)
    for eta, j, drop in ((0.1, 0.7376, 1.11e-4), (0.5, 0.7630, 2.66e-3), (1.0, 0.7921, 1.00e-2)):
        logp = rls.sft_step_from_optimum(inst, eta)
        assert_allclose(float(obj.raw_reward(logp, inst.q, inst.reward)), j, atol=5e-5)
        gap, beta_kl = rls.gibbs_gap(logp, inst)
        assert_allclose(float(gap), float(beta_kl), rtol=1e-12)
        assert_allclose(float(gap), drop, rtol=6e-3)


_gibbs = jax.jit(rls.gibbs_gap)


@given(inst=instances())
def test_gibbs_gap_equals_beta_kl_for_any_policy(inst):
    gap, beta_kl = _gibbs(jnp.log(inst.sft_policy), inst)
    assert float(gap) >= 0
    assert_allclose(float(gap), float(beta_kl), rtol=1e-10, atol=1e-13)


_argmax = jax.jit(rls.argmax_gap_and_bound)


@given(inst=instances())
def test_argmax_gap_bound_and_strictness(inst):
    gap, bound = _argmax(inst)
    assert float(gap) >= float(bound) - 1e-13
    if float(np.min(np.ptp(np.asarray(inst.reward), -1))) > 1e-6:
        assert float(bound) > 0  # a full-support expert puts mass off the argmax: strict
    # an expert on the argmax set: no gap at all
    best = jax.nn.one_hot(jnp.argmax(inst.reward, -1), inst.reward.shape[-1], dtype=jnp.float64)
    gap0, bound0 = _argmax(dataclasses.replace(inst, expert=best))
    assert_allclose([float(gap0), float(bound0)], 0.0, atol=1e-13)


_pinsker = jax.jit(lambda inst: rls.pinsker_chain(jnp.log(inst.sft_policy), rls.rl_optimum(inst), inst))


@given(inst=instances())
def test_pinsker_chain(inst):
    d_j, tv_b, kl_b = _pinsker(inst)
    assert float(d_j) <= float(tv_b) + 1e-13 <= float(kl_b) + 2e-13


@jax.jit
def _local(inst, eta):
    log_star = rls.rl_optimum(inst)
    logp = rls.sft_step_from_optimum(inst, eta)
    d_obj, d_rew = rls.local_sft_changes(inst, eta)
    return (rls.objective(logp, inst) - rls.objective(log_star, inst), d_obj,
            obj.raw_reward(logp, inst.q, inst.reward) - obj.raw_reward(log_star, inst.q, inst.reward), d_rew)


@given(inst=instances())
def test_local_changes_match_a_small_sft_step(inst):
    eta = 1e-3
    m_obj, d_obj, m_rew, d_rew = (float(v) for v in _local(inst, eta))
    scale = float(inst.beta) + 1.0
    assert d_obj <= 0
    assert_allclose(m_obj, d_obj, rtol=2e-2, atol=1e-9 * scale * eta**2)
    assert_allclose(m_rew, d_rew, rtol=2e-2, atol=1e-2 * eta**2 * scale)


_step_vs_autodiff = jax.jit(lambda inst, eta: (
    rls.sft_step_from_optimum(inst, eta),
    jax.nn.log_softmax(rls.rl_optimum(inst) - eta * jax.grad(
        lambda th: obj.sft_loss(jax.nn.log_softmax(th, -1), inst.q, inst.expert))(rls.rl_optimum(inst)), -1)))


@given(inst=instances())
def test_sft_step_is_a_gradient_step_on_the_sft_loss(inst):
    closed, autodiff = _step_vs_autodiff(inst, 0.7)
    assert_allclose(closed, autodiff, rtol=1e-12, atol=1e-13)
