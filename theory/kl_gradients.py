"""Gradients of the KL estimators used as losses, and the per-token KL of a sequence (docs/theory.md §6).

Claims: ``kl.grad`` [standard], ``kl.token`` [standard].

kl.grad is proved for a **symbolic number of responses n** (``theory.sums``): a tabular softmax
policy p = softmax(θ) has score ∇_{θ_j} log p_i = δ_ij − p_j, so for a per-sample loss k(log p_y, log
ref_y) differentiated through log p only,

    E_p[∇_j k] = Σ_i p_i ∂k/∂logp (i) (δ_ij − p_j),

and the gradient of a function Σ_i f(p_i) of the probabilities is Σ_i f'(p_i) p_i (δ_ij − p_j) (the
softmax Jacobian, softmax.fisher). ``∂k/∂logp`` and ``f'`` are computed by sympy from the estimator
and the divergence; the sums are reduced by the sum normalizer (``any_n``). For n = 2 the same
statements are also checked with the explicit softmax of logit symbols, differentiated by sympy (no
Jacobian rule).

kl.token is checked on a 2-token policy over 3 symbols (12 conditional probabilities: a first-token
distribution a and one second-token distribution b_k per first token k), by exact enumeration of the
9 sequences, in probability symbols; a worked rational instance shows the per-token loss's error.

Each check takes the claimed statement as a parameter (the true one by default).
"""

from __future__ import annotations

import itertools
from typing import Callable

import sympy as sp

from theory import derivation as d
from theory import sums
from theory.generic import n
from theory.symbols import prob_vector

p = sp.IndexedBase("p", positive=True)       # the policy (sampling distribution)
ref = sp.IndexedBase("pi", positive=True)    # the reference
rw = sp.IndexedBase("r", real=True)          # rewards
_lp, _lr = sp.symbols("lp lr", real=True)    # placeholders of log p_y, log ref_y
_x = sp.Symbol("x", positive=True)           # placeholder of p_y
i, j = sp.symbols("i j", integer=True, positive=True)  # the summed response, one fixed response


def total(body, index=i):
    """Σ_{index=1}^{n} body."""
    return sp.Sum(body, (index, 1, n))


# where ``any_n`` cross-checks: both ends of the range of j, at two sizes
CROSS_CHECKS = tuple({n: size, j: jj} for size in (2, 4) for jj in (1, size))


def any_n(name, lhs, rhs, why, probs=(p, ref)) -> d.Step:
    """``lhs = rhs`` for every n and every fixed response j (``theory.sums``), with Σ_i b_i = 1 for
    each base b in ``probs``; cross-checked with random entries at (n, j) in ``CROSS_CHECKS``."""
    return d.sum_equal(name, lhs, rhs, why, facts=tuple(sums.sums_to_one(b, n) for b in probs),
                       sizes=(n, j), probs=tuple(probs), at=CROSS_CHECKS)


def k1(logp, logref):
    return logp - logref


def k2(logp, logref):
    return (logp - logref) ** 2 / 2


def k3(logp, logref):
    return sp.exp(logref - logp) - (logref - logp) - 1


def score(a, b):
    """∇_{θ_b} log p_a for the tabular softmax."""
    return sp.KroneckerDelta(a, b) - p[b]


def expected_loss_gradient(k: Callable):
    """E_{y∼p}[∇_{θ_j} k(log p_y, log ref_y)], differentiated through log p only (on-policy)."""
    dk = sp.diff(k(_lp, _lr), _lp).xreplace({_lp: sp.log(p[i]), _lr: sp.log(ref[i])})
    return total(p[i] * dk * score(i, j))


def gradient_through_softmax(summand: Callable):
    """∇_{θ_j} Σ_i summand(p_i, i): Σ_i summand'(p_i) p_i (δ_ij − p_j)."""
    df = sp.diff(summand(_x, i), _x).xreplace({_x: p[i]})
    return total(df * p[i] * score(i, j))


def kl_forward(x, k):     # summand of KL(p || ref)
    return x * (sp.log(x) - sp.log(ref[k]))


def kl_reverse(x, k):     # summand of KL(ref || p)
    return ref[k] * (sp.log(ref[k]) - sp.log(x))


def reward_pg_kl():
    """k1 placed in the reward: E[(−(log p_y − log ref_y)) ∇log p_y] with the reward held fixed; returns
    the gradient of the *penalty* (minus this), to compare with ∇KL."""
    return total(p[i] * (sp.log(p[i]) - sp.log(ref[i])) * score(i, j))


TRUE_GRADIENTS = {"k1": "zero", "k2": "forward", "k3": "reverse", "k1_reward": "forward"}


def _target(kind: str):
    return {"zero": sp.Integer(0), "forward": gradient_through_softmax(kl_forward),
            "reverse": gradient_through_softmax(kl_reverse)}[kind]


