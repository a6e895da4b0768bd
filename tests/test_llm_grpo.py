"""llm_check.grpo against the exact facts of docs/theory.md §6, on a tiny Qwen3 whose sequence
distribution can be enumerated (vocabulary 3, horizon 2: nine sequences).

- [grpo.baseline]: the expected GRPO gradient with the group-mean baseline is (1 - 1/G) grad J
  (scaled by the aggregation's 1/L), and with the leave-one-out baseline exactly grad J / L. The
  expectation is taken exactly, by enumerating every group of G sequences with its probability.
- [kl.k3]: k3 >= 0 pointwise and E_p[sum_t k3] = KL(p || ref) over sequences; k1 is unbiased too
  but takes negative values; k2 is biased.
- [grpo.onpolicy]: with ratio = 1 the loss VALUE is 0 (group-mean baseline) but its gradient is the
  advantage-weighted log-likelihood gradient.
"""

from __future__ import annotations

import dataclasses
import itertools
from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from hypothesis import given
from hypothesis import strategies as st
from numpy.testing import assert_allclose

from llm_check.config import preset
from llm_check.grpo import (GRPOConfig, advantages, aggregate, group_advantages, grpo_loss,
                            kl_per_token, reward_stats, shaped_rewards)
from llm_check.logprobs import token_logprobs
from llm_check.model import Qwen3
from theory.errors import InputError

pytestmark = pytest.mark.usefixtures("f32")

V, L = 3, 2  # vocabulary, horizon
SEQS = np.array(list(itertools.product(range(V), repeat=L)), np.int32)  # [9, 2]
REWARD = np.array([0.0, 1.0, 0.3, 2.0, 0.0, 1.5, 0.7, 0.2, 1.0], np.float32)


def _tiny(seed: int):
    cfg = dataclasses.replace(preset("tiny"), vocab_size=V, hidden_size=16, intermediate_size=32,
                              num_hidden_layers=1, num_attention_heads=2, num_key_value_heads=1,
                              head_dim=8, bos_token_id=None, eos_token_id=None, pad_token_id=None)
    model = Qwen3(cfg, rngs=nnx.Rngs(seed), init_std=0.3)
    return nnx.split(model, nnx.Param, ...)


@partial(jax.jit, static_argnums=0)
def _token_logp(graphdef, params, rest):
    """[9, L] log p(y_t | x, y_<t) for every sequence y, after the one-token prompt 0."""
    tokens = jnp.concatenate([jnp.zeros((len(SEQS), 1), jnp.int32), jnp.asarray(SEQS)], axis=1)
    return token_logprobs(nnx.merge(graphdef, params, rest), tokens, jnp.ones_like(tokens))


@partial(jax.jit, static_argnums=0)
def _weighted_grad(graphdef, params, rest, coef):
    """grad_theta sum_{y,t} coef[y, t] log p(y_t | x, y_<t)."""
    return jax.grad(lambda q: jnp.sum(coef * _token_logp(graphdef, q, rest)))(params)


def _expected_grpo_grad(cfg: GRPOConfig, g: int, std_normalize=False):
    graphdef, params, rest = _tiny(0)
    lp = _token_logp(graphdef, params, rest)
    p = np.exp(np.asarray(lp, np.float64).sum(-1))
    assert abs(p.sum() - 1) < 1e-5 and p.min() > 1e-3  # a proper, non-degenerate distribution
    groups = np.array(list(itertools.product(range(len(SEQS)), repeat=g)))  # [9^G, G]
    weight = np.prod(p[groups], axis=1)
    rewards = jnp.asarray(REWARD[groups])
    adv = group_advantages(rewards, baseline=cfg.baseline, std_normalize=std_normalize,
                           ddof=1, eps=1e-6)
    mask = jnp.ones((g, L), jnp.int32)

    def loss_of_group(group_lp, a):  # on-policy: old = current, so ratio = 1
        return grpo_loss(group_lp, group_lp, group_lp, a, mask, cfg)[0]

    dl = jax.jit(jax.vmap(jax.grad(loss_of_group)))(lp[groups], adv)  # [9^G, G, L]
    coef = np.zeros((len(SEQS), L))
    np.add.at(coef, groups.reshape(-1), (np.asarray(dl) * weight[:, None, None]).reshape(-1, L))
    expected = _weighted_grad(graphdef, params, rest, jnp.asarray(coef, jnp.float32))
    # grad J = sum_y r(y) p(y) grad log p(y), and grad log p(y) = sum_t grad log p(y_t | ...)
    pr = jnp.asarray(np.repeat((p * REWARD)[:, None], L, axis=1), jnp.float32)
    grad_j = _weighted_grad(graphdef, params, rest, pr)
    flat = lambda t: np.concatenate([np.ravel(x) for x in jax.tree.leaves(t)])  # noqa: E731
    return flat(expected), flat(grad_j)


