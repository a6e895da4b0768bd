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


@pytest.mark.parametrize("scan_layers", [False, True])
def test_weight_decay_skips_the_norms_of_stacked_layers_too(scan_layers):
    """With the layers stacked, a norm weight is [L, D]: still no decay; every kernel and the
    embedding are decayed."""
    model = Qwen3(preset("tiny"), rngs=nnx.Rngs(0), scan_layers=scan_layers)
    _, params, _ = sft.split_model(model)
    opt = sft.make_optimizer(sft.OptimConfig(lr=0.1, weight_decay=0.5, clip_norm=1e9))
    upd, _ = opt.update(jax.tree.map(jnp.zeros_like, params), opt.init(params), params)
    flat = jax.tree_util.tree_leaves_with_path(upd)
    norms = [u for path, u in flat if "norm" in jax.tree_util.keystr(path)]
    others = [(u, p) for (path, u), p in zip(flat, jax.tree.leaves(params))
              if "norm" not in jax.tree_util.keystr(path)]
    n_layers = 1 if scan_layers else preset("tiny").num_hidden_layers  # stacked: one of each
    assert len(norms) == 4 * n_layers + 1  # 2 layer norms, q_norm, k_norm; the final norm
    assert all(float(jnp.abs(u).max()) == 0.0 for u in norms)
    assert len(others) == 7 * n_layers + 1  # 7 kernels a layer; the (tied) embedding
    for u, p in others:
        assert_allclose(np.asarray(u), -0.05 * np.asarray(p), rtol=1e-5, atol=1e-9)


@pytest.mark.parametrize("kw,name", [({"lr": 0.0}, "lr"), ({"schedule": "linear"}, "schedule"),
                                     ({"clip_norm": 0.0}, "clip_norm")])
def test_bad_optimizer_settings(kw, name):
    with pytest.raises(InputError, match=name):
        sft.OptimConfig(**kw).validate()


def _unequal_batch(tok):
    """8 rows whose completions have 1 to 15 tokens, sorted so that the 4 micro-batches of 2 rows
    hold very different token counts (a per-micro-batch mean then weighs tokens unequally)."""
    completions = ["7", "12", "345", "6789", "1 2 3 4 5", "98765 4321", "1111 2222 3333",
                   "123 456 789 123 456"]
    rows = tuple(data.Example(prompt=f"{i}+{i}=", completion=c, answer=c)
                 for i, c in enumerate(completions))
    b = data.encode_examples(tok, rows)
    counts = b.completion_mask[:, 1:].sum(-1)
    assert len(set(counts.tolist())) >= 6 and counts.max() >= 5 * counts.min(), counts
    return b


def _broken_step(graphdef, rest, opt):
    """The bug the test must see: each micro-batch normalized by its own token count."""
    def mean_nll(params, tokens, attn, cmask):
        nll, n = sft.nll_sums(graphdef, params, rest, tokens, attn, cmask, 64)
        return nll.sum() / n.sum()

    @jax.jit
    def step(params, opt_state, tokens, attn, cmask):
        parts = [jax.value_and_grad(mean_nll)(params, tokens[a], attn[a], cmask[a])
                 for a in range(tokens.shape[0])]
        grads = jax.tree.map(lambda *g: sum(g) / len(g), *[g for _, g in parts])
        updates, opt_state = opt.update(grads, opt_state, params)
        loss = sum(v for v, _ in parts) / len(parts)
        return optax.apply_updates(params, updates), opt_state, {"loss": loss}

    return step


def test_grad_accumulation_with_unequal_completion_lengths_is_a_global_token_mean():
    """4 micro-batches of 2 rows with 1..15 completion tokens each give exactly the update of one
    batch of 8: the gradient of (sum of token NLLs) / (number of tokens), over all 8 rows."""
    tok, model, _ = _setup()
    b = _unequal_batch(tok)
    graphdef, params, rest = sft.split_model(model)
    opt = optax.sgd(1.0)  # params - update = the gradient itself
    step = sft.make_sft_step(graphdef, rest, opt, chunk_size=64)

    def global_mean(params):  # the reference, written out: one token mean over the whole batch
        nll, n = sft.nll_sums(graphdef, params, rest, jnp.asarray(b.tokens),
                              jnp.asarray(b.attention_mask), jnp.asarray(b.completion_mask), 64)
        return nll.sum() / n.sum()

    loss_ref, grad_ref = jax.jit(jax.value_and_grad(global_mean))(params)  # compiled: faster
    p4, _, m4 = step(params, opt.init(params), *map(jnp.asarray, sft.stack_micro(b, 4)))
    assert_allclose(float(m4["loss"]), float(loss_ref), rtol=1e-5)

    def update(p_new):
        return [np.asarray(a) - np.asarray(c) for a, c in
                zip(jax.tree.leaves(params), jax.tree.leaves(p_new))]

    ref = [np.asarray(g) for g in jax.tree.leaves(grad_ref)]
    for got, want in zip(update(p4), ref):
        assert_allclose(got, want, rtol=1e-3, atol=1e-6)
    # the same comparison rejects a per-micro-batch normalization on this batch
    broken, _, _ = _broken_step(graphdef, rest, opt)(params, opt.init(params),
                                                     *map(jnp.asarray, sft.stack_micro(b, 4)))
    gap = max(float(np.max(np.abs(g - w) / (1e-6 + 1e-3 * np.abs(w))))
              for g, w in zip(update(broken), ref))
    assert gap > 10, gap


