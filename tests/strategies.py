"""Hypothesis strategies for the toy models.

Probability vectors are softmaxes of bounded logits (never filtered), rewards are bounded, and
shapes come from a small fixed set so that jitted test bodies compile a handful of times.
"""

from __future__ import annotations

import numpy as np
from hypothesis import strategies as st

from toy_models.instance import make_instance

SHAPES = ((1, 2), (2, 3), (3, 4))  # (prompts X, responses Y)
LOGIT_BOUND = 4.0
REWARD_BOUND = 2.0


def _array(shape, bound):
    n = int(np.prod(shape))
    return st.lists(st.floats(-bound, bound, allow_nan=False, allow_infinity=False, width=64),
                    min_size=n, max_size=n).map(lambda v: np.asarray(v, np.float64).reshape(shape))


def softmax(z: np.ndarray) -> np.ndarray:
    e = np.exp(z - z.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def simplex(shape, bound: float = LOGIT_BOUND):
    """Probability vectors along the last axis: softmax of logits in [-bound, bound]."""
    return _array(shape, bound).map(softmax)


betas = st.floats(0.1, 10.0, allow_nan=False)


@st.composite
def instances(draw, shapes=SHAPES, beta=betas, deterministic_expert: bool = False):
    """A full-support tabular instance (or a point-mass expert) of one of ``shapes``."""
    x, y = draw(st.sampled_from(shapes))
    if deterministic_expert:
        idx = draw(st.lists(st.integers(0, y - 1), min_size=x, max_size=x))
        expert = np.eye(y)[idx]
    else:
        expert = draw(simplex((x, y)))
    return make_instance(q=draw(simplex((x,))), expert=expert, reward=draw(_array((x, y), REWARD_BOUND)),
                         beta=draw(beta), reference=draw(simplex((x, y))), sft_policy=draw(simplex((x, y))))