@pytest.mark.parametrize("aggregation", ["seq_mean_token_mean", "token_mean", "fixed_length"])
def test_group_mean_baseline_is_biased_by_one_minus_one_over_g(aggregation):
    g = 3
    cfg = GRPOConfig(group_size=g, beta=0.0, baseline="mean", aggregation=aggregation)
    expected, grad_j = _expected_grpo_grad(cfg, g)
    assert np.linalg.norm(grad_j) > 1e-2
    assert_allclose(expected, -(1 - 1 / g) / L * grad_j, rtol=2e-3, atol=2e-6)


def test_leave_one_out_baseline_is_unbiased():
    g = 3
    cfg = GRPOConfig(group_size=g, beta=0.0, baseline="loo")
    expected, grad_j = _expected_grpo_grad(cfg, g)
    assert_allclose(expected, -grad_j / L, rtol=2e-3, atol=2e-6)


def test_std_normalization_is_not_the_policy_gradient():
    g = 3
    cfg = GRPOConfig(group_size=g, beta=0.0, baseline="mean")
    expected, grad_j = _expected_grpo_grad(cfg, g, std_normalize=True)
    scale = -np.dot(expected, grad_j) / np.dot(grad_j, grad_j)
    # the further bias of [grpo.baseline]: not a multiple of grad J
    assert np.linalg.norm(expected + scale * grad_j) > 0.05 * np.linalg.norm(expected)


def test_k3_and_k1_are_unbiased_for_sequence_kl_and_k2_is_not():
    graphdef, params, rest = _tiny(0)
    _, ref_params, _ = _tiny(1)
    lp = _token_logp(graphdef, params, rest)
    ref = _token_logp(graphdef, ref_params, rest)
    p = jnp.exp(lp.sum(-1))
    exact = float(jnp.sum(p * (lp.sum(-1) - ref.sum(-1))))
    assert exact > 0.05
    est = {k: float(jnp.sum(p * kl_per_token(lp, ref, k).sum(-1))) for k in ("k1", "k2", "k3")}
    assert_allclose(est["k3"], exact, rtol=1e-5)
    assert_allclose(est["k1"], exact, rtol=1e-5)
    assert abs(est["k2"] - exact) > 1e-3
    assert float(kl_per_token(lp, ref, "k1").min()) < 0  # k1 can be negative


@given(st.lists(st.floats(-20, 0, allow_nan=False), min_size=4, max_size=4),
       st.lists(st.floats(-20, 0, allow_nan=False), min_size=4, max_size=4))
def test_k3_is_nonnegative(logp, ref):
    k = kl_per_token(jnp.asarray(logp, jnp.float32), jnp.asarray(ref, jnp.float32), "k3")
    assert float(k.min()) >= 0.0


