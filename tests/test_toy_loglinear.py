"""The log-linear policy: shared parameters break tabular independence; its SFT Hessian."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from hypothesis import given
from hypothesis import strategies as st
from numpy.testing import assert_allclose

from toy_models import loglinear
from toy_models import objectives as obj


@jax.jit
def _hessians(w, feats, q, expert):
    auto = jax.hessian(lambda v: obj.sft_loss(loglinear.log_probs(v, feats), q, expert))(w)
    return auto, loglinear.sft_hessian(w, feats, q)


@given(seed=st.integers(0, 2**31 - 1))
def test_sft_hessian_matches_autodiff_and_ignores_the_expert(seed):
    rng = np.random.default_rng(seed)
    feats, w = jnp.asarray(rng.normal(size=(3, 4, 2))), jnp.asarray(rng.normal(size=2))
    q = jnp.asarray([0.2, 0.3, 0.5])
    for expert in (rng.dirichlet(np.ones(4), 3), rng.dirichlet(np.ones(4), 3)):
        auto, closed = _hessians(w, feats, q, jnp.asarray(expert))
        assert_allclose(auto, closed, rtol=1e-10, atol=1e-13)


def test_an_rl_step_on_one_prompt_moves_another():
    rng = np.random.default_rng(0)
    feats, w = jnp.asarray(rng.normal(size=(2, 3, 2))), jnp.zeros(2)
    reward = jnp.asarray([[1.0, 0.0, 0.0], [0.0, 0.0, 0.0]])  # only prompt 0 is rewarded
    g = jax.grad(lambda v: obj.raw_reward(loglinear.log_probs(v, feats), jnp.asarray([1.0, 0.0]), reward))(w)
    before, after = loglinear.log_probs(w, feats), loglinear.log_probs(w + 0.5 * g, feats)
    assert float(jnp.max(jnp.abs(after[1] - before[1]))) > 1e-3
