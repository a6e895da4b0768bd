"""The two pipelines: metric names, the local predictions at the stage start, both orders."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from numpy.testing import assert_allclose

from toy_models import coupling_sft_rl as srl
from toy_models import pipelines, tabular
from toy_models.estimators import EstimatorConfig
from toy_models.instance import make_instance

INST = make_instance([0.4, 0.6], [[0.6, 0.3, 0.1], [0.2, 0.5, 0.3]], [[1.0, 0.0, 0.5], [0.0, 1.0, -0.5]], 0.5,
                     reference=[[0.3, 0.3, 0.4], [0.4, 0.3, 0.3]])
NAMES = {"sft/ce_heldout", "sft/ce_pred", "rl/reward", "rl/reward_pred", "rl/objective", "rl/objective_pred",
         "rl/kl_ref", "grad/cos_ce_rl", "stage", "step"}
CFG = pipelines.PipelineConfig(sft_steps=300, rl_steps=300, sft_learning_rate=5.0, rl_learning_rate=2.0)


@pytest.fixture(scope="module")
def sft_rl():
    return jax.jit(lambda i: pipelines.sft_then_rl(i, tabular.log_probs, jnp.zeros((2, 3)), CFG,
                                                   jax.random.key(0)))(INST)


def test_sft_then_rl_metrics_and_local_prediction(sft_rl):
    _, m = sft_rl
    assert set(m) == NAMES and m["step"].shape == (600,)
    ce = np.asarray(m["sft/ce_heldout"])
    base = ce[CFG.sft_steps - 1]
    # the first RL step: measured rise = second-order prediction up to O(η³)
    first = CFG.sft_steps
    assert ce[first] > base
    assert_allclose(ce[first] - base, float(m["sft/ce_pred"][first]) - base, rtol=5e-2)
    # RL toward the optimum with reference = SFT policy (≈ p_D): the rise approaches C1
    assert_allclose(ce[-1] - base, float(srl.c1_closed_form(INST)), rtol=1e-3)
    assert float(m["grad/cos_ce_rl"][first]) > 0  # RL climbs the SFT loss


def test_rl_then_sft_objective_drops_and_its_prediction():
    cfg = pipelines.PipelineConfig(sft_steps=50, rl_steps=300, sft_learning_rate=0.2, rl_learning_rate=2.0)
    _, m = jax.jit(lambda i: pipelines.rl_then_sft(i, tabular.log_probs, jnp.log(i.reference), cfg,
                                                   jax.random.key(0)))(INST)
    obj_ = np.asarray(m["rl/objective"])
    end_rl = cfg.rl_steps - 1
    assert obj_[-1] < obj_[end_rl]
    assert_allclose(obj_[end_rl + 1] - obj_[end_rl], float(m["rl/objective_pred"][end_rl + 1]) - obj_[end_rl],
                    rtol=0.1, atol=1e-6)


@pytest.mark.slow
def test_sampled_grpo_pipeline_runs_with_kl_penalty():
    cfg = pipelines.PipelineConfig(sft_steps=50, rl_steps=50, sft_learning_rate=5.0, rl_learning_rate=0.2,
                                   rl_estimator=EstimatorConfig(group_size=8, advantage="grpo", kl_estimator="k3"))
    _, m = jax.jit(lambda i: pipelines.sft_then_rl(i, tabular.log_probs, jnp.zeros((2, 3)), cfg,
                                                   jax.random.key(1)))(INST)
    assert np.all(np.isfinite(np.asarray(m["rl/reward"])))
    assert float(m["rl/reward"][-1]) > float(m["rl/reward"][cfg.sft_steps - 1])