def test_on_policy_loss_value_is_zero_but_its_gradient_is_not():
    graphdef, params, rest = _tiny(0)
    cfg = GRPOConfig(group_size=9, beta=0.0)
    adv = group_advantages(jnp.asarray(REWARD)[None], std_normalize=True).reshape(-1)

    def loss(q):
        lp = _token_logp(graphdef, q, rest)
        return grpo_loss(lp, lp, lp, adv, jnp.ones((9, L)), cfg)[0]

    value, grads = jax.value_and_grad(loss)(params)
    assert abs(float(value)) < 1e-6
    weighted = jax.grad(lambda q: -jnp.mean(adv * _token_logp(graphdef, q, rest).sum(-1)) / L)(
        params)
    for a, b in zip(jax.tree.leaves(grads), jax.tree.leaves(weighted)):
        assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-4, atol=1e-7)
    assert max(float(jnp.abs(x).max()) for x in jax.tree.leaves(grads)) > 1e-3


def test_advantages():
    r = jnp.asarray([[1.0, 0.0, 0.0, 1.0], [2.0, 2.0, 2.0, 2.0]])
    mean = group_advantages(r, baseline="mean", std_normalize=False)
    loo = group_advantages(r, baseline="loo", std_normalize=False)
    assert_allclose(loo, mean * 4 / 3, rtol=1e-6)
    assert_allclose(mean[0], [0.5, -0.5, -0.5, 0.5], rtol=1e-6)
    std = group_advantages(r, std_normalize=True, ddof=1, eps=0.0)[0]
    assert_allclose(std, np.array([0.5, -0.5, -0.5, 0.5]) / np.std([1, 0, 0, 1], ddof=1),
                    rtol=1e-6)
    z = group_advantages(r, std_normalize=True, ddof=1, eps=1e-4)[1]
    assert_allclose(z, 0.0, atol=0)  # a zero-std group carries no signal
    stats = reward_stats(np.asarray(r).reshape(-1), 4)
    assert stats["frac_reward_zero_std"] == 0.5 and stats["reward"] == 1.25


def test_clipping_zeroes_the_gradient_outside_the_trust_region_and_is_counted():
    cfg = GRPOConfig(clip_low=0.2, clip_high=0.2, beta=0.0, aggregation="token_mean")
    old = jnp.zeros((4, 1))
    lp = jnp.log(jnp.asarray([[1.5], [1.1], [0.5], [1.0]]))
    adv = jnp.asarray([1.0, -1.0, -1.0, 1.0])
    (loss, m), grad = jax.value_and_grad(
        lambda x: grpo_loss(x, old, old, adv, jnp.ones((4, 1)), cfg), has_aux=True)(lp)
    # ratio 1.5 with A > 0 and ratio 0.5 with A < 0 are clipped: no gradient; the others have one
    assert_allclose(np.asarray(grad)[:, 0], [0.0, 1.1 / 4, 0.0, -1.0 / 4], rtol=1e-6)
    assert float(m["clip_ratio/high_mean"]) == 0.25 and float(m["clip_ratio/low_mean"]) == 0.25
    assert float(m["clip_ratio/region_mean"]) == 0.5


def test_aggregations_weight_tokens_as_documented():
    per = jnp.asarray([[1.0, 1.0, 1.0, 1.0], [4.0, 0.0, 0.0, 0.0]])
    mask = jnp.asarray([[1, 1, 1, 1], [1, 0, 0, 0]])
    assert_allclose(float(aggregate(per, mask, "seq_mean_token_mean")), (1.0 + 4.0) / 2, rtol=1e-6)
    assert_allclose(float(aggregate(per, mask, "token_mean")), 8.0 / 5, rtol=1e-6)
    assert_allclose(float(aggregate(per, mask, "fixed_length")), 8.0 / 8, rtol=1e-6)


@pytest.mark.parametrize("kw,name", [({"beta": -0.1}, "beta"), ({"group_size": 1}, "group_size"),
                                     ({"kl_estimator": "k4"}, "kl_estimator"),
                                     ({"baseline": "median"}, "baseline"),
                                     ({"aggregation": "sum"}, "aggregation"),
                                     ({"inner_iters": 0}, "inner_iters"),
                                     ({"temperature": 0.0}, "temperature")])
def test_invalid_settings_are_named(kw, name):
    with pytest.raises(InputError, match=f"setting {name}"):
        GRPOConfig(**kw).validate()


