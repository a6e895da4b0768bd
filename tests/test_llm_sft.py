"""llm_check.sft: the masked completion cross-entropy, gradient accumulation, the optimizer."""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx
from numpy.testing import assert_allclose

from llm_check import data, sft
from llm_check.config import preset
from llm_check.model import Qwen3
from llm_check.tokenizer import load_tokenizer
from theory.errors import InputError

pytestmark = pytest.mark.usefixtures("f32")


def _setup(n=8):
    tok = load_tokenizer("tiny")
    cfg = dataclasses.replace(preset("tiny"), num_hidden_layers=1)
    model = Qwen3(cfg, rngs=nnx.Rngs(0), init_std=0.1)
    task = data.builtin_task(seed=0, eps=0.2, n_train=n, n_heldout=4)
    return tok, model, data.encode_examples(tok, task.train)


def test_nll_is_the_masked_sum_of_full_softmax_log_probs():
    tok, model, b = _setup()
    graphdef, params, rest = sft.split_model(model)
    nll, count = sft.nll_sums(graphdef, params, rest, jnp.asarray(b.tokens),
                              jnp.asarray(b.attention_mask), jnp.asarray(b.completion_mask), 7)
    logits = model(jnp.asarray(b.tokens), attention_mask=jnp.asarray(b.attention_mask))
    logp = jax.nn.log_softmax(logits[:, :-1], axis=-1)
    tgt = np.take_along_axis(np.asarray(logp), b.tokens[:, 1:, None], axis=-1)[..., 0]
    m = b.completion_mask[:, 1:]
    assert_allclose(np.asarray(nll), -(tgt * m).sum(-1), rtol=1e-5, atol=1e-5)
    assert_allclose(np.asarray(count), m.sum(-1), rtol=0)
    assert (m.sum(-1) == 2).all()  # one answer digit and <|im_end|>


def test_prompt_and_padding_tokens_carry_no_loss():
    tok, model, b = _setup()
    graphdef, params, rest = sft.split_model(model)
    args = (jnp.asarray(b.attention_mask), jnp.asarray(b.completion_mask), 64)
    base, _ = sft.nll_sums(graphdef, params, rest, jnp.asarray(b.tokens), *args)
    t2 = b.tokens.copy()
    t2[b.attention_mask == 0] = 7  # padding after the end: changes nothing
    same, _ = sft.nll_sums(graphdef, params, rest, jnp.asarray(t2), *args)
    assert_allclose(np.asarray(same), np.asarray(base), rtol=1e-6)


def test_grad_accumulation_equals_one_big_batch():
    tok, model, b = _setup()
    graphdef, params, rest = sft.split_model(model)
    opt = optax.sgd(1.0)  # linear in the gradient, so the comparison is of the gradients
    step = sft.make_sft_step(graphdef, rest, opt, chunk_size=64)
    p1, _, m1 = step(params, opt.init(params), *map(jnp.asarray, sft.stack_micro(b, 1)))
    p2, _, m2 = step(params, opt.init(params), *map(jnp.asarray, sft.stack_micro(b, 4)))
    assert_allclose(float(m1["loss"]), float(m2["loss"]), rtol=1e-5)
    for a, c in zip(jax.tree.leaves(p1), jax.tree.leaves(p2)):
        assert_allclose(np.asarray(a), np.asarray(c), rtol=1e-4, atol=1e-7)
    with pytest.raises(InputError, match="grad_accum=3"):
        sft.stack_micro(b, 3)


def test_sft_steps_fit_a_fixed_batch():
    tok, model, b = _setup()
    graphdef, params, rest = sft.split_model(model)
    opt = sft.make_optimizer(sft.OptimConfig(lr=1e-2, schedule="cosine", warmup_steps=2,
                                             total_steps=40, weight_decay=0.01))
    state = opt.init(params)
    step = sft.make_sft_step(graphdef, rest, opt, chunk_size=64)
    arrays = [jnp.asarray(x) for x in sft.stack_micro(b, 2)]
    losses = []
    for _ in range(40):
        params, state, m = step(params, state, *arrays)
        losses.append(float(m["loss"]))
    assert losses[-1] < 0.2 * losses[0]


def test_weight_decay_skips_vectors():
    opt = sft.make_optimizer(sft.OptimConfig(lr=0.1, weight_decay=0.5, clip_norm=1e9))
    params = {"w": jnp.ones((2, 2)), "norm": jnp.ones((2,))}
    zero = jax.tree.map(jnp.zeros_like, params)
    upd, _ = opt.update(zero, opt.init(params), params)
    assert float(jnp.abs(upd["norm"]).max()) == 0.0
    assert_allclose(np.asarray(upd["w"]), -0.05, rtol=1e-6)


@pytest.mark.parametrize("kw,name", [({"lr": 0.0}, "lr"), ({"schedule": "linear"}, "schedule"),
                                     ({"clip_norm": 0.0}, "clip_norm")])
def test_bad_optimizer_settings(kw, name):
    with pytest.raises(InputError, match=name):
        sft.OptimConfig(**kw).validate()
