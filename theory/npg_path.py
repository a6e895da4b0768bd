"""The time course of natural policy gradient from the SFT optimum (docs/theory.md §3 [thm31.path]).

Claim: ``thm31.path`` [extension].

NPG on J_β with reference p_D, from θ* = log p_D (tabular logits): the natural direction of J_β is
F⁺F(r − β(log p − log p_D)) = r − β(log p − log p_D) up to a constant per prompt (the null space of F),
so along θ(t) = θ* + r·τ(t), where log p − log p_D = τ r − log E_{p_D} e^{τ r}, the flow is
θ' = r(1 − βτ) + const. Hence τ' = 1 − βτ, τ(0) = 0, solved by τ(t) = (1 − e^{−βt})/β (unique by
Picard–Lindelöf: the right side is Lipschitz). The SFT loss along the path is
L(θ(t)) − L* = f(τ(t)), f(u) = log E_{p_D} e^{u r} − u E_{p_D} r, and

- f'(u) = E_{tilt(u)} r − E_{p_D} r, f'(0) = 0, f''(u) = Var_{tilt(u)}(r) ≥ 0, written as a sum of
  squares Σ_{a<b} w_a w_b (r_a − r_b)²/W² with w = p_D e^{u r} > 0 (proved by sympy's assumptions);
  so f' ≥ 0 on u ≥ 0 (convex with f'(0) = 0);
- τ'(t) = e^{−βt} > 0, so d/dt f(τ(t)) = f'(τ)τ' ≥ 0: the SFT loss rises monotonically;
- τ(t) → 1/β as t → ∞ and f(1/β) = C1(β) (thm31.c1).

Sizes: the path identities for n = 2 and 3 responses, one prompt (prompts decouple); the sum of
squares for n = 2, 3. The ODE steps hold for any n.

The check takes the claimed τ(t, β) as a parameter (the true one by default).
"""

from __future__ import annotations

from typing import Callable

import sympy as sp

from theory import derivation as d
from theory.objectives import exp_tilt, expectation, partition, sft_loss
from theory.sft_then_rl import c1_rhs
from theory.softmax import fisher_matrix
from theory.symbols import beta, c, positive_vector, prob_vector, real_vector

time_ = sp.Symbol("t_npg", nonnegative=True)     # NPG time
u = sp.Symbol("u", nonnegative=True)            # the path parameter tau


def tau_true(tt, b):
    """τ(t) = (1 − e^{−βt})/β."""
    return (1 - sp.exp(-b * tt)) / b


def check_path(tau: Callable = tau_true) -> d.Result:
    steps, simplices = [], []
    tt = tau(time_, beta)
    steps += [
        d.equal("tau(0) = 0", tt.subs(time_, 0), 0, "the flow starts at the SFT optimum"),
        d.equal("tau' = 1 - beta tau (the NPG flow along theta* + r tau)", sp.diff(tt, time_), 1 - beta * tt,
                "theta' = r - beta(theta - theta*) mod constants, with theta - theta* = r tau"),
        d.equal("tau'(t) = e^{-beta t} > 0", sp.diff(tt, time_), sp.exp(-beta * time_), "so tau increases"),
        d.limit("tau(t) -> 1/beta as t -> oo", tt, 1 / beta, time_, sp.oo, "e^{-beta t} -> 0"),
    ]
    for n in (2, 3):
        pd, r = prob_vector("d", n), real_vector("r", n)
        simplices.append(pd)
        moved = exp_tilt(pd, [u * x for x in r])           # softmax(log p_D + u r)
        z = partition(pd, r, 1 / u)
        logratio = [sp.log(m) - sp.log(q0) for m, q0 in zip(moved, pd)]
        # natural direction of J_beta at theta* + u r: r - beta(log p - log p_D) = r (1 - beta u) + beta log Z
        direction = [x - beta * lr for x, lr in zip(r, logratio)]
        steps.append(d.equal(f"n={n}: NPG direction at theta* + u r = r(1 - beta u) + const",
                             sp.Matrix(direction), sp.Matrix([x * (1 - beta * u) + beta * sp.log(z) for x in r]),
                             "log p - log p_D = u r - log E_{p_D} e^{u r}"))
        if n == 2:
            steps.append(d.equal(f"n={n}: F (r - beta(log p - log p_D)) = F r (1 - beta u) along the path",
                                 fisher_matrix(moved) * sp.Matrix(direction),
                                 fisher_matrix(moved) * sp.Matrix([x * (1 - beta * u) for x in r]),
                                 "F 1 = 0: the natural gradient F^+ F v is v up to a constant"))
        else:
            pv = prob_vector("p", n)
            simplices.append(pv)
            steps.append(d.equal(f"n={n}: F 1 = 0 (constants drop from the natural direction)",
                                 fisher_matrix(pv) * sp.Matrix([c] * n), sp.zeros(n, 1), "rows of F sum to 0"))
        f_u = sp.log(z) - u * expectation(pd, r)
        steps.append(d.equal(f"n={n}: L(theta* + u r) - L* = f(u)", sft_loss(pd, moved) - sft_loss(pd, pd), f_u,
                             "theta* = log p_D"))
        tilted_mean = expectation(moved, r)
        steps.append(d.equal(f"n={n}: f'(u) = E_tilt r - E_pD r", sp.diff(f_u, u), tilted_mean - expectation(pd, r),
                             "derivative of log Z"))
        steps.append(d.equal(f"n={n}: f'(0) = 0", (tilted_mean - expectation(pd, r)).subs(u, 0), 0,
                             "the tilt at u = 0 is p_D"))
        # f'' = Var_tilt(r) as a sum of squares in w = p_D e^{u r} (positive symbols)
        w = positive_vector("w", n)
        wsum = sum(w)
        var_w = sum(w[a] * r[a] ** 2 for a in range(n)) / wsum - (sum(w[a] * r[a] for a in range(n)) / wsum) ** 2
        sos = sum(w[a] * w[b] * (r[a] - r[b]) ** 2 for a in range(n) for b in range(a + 1, n)) / wsum ** 2
        gaps = real_vector("g", n * n)
        sos_gaps = sum(w[a] * w[b] * gaps[n * a + b] ** 2 for a in range(n) for b in range(a + 1, n)) / wsum ** 2
        steps.append(d.equal(f"n={n}: f''(u) = Var_tilt(r)", sp.diff(f_u, u, 2),
                             var_w.subs({w[a]: pd[a] * sp.exp(u * r[a]) for a in range(n)}), "derivative of E_tilt r"))
        steps.append(d.equal(f"n={n}: Var_tilt(r) = sum_(a<b) w_a w_b (r_a - r_b)^2 / W^2", var_w, sos,
                             "Lagrange's identity"))
        steps.append(d.nonnegative(f"n={n}: sum_(a<b) w_a w_b g_ab^2 / W^2 >= 0 (g_ab = r_a - r_b real)", sos_gaps,
                                   "products of positive w and real squares"))
        steps.append(d.at_least(f"n={n}: d/dt f(tau(t)) = f'(tau) tau' >= 0 (monotone rise)",
                                (sp.diff(f_u, u) * sp.exp(-beta * time_)).subs(u, tt), 0,
                                "f' >= 0 on u >= 0 (convex, f'(0) = 0) and tau' > 0; sampled at random t, beta"))
        steps.append(d.equal(f"n={n}: f(1/beta) = C1(beta)", f_u.subs(u, 1 / beta), c1_rhs(pd, r, beta),
                             "the end of the path is the regularized optimum (thm31.c1)"))
    return d.verify("thm31.path", steps, simplices=simplices, ranges={time_: (0, 6), u: (0, 3)})

