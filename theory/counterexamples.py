"""The two counterexamples to the paper's Theorem 4.1 (docs/theory.md §4, claim ``thm41.paper``).

The claim [refuted]: "after RL reaches its optimum, an SFT stage with a <= E KL <= A strictly
lowers the raw reward J". ``pass`` for this claim means that both counterexamples were
reproduced, in exact arithmetic (sympy Rationals and e), to the digits printed in docs/theory.md.

1. r = 0, pi_ref = p_RL = (1/2, 1/2), p after SFT = (3/4, 1/4):
   E KL = (3/4) log(3/2) + (1/4) log(1/2) = 0.130812, inside [a, A] = [0.1, 0.2]; J stays 0.
2. pi_ref = (1/2, 1/2), r = (1, 0), beta = 1: p* = (e, 1)/(1 + e), J = e/(1 + e) = 0.7311.
   With p_D = (0.9, 0.1), one SFT gradient step of size eta from the logits theta* = log pi_ref + r:
   theta = theta* - eta (p* - p_D), which *raises* J to 0.7376 / 0.7630 / 0.7921 for
   eta = 0.1 / 0.5 / 1.0, while J_beta falls by exactly beta KL(p || p*) = 1.11e-4 / 2.66e-3 / 1.00e-2.

What the paper's proof needs, and what fails here, is a KL-growth constant lambda > 0 with
J(p_RL) - J(p) >= lambda E KL(p || p_RL): it does not follow from RL optimality.
"""

from __future__ import annotations

from typing import Mapping

import sympy as sp

from theory import derivation as d
from theory.objectives import kl, regularized_objective, reward, tilt

HALF = sp.Rational(1, 2)
STATED = {
    "ce1.kl": "0.130812",
    "ce2.J": "0.7311",
    "ce2.J.eta=0.1": "0.7376", "ce2.J.eta=0.5": "0.7630", "ce2.J.eta=1.0": "0.7921",
    "ce2.drop.eta=0.1": "1.11e-4", "ce2.drop.eta=0.5": "2.66e-3", "ce2.drop.eta=1.0": "1.00e-2",
}
STEP_SIZES = {"0.1": sp.Rational(1, 10), "0.5": sp.Rational(1, 2), "1.0": sp.Integer(1)}


def softmax(logits) -> list:
    """Exact softmax of a sympy vector."""
    total = sum(sp.exp(z) for z in logits)
    return [sp.exp(z) / total for z in logits]


def sft_step(logits, expert, eta) -> list:
    """One gradient-descent step on L for one prompt (q = 1): theta - eta (softmax(theta) - p_D)."""
    p = softmax(logits)
    return [z - eta * (pi - di) for z, pi, di in zip(logits, p, expert)]


def check_counterexamples(stated: Mapping[str, str] = STATED) -> d.Result:
    steps = []
    # Counterexample 1.
    p_rl, p_sft, r0 = (HALF, HALF), (sp.Rational(3, 4), sp.Rational(1, 4)), (0, 0)
    kl1 = kl(p_sft, p_rl)
    steps.append(d.approx("ce1: E KL(p || p_RL)", kl1, stated["ce1.kl"], "(3/4) log(3/2) + (1/4) log(1/2)"))
    steps.append(d.at_least("ce1: E KL >= a = 0.1", kl1, sp.Rational(1, 10), "inside the band"))
    steps.append(d.at_least("ce1: E KL <= A = 0.2", sp.Rational(1, 5), kl1, "inside the band"))
    steps.append(d.equal("ce1: J unchanged (the claim says it strictly drops)", reward(p_sft, r0),
                         reward(p_rl, r0), "a constant reward: J = 0 before and after"))
    steps.append(d.equal("ce1: no KL-growth constant lambda > 0",
                         reward(p_rl, r0) - reward(p_sft, r0), 0,
                         "J(p_RL) - J(p) = 0 < lambda * 0.1308 for every lambda > 0"))
    # Counterexample 2.
    ref, r, b, expert = (HALF, HALF), (1, 0), sp.Integer(1), (sp.Rational(9, 10), sp.Rational(1, 10))
    star = tilt(ref, r, b)
    theta_star = [sp.log(HALF) + 1, sp.log(HALF)]
    steps.append(d.equal("ce2: softmax(theta*) = p*", sp.Matrix(softmax(theta_star)), sp.Matrix(star),
                         "theta* = log pi_ref + r/beta"))
    steps.append(d.equal("ce2: p* = (e, 1)/(1 + e)", sp.Matrix(star), sp.Matrix([sp.E / (1 + sp.E), 1 / (1 + sp.E)]),
                         "pi_ref is uniform"))
    j_star = reward(star, r)
    steps.append(d.approx("ce2: J(p*)", j_star, stated["ce2.J"], "e/(1+e)"))
    for key, step_size in STEP_SIZES.items():
        p = softmax(sft_step(theta_star, expert, step_size))
        steps.append(d.approx(f"ce2: J after SFT, eta={key}", reward(p, r), stated[f"ce2.J.eta={key}"],
                              "softmax(theta* - eta(p* - p_D))_1"))
        steps.append(d.at_least(f"ce2: J rises, eta={key} (the claim says it strictly drops)",
                                reward(p, r), j_star, "the expert is more reward-concentrated than p*"))
        drop = regularized_objective(star, r, ref, b) - regularized_objective(p, r, ref, b)
        steps.append(d.close(f"ce2: J_beta drop = beta KL(p || p*), eta={key}", drop, b * kl(p, star),
                             "thm41.gibbs at this instance (proved symbolically there)"))
        steps.append(d.approx(f"ce2: J_beta drop, eta={key}", b * kl(p, star), stated[f"ce2.drop.eta={key}"],
                              "beta KL(p || p*)"))
    return d.verify("thm41.paper", steps)