def _explicit(n: int, claimed: dict) -> list:
    """n responses, logits θ as symbols, softmax differentiated by sympy (no Jacobian rule)."""
    theta = sp.symbols(f"theta1:{n + 1}", real=True)
    refv = prob_vector("pi", n)
    z = sum(sp.exp(t) for t in theta)
    probs = [sp.exp(t) / z for t in theta]
    logp = [t - sp.log(z) for t in theta]
    logr = [sp.log(x) for x in refv]
    stop = {t: sp.Symbol(f"s_{t}", real=True) for t in theta}   # held fixed (stop-gradient) copies
    div = {"zero": sp.Integer(0),
           "forward": sum(pi * (lp - lr) for pi, lp, lr in zip(probs, logp, logr)),
           "reverse": sum(ri * (lr - lp) for ri, lp, lr in zip(refv, logp, logr))}
    steps = []
    for name, k in (("k1", k1), ("k2", k2), ("k3", k3), ("k1_reward", None)):
        grads = []
        for tj in theta:
            if k is None:  # reward −(log p − log ref) held fixed, REINFORCE on log p
                surrogate = sum(pi.xreplace(stop) * (lp - lr).xreplace(stop) * lp
                                for pi, lp, lr in zip(probs, logp, logr))
            else:
                surrogate = sum(pi.xreplace(stop) * k(lp, lr) for pi, lp, lr in zip(probs, logp, logr))
            grads.append(sp.diff(surrogate, tj).xreplace({v: u for u, v in stop.items()}))
        target = [sp.diff(div[claimed[name]], tj) for tj in theta]
        steps.append(d.equal(f"n={n}, explicit softmax: E_p[grad {name}] = grad {claimed[name]}",
                             sp.Matrix(grads), sp.Matrix(target), "sympy differentiates the softmax itself"))
    return steps, refv


def check_grad(claimed: dict | None = None) -> d.Result:
    """E_p∇k1 = 0, E_p∇k2 = ∇KL(p‖ref), E_p∇k3 = ∇KL(ref‖p), k1 in the reward = ∇KL(p‖ref).

    ``claimed`` maps each of ``k1``, ``k2``, ``k3``, ``k1_reward`` to ``zero``, ``forward`` (∇KL(p‖ref))
    or ``reverse`` (∇KL(ref‖p)).
    """
    claimed = {**TRUE_GRADIENTS, **(claimed or {})}
    steps, simplices = [], []
    lhs_of = {"k1": expected_loss_gradient(k1), "k2": expected_loss_gradient(k2),
              "k3": expected_loss_gradient(k3), "k1_reward": reward_pg_kl()}
    why = {"k1": "dk1/dlogp = 1 and E_p[score] = sum_i p_i (delta_ij - p_j) = p_j - p_j = 0",
           "k2": "dk2/dlogp = log(p/ref); grad KL = sum_i (log(p_i/ref_i) + 1) p_i (delta_ij - p_j), the +1 drops",
           "k3": "dk3/dlogp = 1 - ref/p, so E = sum_i (p_i - ref_i)(delta_ij - p_j) = p_j - ref_j = grad KL(ref||p)",
           "k1_reward": "the fixed reward log(p/ref) times the score: the k2 computation"}
    for name in ("k1", "k2", "k3", "k1_reward"):
        steps.append(any_n(f"symbolic n: E_p[grad {name}] = grad {claimed[name]}", lhs_of[name],
                              _target(claimed[name]), why[name]))
    for size in (2,):
        more, refv = _explicit(size, claimed)
        steps += more
        simplices.append(refv)
    explicit = d.verify("kl.grad", steps, simplices=simplices)
    # k2 and k3 differ (so the distinction is not vacuous): n = 2, p = (1/2, 1/2), ref = (1/4, 3/4)
    half, quarter = sp.Rational(1, 2), sp.Rational(1, 4)
    # grad_1 KL(p||ref) = p_1 (log(p_1/ref_1) - sum_i p_i log(p_i/ref_i)); grad_1 KL(ref||p) = p_1 - ref_1
    fwd = half * ((sp.log(half) - sp.log(quarter)) - (half * (sp.log(half) - sp.log(quarter))
                                                      + half * (sp.log(half) - sp.log(3 * quarter))))
    rev = half - quarter
    gap = d.verify("kl.grad", [d.at_least("n=2 instance: grad KL(p||ref) != grad KL(ref||p) (entry 1)",
                                          sp.Abs(fwd - rev), sp.Rational(1, 100),
                                          "p = (1/2, 1/2), ref = (1/4, 3/4): 0.275 vs 0.25")])
    return d.Result("kl.grad", explicit.steps + gap.steps)


# ------------------------------------------------------------------------------------------ kl.token

V = 3   # symbols per token; 2 tokens


def _token_policy(tag: str):
    first = prob_vector(f"{tag}a", V)
    second = [prob_vector(f"{tag}b{k + 1}_", V) for k in range(V)]
    return first, second


def _log(x):
    return sp.log(x)


