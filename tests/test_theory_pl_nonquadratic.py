"""The pl.* bounds (docs/theory.md §5) on a non-quadratic PL function, numerically.

J(θ) = −f(θ) with f(θ) = θ² + 3 sin²θ: not convex (f'' = 2 + 6 cos 2θ reaches −4), ℓ-smooth with
ℓ = 8, and PL with the constant μ = min_θ ½ f'(θ)²/f(θ) (computed on a fine grid over [−20, 20], about
0.176, attained near θ = 2.2; the function is the example of Karimi, Nutini & Schmidt 2016). The RL flow θ' = ∇J = −f'(θ) is integrated with RK4;
the bounds of pl.rate, pl.displacement and pl.degradation must hold from every start, and a rate
that is too fast must fail from some start (so the test can fail)."""

from __future__ import annotations

import numpy as np

ELL = 8.0


def f(x):
    return x ** 2 + 3 * np.sin(x) ** 2


def df(x):
    return 2 * x + 3 * np.sin(2 * x)


def pl_constant() -> float:
    x = np.linspace(-20, 20, 400_001)
    x = x[np.abs(x) > 1e-6]
    return float(np.min(0.5 * df(x) ** 2 / f(x)))


def flow(x0: np.ndarray, times: np.ndarray, dt: float = 1e-3) -> np.ndarray:
    """θ(t) for θ' = −f'(θ), at the given times (RK4), vectorised over starts."""
    out, x, t = [], x0.astype(float), 0.0
    for target in times:
        while t < target - 1e-12:
            h = min(dt, target - t)
            k1 = -df(x)
            k2 = -df(x + h / 2 * k1)
            k3 = -df(x + h / 2 * k2)
            k4 = -df(x + h * k3)
            x = x + h / 6 * (k1 + 2 * k2 + 2 * k3 + k4)
            t += h
        out.append(x.copy())
    return np.stack(out)


def test_the_function_is_pl_smooth_and_not_convex():
    mu = pl_constant()
    assert 0.15 < mu < 0.2
    x = np.linspace(-5, 5, 10_001)
    assert np.min(2 + 6 * np.cos(2 * x)) < 0 <= np.min(f(x))      # not convex, J* = 0 at θ = 0
    assert np.max(np.abs(2 + 6 * np.cos(2 * x))) <= ELL


def test_pl_rate_displacement_degradation_hold_and_a_faster_rate_fails():
    mu = pl_constant()
    starts = np.linspace(-6.0, 6.0, 121)
    starts = starts[np.abs(starts) > 1e-9]
    times = np.array([0.25, 0.5, 1.0, 2.0, 4.0])
    path = flow(starts, times)
    gap0 = f(starts)
    for T, x in zip(times, path):
        rate = np.exp(-2 * mu * T) * gap0
        assert np.all(f(x) <= rate * (1 + 1e-9))                                    # pl.rate
        move = np.abs(x - starts)
        assert np.all(move <= np.sqrt(2 * ELL * gap0) / mu * (1 - np.exp(-mu * T)) + 1e-9)   # pl.displacement
        smooth_l = 3.0                                  # L(θ) = (L_s/2)(θ − θ0)², minimized at θ0
        assert np.all(smooth_l / 2 * move ** 2
                      <= smooth_l * ELL * gap0 / mu ** 2 * (1 - np.exp(-mu * T)) ** 2 + 1e-9)  # pl.degradation
    # The true rate is faster than the worst case almost everywhere, but not everywhere: the rate
    # e^{-4 μ T} (twice the claimed exponent) fails from some start (near the slowest point).
    too_fast = [np.any(f(x) > np.exp(-2 * 2 * mu * T) * gap0) for T, x in zip(times, path)]
    assert any(too_fast)