def test_completion_window_covers_each_rows_completion_targets():
    m = np.zeros((4, 9), np.int32)
    m[0, 5:7] = 1   # targets 4..5 of completion_mask[:, 1:]: width 2
    m[1, 2:8] = 1   # width 6
    m[2, 3] = m[2, 6] = 1  # not contiguous: first target 2, last 5: width 4
    assert data.completion_window(m) == 6
    assert data.completion_window(m[[0, 2, 3]]) == 4
    assert data.completion_window(np.zeros((2, 5), np.int32)) == 1  # nothing to cover
    tok, _, b = _setup()
    assert data.completion_window(b.completion_mask) == 2  # one answer digit and <|im_end|>


def test_the_lm_head_on_the_completion_window_gives_the_full_loss_and_gradient():
    """The SFT step's window path (LM head at the W completion positions only) against the LM
    head at every position: the same sums and gradients; a window one short loses loss terms."""
    tok, model, b = _setup()
    graphdef, params, rest = sft.split_model(model)
    args = (jnp.asarray(b.tokens), jnp.asarray(b.attention_mask), jnp.asarray(b.completion_mask))
    w = data.completion_window(b.completion_mask)

    def total(p, window):
        nll, n = sft.nll_sums(graphdef, p, rest, *args, 64, window)
        return nll.sum(), (nll, n)

    grad = jax.jit(jax.grad(total, has_aux=True), static_argnums=1)
    g_full, (nll_full, n_full) = grad(params, None)
    for window in (w, w + 5):  # a wider window (past the end of a row, too) changes nothing
        g_win, (nll_win, n_win) = grad(params, window)
        assert_allclose(np.asarray(nll_win), np.asarray(nll_full), rtol=1e-5)
        assert_allclose(np.asarray(n_win), np.asarray(n_full), rtol=0)
        for a, c in zip(jax.tree.leaves(g_win), jax.tree.leaves(g_full), strict=True):
            assert_allclose(np.asarray(a), np.asarray(c), rtol=1e-4, atol=1e-6)
    _, (_, n_short) = grad(params, w - 1)
    assert float(n_short.sum()) < float(n_full.sum())  # so the width is what covers the loss

    opt = optax.sgd(1.0)
    step = sft.make_sft_step(graphdef, rest, opt, chunk_size=64)
    arrays = [jnp.asarray(x) for x in sft.stack_micro(b, 2)]
    _, _, m_full = step(params, opt.init(params), *arrays)
    _, _, m_win = step(params, opt.init(params), *arrays, window=w)
    assert_allclose(float(m_win["loss"]), float(m_full["loss"]), rtol=1e-5)
    assert_allclose(float(m_win["grad_norm"]), float(m_full["grad_norm"]), rtol=1e-4)


@pytest.mark.slow
def test_the_window_saves_the_lm_head_flops_at_qwen3_06b_shapes():
    """XLA's FLOP count of the compiled SFT step (abstract weights: nothing of 0.6B is made), at
    CoLA-like shapes (8 rows x 104 tokens, answer window 5): measured 2.91 -> 2.31 TFLOP (x0.794);
    predicted x0.756 by ``bench.sft_step_flops``: 6N (0.44B layer weights at every position, the
    0.156B head at T or W positions) plus 12 L H d T attention. Pinned to the measured ratio +-3%."""
    from llm_check.bench import sft_step_flops

    b, t, w = 8, 104, 5
    cfg = preset("qwen3-0.6b")
    graphdef, params, rest = sft.split_model(nnx.eval_shape(lambda: Qwen3(cfg, rngs=nnx.Rngs(0))))
    opt = optax.adamw(1e-5)
    step = sft.make_sft_step(graphdef, rest, opt, chunk_size=64)
    ints = [jax.ShapeDtypeStruct((1, b, t), jnp.int32)] * 3

    def flops(window):
        ca = step.lower(params, jax.eval_shape(opt.init, params), *ints,
                        window=window).compile().cost_analysis()
        return (ca[0] if isinstance(ca, list) else ca)["flops"]

    full, win = flops(None), flops(w)
    predicted = sft_step_flops(cfg, b, t, w) / sft_step_flops(cfg, b, t)
    print(f"XLA: {full:.3e} -> {win:.3e} FLOP (x{win / full:.3f}); predicted x{predicted:.3f}")
    assert 0.77 < win / full < 0.82
    assert abs(predicted - 0.756) < 0.005