@pytest.mark.parametrize("kl_in_baseline", [False, True])
def test_kl_in_the_reward_with_rloo_is_the_exact_regularized_gradient(kl_in_baseline):
    """[kl.grad], [kl.token]: beta * (log p - log ref) of the whole sequence subtracted from the
    reward, leave-one-out advantages (of r alone, or of the penalized reward), no std division:
    E[grad loss] = -grad J_beta / L exactly, with
    grad J_beta = sum_y p(y) [r(y) - beta log(p(y)/ref(y))] grad log p(y)."""
    g, beta = 3, 0.7
    cfg = GRPOConfig(group_size=g, beta=beta, kl_mode="reward", kl_estimator="k1", baseline="loo",
                     std_normalize=False, aggregation="fixed_length",
                     kl_in_baseline=kl_in_baseline)
    graphdef, params, rest = _tiny(0)
    _, ref_params, _ = _tiny(1)
    lp = _token_logp(graphdef, params, rest)
    ref = _token_logp(graphdef, ref_params, rest)
    p = np.exp(np.asarray(lp, np.float64).sum(-1))
    logratio = np.asarray(lp.sum(-1) - ref.sum(-1), np.float64)
    groups = np.array(list(itertools.product(range(len(SEQS)), repeat=g)))
    weight = np.prod(p[groups], axis=1)
    adv = advantages(jnp.asarray(REWARD[groups]).reshape(-1),
                     jnp.asarray(logratio[groups], jnp.float32).reshape(-1), cfg).reshape(groups.shape)
    mask = jnp.ones((g, L), jnp.int32)
    dl = jax.jit(jax.vmap(jax.grad(lambda glp, a, gref: grpo_loss(glp, None, gref, a, mask,
                                                                  cfg)[0])))(
        lp[groups], adv, ref[groups])
    coef = np.zeros((len(SEQS), L))
    np.add.at(coef, groups.reshape(-1), (np.asarray(dl) * weight[:, None, None]).reshape(-1, L))
    flat = lambda t: np.concatenate([np.ravel(x) for x in jax.tree.leaves(t)])  # noqa: E731
    expected = flat(_weighted_grad(graphdef, params, rest, jnp.asarray(coef, jnp.float32)))
    target = p * (REWARD - beta * logratio)
    grad_jb = flat(_weighted_grad(graphdef, params, rest, jnp.asarray(
        np.repeat(target[:, None], L, axis=1), jnp.float32)))
    grad_j = flat(_weighted_grad(graphdef, params, rest, jnp.asarray(
        np.repeat((p * REWARD)[:, None], L, axis=1), jnp.float32)))
    assert np.linalg.norm(grad_jb - grad_j) > 0.1 * np.linalg.norm(grad_j)  # the KL matters here
    assert_allclose(expected, -grad_jb / L, rtol=2e-3, atol=2e-6)


def test_kl_mode_decides_where_the_kl_goes():
    lp = jnp.log(jnp.asarray([[0.5, 0.9], [0.2, 0.8]]))
    ref = jnp.log(jnp.asarray([[0.4, 0.9], [0.3, 0.7]]))
    adv, mask = jnp.zeros(2), jnp.ones((2, 2))
    in_loss = GRPOConfig(beta=0.5, kl_mode="loss", kl_estimator="k3")
    in_reward = GRPOConfig(beta=0.5)
    assert float(grpo_loss(lp, None, ref, adv, mask, in_loss)[0]) > 0  # k3 > 0 enters the loss
    assert float(grpo_loss(lp, None, ref, adv, mask, in_reward)[0]) == 0.0
    seq = jnp.sum(lp - ref, axis=-1)
    assert_allclose(shaped_rewards(jnp.ones(2), seq, in_reward), 1 - 0.5 * seq, rtol=1e-6)
    assert_allclose(shaped_rewards(jnp.ones(2), seq, in_loss), 1.0, rtol=0)


