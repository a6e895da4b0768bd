"""grpo.fixedpoint (theory.fixed_points): passes; fails for a wrong beta', k3 point or multiplier."""

from __future__ import annotations

import numpy as np

from theory import closed_forms as cf
from theory import fixed_points as fp


def test_fixedpoint_passes():
    r = fp.check_fixedpoint()
    assert r.ok, r.summary()


def test_dropping_the_group_factor_fails():
    r = fp.check_fixedpoint(group_beta=lambda b, g: b)
    assert not r.ok and "(b)" in r.failed.name


def test_tilt_instead_of_k3_point_fails():
    r = fp.check_fixedpoint(k3_point=cf.gibbs_tilt)
    assert not r.ok and "k3_fixed_point" in r.failed.name


def test_a_wrong_multiplier_fails():
    r = fp.check_fixedpoint(multiplier=lambda s, g, ddof=1, std_floor=1e-4: np.asarray(1 - 1 / g) + 0 * np.asarray(s))
    assert not r.ok and "std_division_multiplier" in r.failed.name


def test_multiplier_sympy_matches_numpy_and_mean_baseline_limit():
    import sympy as sp
    for g in (2, 3, 5):
        for s in (0.2, 0.7):
            assert abs(float(fp.multiplier_sympy(sp.Float(s, 30), g, 1)) - float(cf.std_division_multiplier(s, g))) < 1e-12
