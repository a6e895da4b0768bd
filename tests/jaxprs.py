"""What a traced function does, read from its jaxpr (shared by the model and memory tests)."""

from __future__ import annotations

CHECKPOINT = ("checkpoint", "remat2")  # jax.checkpoint's primitive, by JAX version


def equations(jaxpr):
    """Every equation of a jaxpr and of the jaxprs inside it (scan, remat, pjit, custom rules)."""
    jaxpr = getattr(jaxpr, "jaxpr", jaxpr)  # a ClosedJaxpr or a Jaxpr
    for eqn in jaxpr.eqns:
        yield eqn
        for v in eqn.params.values():
            for sub in v if isinstance(v, (tuple, list)) else (v,):
                inner = getattr(sub, "jaxpr", sub)
                if hasattr(inner, "eqns"):
                    yield from equations(inner)


def count(jaxpr, names) -> int:
    """How many equations, nested ones included, are of a primitive in ``names``."""
    return sum(e.primitive.name in names for e in equations(jaxpr))