def test_the_kl_penalty_outside_the_baseline_acts_on_a_group_of_identical_completions():
    """A prompt whose G samples are one and the same unrewarded answer: with the penalty inside
    the baseline every advantage is 0 (nothing pulls the prompt back); outside it, each gets
    -beta k, pushing that answer's probability down towards the reference's."""
    g, beta = 4, 0.25
    r = jnp.zeros(g)
    k = jnp.full(g, 3.0)  # log p - log ref of the shared completion
    inside = GRPOConfig(group_size=g, beta=beta, kl_in_baseline=True)
    outside = GRPOConfig(group_size=g, beta=beta, kl_in_baseline=False)
    assert_allclose(advantages(r, k, inside), 0.0, atol=1e-7)
    assert_allclose(advantages(r, k, outside), -beta * 3.0, rtol=1e-6)
    # with distinct completions, the reward part keeps its leave-one-out baseline either way
    r2, k2 = jnp.asarray([1.0, 0.0, 0.0, 1.0]), jnp.asarray([0.5, -1.0, 2.0, 0.0])
    loo = group_advantages(r2[None], baseline="loo", std_normalize=False)[0]
    assert_allclose(advantages(r2, k2, outside), loo - beta * k2, rtol=1e-6)
    # and the loss mode leaves the rewards alone
    in_loss = GRPOConfig(group_size=g, beta=beta, kl_mode="loss", kl_estimator="k3")
    assert_allclose(advantages(r2, k2, in_loss), loo, rtol=1e-6)


def test_logprobs_are_scored_at_the_sampling_temperature():
    graphdef, params, rest = _tiny(0)
    model = nnx.merge(graphdef, params, rest)
    tokens = jnp.asarray([[0, 1, 2, 1]], jnp.int32)
    z = model(tokens)[:, :-1]
    for t in (1.0, 0.7):
        want = jnp.take_along_axis(jax.nn.log_softmax(z / t, axis=-1), tokens[:, 1:, None],
                                   axis=-1)[..., 0]
        got = token_logprobs(model, tokens, jnp.ones_like(tokens), temperature=t)
        assert_allclose(np.asarray(got), np.asarray(want), rtol=1e-5, atol=1e-6)
    cold = token_logprobs(model, tokens, jnp.ones_like(tokens), temperature=0.7)
    warm = token_logprobs(model, tokens, jnp.ones_like(tokens))
    assert float(jnp.abs(cold - warm).max()) > 1e-2


def test_one_inner_iteration_ignores_the_passed_old_logprobs():
    """mu = 1: the step's own log-probs are the old ones (ratio exactly 1), so a stale or garbage
    old_logp changes nothing."""
    import optax

    from llm_check.grpo import make_grpo_step

    graphdef, params, rest = _tiny(0)
    batch = (jnp.zeros((1, 1), jnp.int32), jnp.ones((1, 1), jnp.int32), jnp.asarray(SEQS))
    cmask = jnp.ones((len(SEQS), L), jnp.int32)
    adv = group_advantages(jnp.asarray(REWARD)[None], baseline="loo",
                           std_normalize=False).reshape(-1)
    opt = optax.sgd(0.1)
    cfg = GRPOConfig(group_size=9, beta=0.0, clip_low=0.01, clip_high=0.01)
    step = make_grpo_step(graphdef, rest, opt, cfg)
    ref = jnp.zeros((len(SEQS), L))
    a, _, ma = step(params, opt.init(params), *batch, cmask, ref - 3.0, ref, adv)
    b, _, mb = step(params, opt.init(params), *batch, cmask, ref + 5.0, ref, adv)
    assert float(ma["clip_ratio/region_mean"]) == 0.0
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
        assert_allclose(np.asarray(x), np.asarray(y), rtol=0, atol=0)
    # and the step is the advantage-weighted log-likelihood gradient of the enumerated sequences
    lp = _token_logp(graphdef, params, rest)
    assert_allclose(np.asarray(ma["loss"]), -float(jnp.mean(adv)), atol=1e-6)
    two = make_grpo_step(graphdef, rest, opt, dataclasses.replace(cfg, inner_iters=2))
    c, _, mc = two(params, opt.init(params), *batch, cmask, lp - 3.0, lp, adv)
    assert float(mc["clip_ratio/region_mean"]) > 0  # with mu = 2 the passed old log-probs count


