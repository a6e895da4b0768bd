"""Test session setup.

- XLA:CPU compiles at backend optimization level 0 and without the fusion emitters, as
  `coupling verify` does (compilation dominates the suite's time).
- Hypothesis profiles: ``deterministic`` (the default, used in CI: derandomized, no example
  database, no deadline) and ``dev`` (more examples). Pick one with HYPOTHESIS_PROFILE=dev.
- Toy and theory comparisons run in float64, so x64 is switched on for the session here (never
  at import of the package). LLM tests opt back into float32 with the ``f32`` fixture:
  ``pytestmark = pytest.mark.usefixtures("f32")``.
"""

from __future__ import annotations

import importlib.metadata
import os

# Tests compile many small programs and run each briefly, so XLA:CPU's backend optimizations cost
# more than they save (about 30% of the suite's CPU time). Set before JAX creates its CPU client.
# jaxlib 0.11 no longer knows the fusion-emitter flag, and an unknown flag aborts the process.
_FLAGS = ["--xla_backend_optimization_level=0"]
if tuple(int(x) for x in importlib.metadata.version("jaxlib").split(".")[:2]) < (0, 11):
    _FLAGS.append("--xla_cpu_use_fusion_emitters=false")
for _flag in _FLAGS:
    if _flag.split("=")[0] not in os.environ.get("XLA_FLAGS", ""):
        os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " " + _flag).strip()

import jax  # noqa: E402
import pytest
from hypothesis import HealthCheck, settings

settings.register_profile(
    "deterministic",
    derandomize=True,
    database=None,
    deadline=None,
    max_examples=25,
    suppress_health_check=[HealthCheck.too_slow],
)
settings.register_profile(
    "dev",
    deadline=None,
    max_examples=200,
    suppress_health_check=[HealthCheck.too_slow],
)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "deterministic"))


def pytest_configure(config):
    jax.config.update("jax_enable_x64", True)


@pytest.fixture
def f32():
    """Run one test with x64 off, as the LLM code runs in production."""
    with jax.enable_x64(False):
        yield