def token_estimators(a, b, ra, rb):
    """(exact ∇ sequence KL, reward-to-go estimator, per-token estimator), each a 12-vector
    (3 first-token logits, then 3 logits per second-token row), by enumerating the 9 sequences."""
    seqs = list(itertools.product(range(V), repeat=2))
    kl_seq = sum(a[y1] * b[y1][y2] * (_log(a[y1]) - _log(ra[y1]) + _log(b[y1][y2]) - _log(rb[y1][y2]))
                 for y1, y2 in seqs)
    # exact: chain rule through the softmax of each row (∂a_m/∂θ_j = a_m (δ_mj − a_j))
    exact = [sum(sp.diff(kl_seq, a[m]) * a[m] * (int(m == jj) - a[jj]) for m in range(V)) for jj in range(V)]
    for k in range(V):
        exact += [sum(sp.diff(kl_seq, b[k][m]) * b[k][m] * (int(m == jj) - b[k][jj]) for m in range(V))
                  for jj in range(V)]

    def estimate(weights):
        out = [0] * (V + V * V)
        for y1, y2 in seqs:
            prob = a[y1] * b[y1][y2]
            l1, l2 = _log(a[y1]) - _log(ra[y1]), _log(b[y1][y2]) - _log(rb[y1][y2])
            w1, w2 = weights(l1, l2)
            for jj in range(V):
                out[jj] += prob * w1 * (int(jj == y1) - a[jj])
                out[V + V * y1 + jj] += prob * w2 * (int(jj == y2) - b[y1][jj])
        return out

    rtg = estimate(lambda l1, l2: (l1 + l2, l2))
    per_token = estimate(lambda l1, l2: (l1, l2))
    return sp.Matrix(exact), sp.Matrix(rtg), sp.Matrix(per_token)


# A worked instance: a = (1/2, 1/3, 1/6), b_k rotations of (3/5, 3/10, 1/10); ref uniform.
_A = (sp.Rational(1, 2), sp.Rational(1, 3), sp.Rational(1, 6))
_B = [(sp.Rational(3, 5), sp.Rational(3, 10), sp.Rational(1, 10)),
      (sp.Rational(1, 10), sp.Rational(3, 5), sp.Rational(3, 10)),
      (sp.Rational(1, 10), sp.Rational(1, 10), sp.Rational(4, 5))]
_UNIFORM = (sp.Rational(1, 3),) * 3
TOKEN_INSTANCE_ERROR = "0.0360"   # max |per-token - exact| on this instance (quoted in docs/theory.md)
TOKEN_INSTANCE = {"first": _A, "second": _B, "ref_first": _UNIFORM, "ref_second": [_UNIFORM] * 3}


def token_instance_errors():
    """(max |rtg − exact|, max |per-token − exact|) on ``TOKEN_INSTANCE``, exact sympy numbers."""
    a, b = _token_policy("p")
    ra, rb = _token_policy("q")
    values = dict(zip(a, _A)) | dict(zip(ra, _UNIFORM))
    for k in range(V):
        values |= dict(zip(b[k], _B[k])) | dict(zip(rb[k], _UNIFORM))
    exact, rtg, per_token = (m.xreplace(values) for m in token_estimators(a, b, ra, rb))
    return (max(abs(sp.N(x, 30)) for x in rtg - exact), max(abs(sp.N(x, 30)) for x in per_token - exact))


def check_token(estimator: str = "rtg") -> d.Result:
    """Exact ∇ sequence KL = E[Σ_t (Σ_{s≥t} ℓ_s) ∇log p_t]; the per-token k2 loss misses a term.

    ``estimator`` names which estimator is claimed to equal the exact gradient (``rtg`` or ``per_token``).
    """
    a, b = _token_policy("p")
    ra, rb = _token_policy("q")
    exact, rtg, per_token = token_estimators(a, b, ra, rb)
    claimed = {"rtg": rtg, "per_token": per_token}[estimator]
    kl2 = [sum(b[k][m] * (_log(b[k][m]) - _log(rb[k][m])) for m in range(V)) for k in range(V)]
    mean_kl2 = sum(a[k] * kl2[k] for k in range(V))
    missing = sp.Matrix([a[jj] * (kl2[jj] - mean_kl2) for jj in range(V)] + [0] * (V * V))
    steps = [
        d.equal("2 tokens, 3 symbols: exact grad of the sequence KL = reward-to-go estimator", exact, claimed,
                "past log-ratios times a later score average to 0: E[score] = 0 under each row"),
        d.equal("exact - per-token = a_j (KL(b_j||ref_j) - E_a KL(b||ref)) on the first token, 0 after",
                exact - per_token, missing,
                "the per-token loss drops the effect of token 1 on token 2's KL"),
    ]
    rtg_err, tok_err = token_instance_errors()
    steps += [
        d.approx("worked instance: per-token loss error (max over the 12 logits)", tok_err, TOKEN_INSTANCE_ERROR,
                 "a = (1/2,1/3,1/6), b_k rotations of (.6,.3,.1), ref uniform; exact arithmetic"),
        d.equal("worked instance: reward-to-go error is exactly 0", rtg_err, 0, "exact rational arithmetic"),
    ]
    simplices = [a, *b, ra, *rb]
    return d.verify("kl.token", steps, simplices=simplices)
