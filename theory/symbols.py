"""Every sympy symbol the derivations use, with its assumptions, in one place.

Conventions (docs/theory.md §1):

- A probability vector over n responses is n *positive* symbols ``p1..pn``; the constraint
  ``pn = 1 - (p1 + ... + p(n-1))`` is applied by the derivation engine (``theory.derivation``),
  which also draws them jointly from a Dirichlet law for the numeric cross-checks. Keeping all n
  symbols positive lets sympy split ``log(p_i * e^{r_i/beta} / Z)`` without help.
- Rewards, logits and directions are real; step sizes, KL weights, curvatures are positive.
- ``t`` stands for ``1/beta`` in series and limits (large-beta and small-beta expansions).

Sizes: the symbols here build finite instances (n = 2..4 responses, 1..2 prompts). Statements for
every n are proved separately with symbolic sums (``theory.generic``, ``theory.sums``); the finite
instances cross-check them.
"""

from __future__ import annotations

import sympy as sp

# Scalars of the setting (docs/theory.md §1).
beta = sp.Symbol("beta", positive=True)          # KL weight
t = sp.Symbol("t", positive=True)                # 1/beta, the expansion variable
eta = sp.Symbol("eta", positive=True)            # step size
q = sp.Symbol("q", positive=True)                # weight of one prompt (unnormalised when alone)
c = sp.Symbol("c", real=True)                    # an arbitrary constant (shift, constant reward)
G = sp.Symbol("G", positive=True, integer=True)  # group size of GRPO
eps = sp.Symbol("epsilon", positive=True)        # clip range / noise level
delta = sp.Symbol("delta", positive=True)        # reward gap to the best response outside A_x

# Moment / cumulant coordinates (docs/theory.md §8).
m1, m2, m3 = sp.symbols("m1 m2 m3", real=True)   # E r, E r^2, E r^3
mr, mw, mrw = sp.symbols("m_r m_w m_rw", real=True)  # E r, E w, E[r w]

# Landscape constants (docs/theory.md §5).
mu = sp.Symbol("mu", positive=True)              # PL constant of J
ell = sp.Symbol("ell", positive=True)            # smoothness of J
Ls = sp.Symbol("L_s", positive=True)             # smoothness of L
muL = sp.Symbol("mu_L", positive=True)           # PL constant of L
lam_w = sp.Symbol("lambda_w", positive=True)     # weight of the SFT degradation
Delta0 = sp.Symbol("Delta0", positive=True)      # J* - J(theta_0)
T = sp.Symbol("T", positive=True)                # RL duration
s = sp.Symbol("s", positive=True)                # integration variable (time)
gnorm = sp.Symbol("g", positive=True)            # ||grad J||
Lnorm = sp.Symbol("G_L", positive=True)          # ||grad L||
cosphi = sp.Symbol("cos_phi", positive=True)     # cos of the angle between -grad L and grad J
gap = sp.Symbol("gap", positive=True)            # L - L*
kappa = sp.Symbol("kappa", positive=True)        # condition number, >= 1
lam_a, lam_b = sp.symbols("lambda_a lambda_b", positive=True)   # two eigenvalues, a >= b
w = sp.Symbol("w", positive=True)                # a squared direction component in (0, 1)


# Rewards in gap coordinates (docs/theory.md §3-§4: the argmax set A_x).
rstar = sp.Symbol("r_star", real=True)           # the largest reward on a support
rmin = sp.Symbol("r_min", real=True)             # the smallest reward
m_D = sp.Symbol("m_D", real=True)                # E_{p_D} r
gap_off = sp.Symbol("g_off", positive=True)      # reward gap of the one response off the argmax

# Landscape instances (theory.landscape): a 2-D quadratic J and L, and test spectra.
c1, c2 = sp.symbols("c1 c2", real=True)          # theta_0 - theta_J* in J's eigenbasis
spread = sp.Symbol("k", nonnegative=True)        # ell - mu
phi = sp.Symbol("phi", real=True)                # rotation of L's eigenbasis
aspect = sp.Symbol("a_L", positive=True)         # lambda_min(L) / L_s, in (0, 1]
point = sp.symbols("theta1 theta2", real=True)   # a point, relative to L's minimizer
direction = sp.symbols("d1 d2", real=True)       # an RL direction
eig_min = sp.Symbol("b", positive=True)          # smallest non-zero eigenvalue
topk_g = sp.symbols("g1:5", real=True)                     # a 4-D direction in H's eigenbasis
topk_z = sp.symbols("z1:5", nonnegative=True)              # lambda_i = z_i + ... + z_4

# Estimators (docs/theory.md §6).
logp, logp_old, adv = sp.symbols("logp logp_old A", real=True)
ref_logp = sp.Symbol("ref", real=True)           # log pi_ref(y)
xk = sp.Symbol("x", real=True)                   # ref - logp
token_logp = sp.symbols("l1:4", real=True)       # three tokens' log-probabilities
token_old = sp.symbols("o1:4", real=True)        # ... and their values at sampling time
seq_weight = sp.symbols("w1:3", positive=True)   # aggregation weights of two sequences
seq_adv = sp.symbols("A1:3", real=True)          # their advantages


def prob_vector(name: str, n: int) -> tuple[sp.Symbol, ...]:
    """n positive symbols ``name{n}_1..name{n}_n`` for one probability vector; their sum is 1.

    The size is part of the name, so vectors of different sizes never share a symbol (the
    engine applies one sum-to-one constraint per vector).
    """
    return sp.symbols(f"{name}{n}_1:{n + 1}", positive=True)


def real_vector(name: str, n: int) -> tuple[sp.Symbol, ...]:
    return sp.symbols(f"{name}1:{n + 1}", real=True)


def positive_vector(name: str, n: int) -> tuple[sp.Symbol, ...]:
    return sp.symbols(f"{name}1:{n + 1}", positive=True)


def nonneg_vector(name: str, n: int) -> tuple[sp.Symbol, ...]:
    return sp.symbols(f"{name}1:{n + 1}", nonnegative=True)
