"""The counterexample search: it finds one for the refuted claim and none for true claims."""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
from numpy.testing import assert_allclose

from toy_models import explore
from toy_models.margins import MARGINS


def test_finds_and_shrinks_a_counterexample_to_the_paper_theorem():
    res = explore.search("thm41.paper", seed=1, budget=512, refine=False)  # refinement: next test
    assert res.found and res.tried >= 512
    ce = res.counterexample
    assert len(ce["prompt_weights"]) == 1 and len(ce["expert"][0]) == 2  # shrunk to X = 1, Y = 2
    assert all(round(v, 2) == v for row in ce["expert"] + ce["reference"] for v in row)  # round numbers
    assert res.counterexample_margin < 0


def test_refinement_pushes_a_near_violation_over_the_edge():
    # a case where the paper's claim barely holds: the refinement must find a violation nearby
    from toy_models.instance import make_instance, stack
    near = make_instance([1.0, 1e-9], [[0.5, 0.5], [0.5, 0.5]], [[1.0, 0.0], [1.0, 0.0]], 1.0,
                         reference=[[0.5, 0.5], [0.5, 0.5]])
    cases = stack(*[jax_tree_expand(near)] * 2)
    spec = MARGINS["thm41.paper"]
    assert float(spec.margin(near)) > 0
    refined, margins = explore._refine(spec.margin, cases)
    assert float(np.min(np.asarray(margins))) < 0


def jax_tree_expand(inst):
    import jax
    return jax.tree.map(lambda a: jnp.asarray(a)[None], inst)


def test_shrink_keeps_only_what_still_violates():
    from toy_models.instance import make_instance
    # a synthetic claim violated iff some prompt's expert puts > 0.4 on response 0: only prompt 1
    # does (0.4213), and rounding to one decimal would lose it, to two would not
    margin = lambda c: 0.4 - jnp.max(c.expert[:, 0])
    inst = make_instance([0.5, 0.5], [[0.3117, 0.6883], [0.4213, 0.5787]], [[0.1234, 0.0], [0.3456, 0.0]], 0.37)
    out = explore.shrink(margin, inst)
    assert out.q.shape == (1,) and float(margin(out)) < 0
    assert_allclose(np.asarray(out.expert), [[0.42, 0.58]], rtol=0, atol=1e-12)
