"""softmax.fisher / softmax.pg on the tabular policy, against JAX autodiff."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from hypothesis import given
from numpy.testing import assert_allclose

from tests.strategies import instances, simplex
from toy_models import objectives as obj
from toy_models import tabular


@given(p=simplex((4,)), v=simplex((4,), bound=3.0))
def test_fisher_is_a_sum_of_squares_and_its_quadratic_form_is_a_variance(p, v):
    f = np.asarray(tabular.fisher(jnp.asarray(p)))
    sos = sum(p[i] * p[j] * np.outer(np.eye(4)[i] - np.eye(4)[j], np.eye(4)[i] - np.eye(4)[j])
              for i in range(4) for j in range(i + 1, 4))
    assert_allclose(f, sos, rtol=0, atol=1e-14)
    assert_allclose(v @ f @ v, float(tabular.variance(jnp.asarray(p), jnp.asarray(v))), rtol=1e-10, atol=1e-15)
    assert_allclose(f @ np.ones(4), 0.0, atol=1e-15)  # constants are in the null space
    assert np.linalg.eigvalsh(f)[1] > 0  # and nothing else (full support)


@jax.jit
def _derivs(theta, q, expert, reward):
    loss = lambda th: obj.sft_loss(tabular.log_probs(th), q, expert)
    rew = lambda th: obj.raw_reward(tabular.log_probs(th), q, reward)
    return jax.grad(loss)(theta), jax.hessian(loss)(theta), jax.grad(rew)(theta)


@given(inst=instances())
def test_sft_gradient_hessian_and_policy_gradient_match_autodiff(inst):
    theta = jnp.log(inst.sft_policy)
    p = np.asarray(inst.sft_policy)
    q = np.asarray(inst.q)
    g, h, pg = _derivs(theta, inst.q, inst.expert, inst.reward)
    assert_allclose(g, q[:, None] * (p - np.asarray(inst.expert)), rtol=0, atol=1e-13)
    x = np.arange(len(q))
    assert_allclose(np.asarray(h)[x, :, x, :], q[:, None, None] * np.asarray(tabular.fisher(inst.sft_policy)),
                    rtol=0, atol=1e-13)
    # the Hessian does not depend on the expert
    _, h2, _ = _derivs(theta, inst.q, inst.sft_policy, inst.reward)
    assert_allclose(h, h2, rtol=0, atol=1e-13)
    r = np.asarray(inst.reward)
    assert_allclose(pg, q[:, None] * p * (r - (p * r).sum(-1, keepdims=True)), rtol=0, atol=1e-13)
