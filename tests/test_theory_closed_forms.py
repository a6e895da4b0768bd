"""NumPy closed forms against their sympy statements and against direct computation."""

from __future__ import annotations

import numpy as np
import pytest
import sympy as sp
from numpy.testing import assert_allclose

from theory import closed_forms as cf
from theory import sft_then_rl
from theory.errors import InputError


def _instance(seed: int, x: int = 2, y: int = 3):
    rng = np.random.default_rng(seed)
    q = rng.dirichlet(np.ones(x))
    expert = rng.dirichlet(np.ones(y), size=x)
    reward = rng.normal(size=(x, y))
    sft = rng.dirichlet(np.ones(y), size=x)
    return q, expert, reward, sft


def _sft_loss(q, expert, p):
    return float(np.sum(q[:, None] * expert * -np.log(p)))


@pytest.mark.parametrize("seed", range(5))
def test_identity_matches_a_direct_computation(seed):
    q, expert, reward, sft = _instance(seed)
    beta = 0.3 + seed
    p_rl = cf.regularized_optimum(sft, reward, beta)
    direct = _sft_loss(q, expert, p_rl) - _sft_loss(q, expert, sft)
    assert_allclose(cf.sft_loss_change_after_rl(q, expert, reward, beta, sft), direct, rtol=1e-10, atol=1e-12)
    # c1 is the same quantity started at the SFT optimum, and equals E_x KL(p_D || p_RL).
    p_opt = cf.regularized_optimum(expert, reward, beta)
    assert_allclose(cf.c1(q, expert, reward, beta), _sft_loss(q, expert, p_opt) - _sft_loss(q, expert, expert),
                    rtol=1e-10, atol=1e-12)
    assert_allclose(cf.c1(q, expert, reward, beta), np.dot(q, cf.kl_divergence(expert, p_opt)),
                    rtol=1e-10, atol=1e-12)


def test_c1_matches_the_sympy_statement():
    q, expert, reward, _ = _instance(7, x=1)
    beta = sp.Rational(7, 10)
    exact = sft_then_rl.c1_rhs([sp.Float(v, 30) for v in expert[0]], [sp.Float(v, 30) for v in reward[0]], beta)
    assert_allclose(cf.c1(q, expert, reward, 0.7), float(exact), rtol=1e-12, atol=0)


def test_large_beta_expansion_is_accurate_to_third_order():
    q, expert, reward, _ = _instance(3)
    for beta in (20.0, 40.0):
        err = abs(cf.c1(q, expert, reward, beta) - cf.c1_large_beta(q, expert, reward, beta))
        assert err < 2.0 / beta ** 4


def test_regularized_optimum_handles_zeros_and_large_ratios():
    p = cf.regularized_optimum([[0.5, 0.5, 0.0]], [[800.0, 0.0, 5.0]], 1.0)
    assert_allclose(p, [[1.0, 0.0, 0.0]], rtol=0, atol=1e-300)
    assert_allclose(cf.regularized_optimum([[0.5, 0.5]], [[1.0, 0.0]], 1.0)[0, 0], np.e / (1 + np.e), rtol=1e-15)


def test_noisy_expert():
    for eps, beta in ((0.1, 1.0), (0.3, 0.2), (0.05, 5.0)):
        expected = np.log((1 - eps) * np.exp(1 / beta) + eps) - (1 - eps) / beta
        assert_allclose(cf.c1_noisy_expert(eps, beta), expected, rtol=1e-12)
        assert_allclose(cf.c1_noisy_expert(eps, beta, n_wrong=4), expected, rtol=1e-12)
    assert cf.c1_noisy_expert(0.0, 1.0) == 0.0
    assert abs(cf.c1_noisy_expert(1.0, 1.0)) < 1e-15
    assert cf.c1_noisy_expert(0.1, 0.5) > cf.c1_noisy_expert(0.1, 1.0)   # decreasing in beta


def test_threshold_example_numbers():
    s, r, pd = [[0.6, 0.3, 0.1]], [[1.0, 1.0, 0.0]], [[1.0, 0.0, 0.0]]
    after = [-np.log(0.6) + cf.sft_loss_change_after_rl([1.0], pd, r, b, s) for b in (0.2, 1.0, 5.0)]
    assert_allclose(after, [0.406, 0.446, 0.493], rtol=0, atol=5e-4)


def test_optimal_duration_example():
    assert_allclose(cf.optimal_rl_duration(0.5, 0.3, 2.0, 1.5), 0.4902, rtol=0, atol=5e-5)


@pytest.mark.parametrize("call,message", [
    (lambda: cf.c1([1.0], [[0.5, 0.6]], [[1.0, 0.0]], 1.0), "expert: probabilities must sum to 1"),
    (lambda: cf.c1([1.0], [[0.5, 0.5]], [[1.0, 0.0, 2.0]], 1.0), "reward: shape"),
    (lambda: cf.c1([1.0], [[0.5, 0.5]], [[1.0, 0.0]], 0.0), "beta: must be a positive number"),
    (lambda: cf.c1([0.5, 0.5], [[0.5, 0.5]], [[1.0, 0.0]], 1.0), "prompt_weights: 2 prompts"),
    (lambda: cf.c1([1.0], [[1.5, -0.5]], [[1.0, 0.0]], 1.0), "expert: entries must be >= 0"),
    (lambda: cf.c1_noisy_expert(1.5, 1.0), "eps: must lie in [0, 1]"),
    (lambda: cf.c1_noisy_expert(0.1, 1.0, n_wrong=0), "n_wrong"),
    (lambda: cf.optimal_rl_duration(0.5, 0.0, 2.0, 1.5), "lambda_w: must be > 0"),
])
def test_bad_input_raises_input_error(call, message):
    with pytest.raises(InputError, match=message.replace("[", r"\[").replace("]", r"\]")):
        call()


# ---------------------------------------------------------------- estimator fixed points (§6)

def test_estimator_fixed_points_are_stationary_and_checked():
    import numpy as np
    import pytest
    from theory import closed_forms as cf
    from theory.errors import InputError
    ref = np.array([[0.2, 0.3, 0.5], [0.6, 0.3, 0.1]])
    r = np.array([[1.0, 0.0, 0.5], [0.0, 1.0, 0.0]])
    beta = np.array([0.5, 2.0])
    p = cf.k3_fixed_point(ref, r, beta)
    j = (p * r).sum(-1, keepdims=True)
    assert np.allclose(p, beta[:, None] * ref / (beta[:, None] + j - r), atol=1e-12)
    assert np.allclose(cf.group_mean_fixed_point(ref, r, 0.5, 4), cf.gibbs_tilt(ref, r, 0.5 * 4 / 3))
    assert cf.group_mean_beta(1.0, 2) == 2.0
    s = cf.std_division_fixed_point([0.1, 0.5], 4, 0.5)
    m = cf.std_division_multiplier(s, 4)
    logit = lambda x: np.log(x / (1 - x))  # noqa: E731
    assert np.allclose(0.5 * (logit(s) - logit(np.array([0.1, 0.5]))), m, atol=1e-9)
    for bad in (lambda: cf.gibbs_tilt(ref, r, -1), lambda: cf.k3_fixed_point(ref[:, :2], r, 1),
                lambda: cf.std_division_multiplier(1.5, 4), lambda: cf.group_mean_beta(1, 1),
                lambda: cf.estimator_fixed_point(ref, r, 1, 4, "std")):
        with pytest.raises(InputError):
            bad()
