"""The autoregressive tabular policy agrees with the sequence-level (tabular) statements."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from hypothesis import given, settings
from numpy.testing import assert_allclose

from tests.strategies import instances, simplex
from toy_models import autoregressive as ar
from toy_models import coupling_sft_rl as srl
from toy_models import objectives as obj
from toy_models import tabular, trainers

TABLE = ar.sequence_table(2, 2)  # 4 sequences per prompt, 3 prefixes


def test_sequence_table():
    assert TABLE.tokens.tolist() == [[0, 0], [0, 1], [1, 0], [1, 1]]
    assert TABLE.prefix_index.tolist() == [[0, 1], [0, 1], [0, 2], [0, 2]]
    assert TABLE.num_prefixes == 3 and TABLE.num_sequences == 4


_roundtrip = jax.jit(lambda p: ar.sequence_log_probs(ar.token_logits_for(p, TABLE), TABLE))


@given(p=simplex((2, 4)))
def test_token_logits_represent_any_sequence_distribution(p):
    logp = _roundtrip(jnp.asarray(p))
    assert_allclose(np.exp(np.asarray(logp)), p, rtol=1e-12, atol=1e-15)


@jax.jit
def _rl_token_level(inst):
    """Natural policy gradient on J_β over the token logits (Fisher of the sequence distribution in
    the token logits), from the SFT optimum, reference = expert."""
    logp_fn = lambda lg: ar.sequence_log_probs(lg, TABLE)
    log_ref = jnp.log(inst.expert)
    init = ar.token_logits_for(inst.expert, TABLE)
    objective = lambda lg: obj.regularized_objective(logp_fn(lg), inst.q, inst.reward, log_ref, inst.beta)
    logits, _ = trainers.natural_ascent(objective, logp_fn, init, inst.q, 0.5 / inst.beta, 200)
    return logp_fn(logits), logp_fn(init)


@settings(max_examples=5)
@given(inst=instances(shapes=((2, 4),)))
def test_token_level_rl_reaches_the_sequence_level_optimum_and_c1(inst):
    logp, log_d = _rl_token_level(inst)
    closed = srl.rl_optimum_from(jnp.log(inst.expert), inst)
    assert_allclose(np.exp(np.asarray(logp)), np.exp(np.asarray(closed)), rtol=0, atol=1e-9)
    rise = float(obj.sft_loss(logp, inst.q, inst.expert) - obj.sft_loss(log_d, inst.q, inst.expert))
    assert_allclose(rise, float(srl.c1_closed_form(inst)), rtol=1e-7, atol=1e-10)


@jax.jit
def _token_quadratic_forms(inst, direction):
    logp_fn = lambda lg: ar.sequence_log_probs(lg, TABLE)
    init = ar.token_logits_for(inst.expert, TABLE)
    loss = lambda lg: obj.sft_loss(logp_fn(lg), inst.q, inst.expert)
    hvp = jax.jvp(jax.grad(loss), (init,), (direction,))[1]
    seq_dir = jax.jvp(logp_fn, (init,), (direction,))[1]
    return (jnp.vdot(direction, hvp), jnp.sum(inst.q * tabular.variance(inst.expert, seq_dir)),
            jnp.max(jnp.abs(jax.grad(loss)(init))))


@settings(max_examples=10)
@given(inst=instances(shapes=((2, 4),)))
def test_token_level_sft_hessian_quadratic_form_equals_sequence_level(inst):
    """thm31.local through the token parametrization: δᵀ∇²L δ = Σ q Var_{p_D}(Jδ), Jδ the induced
    change of the sequence log-probabilities (the Hessian's p_D-independence carries over)."""
    r, p = np.asarray(inst.reward), np.asarray(inst.sft_policy)
    direction = jnp.asarray(np.stack([r[:, :3], p[:, :3]], -1))  # any token-logit direction [X, 3, 2]
    token_quad, seq_quad, grad = (float(v) for v in _token_quadratic_forms(inst, direction))
    assert_allclose(token_quad, seq_quad, rtol=1e-9, atol=1e-13)
    assert grad < 1e-12  # the token logits of p_D are an SFT optimum
