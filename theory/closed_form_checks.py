"""Cross-checks of ``theory.closed_forms`` (the NumPy formulas the toy layer and the LLM report use
for predictions) against the sympy statements that the derivations prove (docs/theory.md §3, §5).

Each function returns ``approx`` steps: the closed form, evaluated in float64 on a fixed rational
instance, must agree to 11 significant digits with the exact sympy value of the proved statement.
The module is a parameter, so a test can plant an error in a closed form and watch the claim fail.
"""

from __future__ import annotations

import sympy as sp

from theory import closed_forms
from theory import derivation as d
from theory.objectives import tilt, third_cumulant, variance

R = sp.Rational
# Two prompts, three responses: rational weights, an expert with full support, rewards with a tie.
WEIGHTS = (R(1, 3), R(2, 3))
EXPERT = ((R(1, 2), R(1, 3), R(1, 6)), (R(1, 5), R(3, 5), R(1, 5)))
SFT = ((R(2, 5), R(2, 5), R(1, 5)), (R(1, 4), R(1, 4), R(1, 2)))
REWARD = ((R(1), R(0), R(1, 2)), (R(-1, 2), R(1), R(1)))
BETAS = (R(3, 4), R(5, 2))


def _floats(rows):
    return [[float(v) for v in row] for row in rows]


def _stated(value: float) -> str:
    return f"{value:.10e}"


def c1_steps(module=closed_forms) -> list[d.Step]:
    from theory.sft_then_rl import c1_rhs   # the proved statement (imported here: no import cycle)
    steps = []
    for b in BETAS:
        exact = sum(w * c1_rhs(pd, r, b) for w, pd, r in zip(WEIGHTS, EXPERT, REWARD))
        value = module.c1([float(w) for w in WEIGHTS], _floats(EXPERT), _floats(REWARD), float(b))
        steps.append(d.approx(f"closed_forms.c1 = sympy C1 (beta = {b})", exact, _stated(value),
                              "the NumPy closed form agrees with the proved statement"))
        large = sum(w * (variance(pd, r) / (2 * b ** 2) + third_cumulant(pd, r) / (6 * b ** 3))
                    for w, pd, r in zip(WEIGHTS, EXPERT, REWARD))
        value = module.c1_large_beta([float(w) for w in WEIGHTS], _floats(EXPERT), _floats(REWARD), float(b))
        steps.append(d.approx(f"closed_forms.c1_large_beta = Var/(2 beta^2) + k3/(6 beta^3) (beta = {b})",
                              large, _stated(value), "the two-term large-beta form of thm31.beta"))
    return steps


def identity_steps(module=closed_forms) -> list[d.Step]:
    from theory.sft_then_rl import identity_rhs
    steps = []
    for b in BETAS:
        exact = sum(w * identity_rhs(s, pd, r, b) for w, s, pd, r in zip(WEIGHTS, SFT, EXPERT, REWARD))
        value = module.sft_loss_change_after_rl([float(w) for w in WEIGHTS], _floats(EXPERT), _floats(REWARD),
                                                float(b), _floats(SFT))
        steps.append(d.approx(f"closed_forms.sft_loss_change_after_rl = sympy identity (beta = {b})", exact,
                              _stated(value), "the NumPy closed form agrees with the proved statement"))
    b = BETAS[0]
    star = module.regularized_optimum(_floats(SFT), _floats(REWARD), float(b))
    for x, (s, r) in enumerate(zip(SFT, REWARD)):
        for y, exact in enumerate(tilt(s, r, b)):
            steps.append(d.approx(f"closed_forms.regularized_optimum[{x}, {y}] = p_ref e^{{r/beta}}/Z", exact,
                                  _stated(float(star[x][y])), "the Gibbs tilt"))
    return steps


def duration_steps(module=closed_forms) -> list[d.Step]:
    from theory.landscape import optimal_duration
    steps = []
    for mu, weight, ls, ell in ((R(1, 2), R(3, 10), R(2), R(3, 2)), (R(2), R(1, 7), R(3), R(5))):
        exact = optimal_duration(mu, weight, ls, ell)
        value = module.optimal_rl_duration(float(mu), float(weight), float(ls), float(ell))
        steps.append(d.approx(f"closed_forms.optimal_rl_duration = T* (mu = {mu})", exact, _stated(value),
                              "the NumPy closed form agrees with the derived T*"))
    return steps
