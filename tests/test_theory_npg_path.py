"""thm31.path (theory.npg_path): passes; tau(t) = t (plain time) fails."""

from __future__ import annotations

import sympy as sp

from theory import npg_path


def test_path_passes():
    r = npg_path.check_path()
    assert r.ok, r.summary()


def test_tau_equal_t_fails():
    r = npg_path.check_path(lambda t, b: t)
    assert not r.ok and "tau'" in r.failed.name


def test_wrong_rate_fails():
    r = npg_path.check_path(lambda t, b: (1 - sp.exp(-2 * b * t)) / b)
    assert not r.ok
