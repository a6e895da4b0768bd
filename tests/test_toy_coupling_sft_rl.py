"""SFT then RL (docs/theory.md §3): closed forms against the trainers and docs/theory.md's numbers."""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
from hypothesis import given, settings
from numpy.testing import assert_allclose

from tests.strategies import instances
from toy_models import coupling_sft_rl as srl
from toy_models import objectives as obj
from toy_models import tabular, trainers
from toy_models.instance import make_instance


_c1 = jax.jit(srl.c1_closed_form)


@given(inst=instances(deterministic_expert=True))
def test_c1_is_zero_for_a_deterministic_expert(inst):
    assert_allclose(float(_c1(inst)), 0.0, atol=1e-12)


@given(inst=instances())
def test_c1_positive_iff_reward_nonconstant(inst):
    spread = float(np.max(np.ptp(np.asarray(inst.reward), -1)))
    if spread > 1e-3:
        assert float(_c1(inst)) > 0
    const = dataclasses.replace(inst, reward=jnp.ones_like(inst.reward) * 0.7)
    assert_allclose(float(_c1(const)), 0.0, atol=1e-12)


def test_large_beta_series_error_is_fourth_order():
    inst = make_instance([0.3, 0.7], [[0.2, 0.5, 0.3], [0.6, 0.3, 0.1]], [[1.0, -0.5, 0.2], [0.0, 1.0, 2.0]], 1.0)
    err = []
    for b in (10.0, 20.0, 40.0):
        ib = dataclasses.replace(inst, beta=jnp.asarray(b))
        err.append(abs(float(srl.c1_closed_form(ib) - srl.c1_large_beta_series(ib))))
    assert_allclose(err[0] / err[1], 16.0, rtol=0.1)
    assert_allclose(err[1] / err[2], 16.0, rtol=0.05)


def test_small_beta_asymptote():
    inst = make_instance([1.0], [[0.2, 0.5, 0.3]], [[1.0, 1.0, 0.0]], 0.02)
    # r* = 1 on A = {0, 1}: C1 ≈ (1 − 0.7)/β + log 0.7
    assert_allclose(float(srl.c1_closed_form(inst)), 0.3 / 0.02 + np.log(0.7), rtol=1e-12)
    assert_allclose(float(srl.c1_small_beta_asymptote(inst)), 0.3 / 0.02 + np.log(0.7), rtol=1e-14)


def _npg_optimum(inst, log_ref):
    objective = lambda th: obj.regularized_objective(tabular.log_probs(th), inst.q, inst.reward, log_ref, inst.beta)
    theta, _ = trainers.natural_ascent(objective, tabular.log_probs, log_ref, inst.q, 0.5 / inst.beta, 60)
    return tabular.log_probs(theta)


_npg = jax.jit(_npg_optimum)


@settings(max_examples=10)
@given(inst=instances(shapes=((3, 4),)))
def test_identity_and_c1_against_rl_run_by_the_trainer(inst):
    log_sft, log_d = jnp.log(inst.sft_policy), jnp.log(inst.expert)
    loss = lambda lp: float(obj.sft_loss(lp, inst.q, inst.expert))
    assert_allclose(loss(_npg(inst, log_sft)) - loss(log_sft), float(srl.sft_loss_change_identity(inst)),
                    rtol=1e-9, atol=1e-12)
    assert_allclose(loss(_npg(inst, log_d)) - loss(log_d), float(srl.c1_closed_form(inst)), rtol=1e-9, atol=1e-12)


def test_threshold_example_of_theory_md():
    inst = make_instance([1.0], [[1.0, 0.0, 0.0]], [[1.0, 1.0, 0.0]], 1.0, sft_policy=[[0.6, 0.3, 0.1]])
    log_sft = jnp.log(inst.sft_policy)
    assert_allclose(float(obj.sft_loss(log_sft, inst.q, inst.expert)), 0.511, atol=5e-4)
    for beta, ce in ((0.2, 0.406), (1.0, 0.446), (5.0, 0.493)):
        ib = dataclasses.replace(inst, beta=jnp.asarray(beta))
        after = float(obj.sft_loss(_npg(ib, log_sft), ib.q, ib.expert))
        assert_allclose(after, ce, atol=5e-4)
        left, right = srl.threshold_sides(ib)
        assert float(left) > float(right)  # RL lowers the SFT loss: the expert is reward-maximal


@jax.jit
def _rise_and_prediction(inst, eta):
    d = srl.policy_gradient_direction(inst.q, inst.expert, inst.reward)
    log_d = jnp.log(inst.expert)
    rise = obj.sft_loss(jax.nn.log_softmax(log_d + eta * d, -1), inst.q, inst.expert) - obj.sft_loss(log_d, inst.q, inst.expert)
    return rise, srl.local_sft_increase(inst.q, inst.expert, d, eta)


@given(inst=instances())
def test_local_increase_matches_a_small_rl_step(inst):
    rise, pred = (float(v) for v in _rise_and_prediction(inst, 1e-3))
    assert rise >= 0
    if pred > 1e-12:  # a non-constant reward
        assert rise > 0
    assert_allclose(rise, pred, rtol=1e-2, atol=1e-14)