def test_beta_is_an_argument_of_the_compiled_step():
    """The sweep compiles one step per setting and passes each beta: a step built at one beta and
    called with another equals the step built at the other (k3 in the loss, where beta enters the
    program), and differs from the step at its own beta."""
    import optax

    from llm_check.grpo import make_grpo_step

    graphdef, params, rest = _tiny(0)
    _, ref_params, _ = _tiny(1)
    batch = (jnp.zeros((1, 1), jnp.int32), jnp.ones((1, 1), jnp.int32), jnp.asarray(SEQS))
    cmask = jnp.ones((len(SEQS), L), jnp.int32)
    ref = _token_logp(graphdef, ref_params, rest)
    adv = group_advantages(jnp.asarray(REWARD)[None], std_normalize=True).reshape(-1)
    opt = optax.sgd(0.1)
    cfg = GRPOConfig(group_size=9, kl_mode="loss", kl_estimator="k3")
    at = lambda b: make_grpo_step(graphdef, rest, opt, dataclasses.replace(cfg, beta=b))  # noqa: E731
    args = (params, opt.init(params), *batch, cmask, None, ref, adv)
    shared, own, other = at(0.1)(*args, 0.5)[0], at(0.5)(*args)[0], at(0.1)(*args)[0]
    for x, y, z in zip(jax.tree.leaves(shared), jax.tree.leaves(own), jax.tree.leaves(other)):
        assert_allclose(np.asarray(x), np.asarray(y), rtol=1e-6, atol=1e-7)
    assert max(float(jnp.abs(x - z).max()) for x, z in zip(jax.tree.leaves(shared),
                                                          jax.tree.leaves(other))) > 1e-4


def test_the_rl_schedule_spans_every_inner_update(monkeypatch):
    """An RL step makes ``inner_iters`` optimizer updates, so the stage's cosine schedule runs over
    ``rl_steps * inner_iters`` of them: no update of the stage is left at a learning rate of 0
    (sized to ``rl_steps``, the second half of a mu = 2 stage would be)."""
    from llm_check import pipeline
    from llm_check.run_config import RunConfig
    from llm_check.sft import split_model

    cfg = RunConfig(rl_steps=10)
    cfg = dataclasses.replace(cfg, grpo=dataclasses.replace(cfg.grpo, inner_iters=2))
    assert cfg.rl_optim.schedule == "cosine" and cfg.rl_optim.final_lr_frac == 0.0
    opt = pipeline.stage_optimizer(cfg.rl_optim, cfg.rl_steps, cfg.grpo.inner_iters)
    x = {"w": jnp.ones((2, 2))}
    state, sizes = opt.init(x), []
    for _ in range(cfg.rl_steps * cfg.grpo.inner_iters):
        upd, state = opt.update({"w": jnp.ones((2, 2))}, state, x)
        sizes.append(float(jnp.abs(upd["w"]).max()))
    # Adam on a constant gradient: each update is the lr of its count, times 1 / (1 + eps)
    assert min(sizes) > 0 and sizes[0] == pytest.approx(cfg.rl_optim.lr / (1 + cfg.rl_optim.eps),
                                                        rel=1e-5)
    # the pipeline's RL step is built with that count
    sized = []
    real = pipeline.stage_optimizer
    monkeypatch.setattr(pipeline, "stage_optimizer",
                        lambda o, n, u=1: sized.append((o, n * u)) or real(o, n, u))
    graphdef, _, rest = split_model(Qwen3(preset("tiny"), rngs=nnx.Rngs(0)))
    pipeline.make_jitted(cfg, graphdef, rest)
    assert (cfg.rl_optim, 20) in sized
