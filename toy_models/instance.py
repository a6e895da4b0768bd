"""A tabular instance of docs/theory.md §1, its validation, the JSON file format, and random draws.

Fields (all float64 arrays): ``q[X]`` prompt weights, ``expert[X, Y]`` = p_D, ``reward[X, Y]`` = r,
``reference[X, Y]`` = π_ref, ``sft_policy[X, Y]`` = p_SFT, ``beta[]`` = β. ``Instance`` is a JAX
pytree, so a batch of instances is one ``Instance`` with a leading axis on every field and the
functions of this package can be ``jax.vmap``-ed over it.

The JSON format is the README's: ``prompt_weights``, ``expert``, ``reward``, ``beta`` and optionally
``reference`` (default: expert), ``sft_policy`` (default: expert) and ``sft_steps``. Every problem
raises ``theory.errors.InputError`` naming the file and the key.
"""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from theory.errors import InputError

PROB_TOL = 1e-9  # |Σ p − 1| allowed in an instance file
KEYS = ("prompt_weights", "expert", "reward", "beta", "reference", "sft_policy", "sft_steps")


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class Instance:
    q: jax.Array
    expert: jax.Array
    reward: jax.Array
    reference: jax.Array
    sft_policy: jax.Array
    beta: jax.Array


def make_instance(q, expert, reward, beta, reference=None, sft_policy=None) -> Instance:
    """An ``Instance`` from array-likes (float64); reference and sft_policy default to the expert."""
    expert = jnp.asarray(expert, jnp.float64)
    return Instance(
        q=jnp.asarray(q, jnp.float64),
        expert=expert,
        reward=jnp.asarray(reward, jnp.float64),
        reference=expert if reference is None else jnp.asarray(reference, jnp.float64),
        sft_policy=expert if sft_policy is None else jnp.asarray(sft_policy, jnp.float64),
        beta=jnp.asarray(beta, jnp.float64),
    )


# ----------------------------------------------------------------------------- validation / files


def _finite_number(v) -> bool:
    """A JSON number (not a bool) that is finite as a float (an integer too large for a float is not)."""
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        return False
    try:
        return math.isfinite(v)
    except OverflowError:
        return False


def _matrix(value, name: str, where: str) -> np.ndarray:
    try:
        arr = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError, OverflowError):
        raise InputError(f"{where}: `{name}` must be a list of lists of numbers") from None
    if arr.ndim != 2 or arr.size == 0:
        raise InputError(f"{where}: `{name}` must be a non-empty [X][Y] list of lists, "
                         f"got shape {arr.shape}")
    return arr


def _check_probs(arr: np.ndarray, name: str, where: str) -> None:
    if not np.all(np.isfinite(arr)):
        raise InputError(f"{where}: `{name}` contains NaN or infinity")
    if np.any(arr < 0):
        i = tuple(int(k) for k in np.argwhere(arr < 0)[0])
        raise InputError(f"{where}: `{name}` has a negative probability at index {list(i)}")
    sums = arr.sum(axis=-1)
    bad = np.flatnonzero(np.abs(sums - 1.0) > PROB_TOL)
    if bad.size:
        raise InputError(f"{where}: `{name}` row {int(bad[0])} sums to {float(sums[bad[0]])!r}, "
                         f"not 1 within {PROB_TOL:g}")


def validate(raw: dict, where: str) -> tuple[Instance, tuple[float, ...]]:
    """Check a decoded JSON object and build the instance; returns (instance, sft_steps)."""
    if not isinstance(raw, dict):
        raise InputError(f"{where}: the instance must be a JSON object")
    for key in ("prompt_weights", "expert", "reward", "beta"):
        if key not in raw:
            raise InputError(f"{where}: missing key `{key}`")
    unknown = sorted(k for k in raw if k not in KEYS and not k.startswith("_"))
    if unknown:
        raise InputError(f"{where}: unknown key `{unknown[0]}` (expected {', '.join(KEYS)}; "
                         "keys starting with _ are comments)")
    try:
        q = np.asarray(raw["prompt_weights"], dtype=np.float64)
    except (TypeError, ValueError, OverflowError):
        raise InputError(f"{where}: `prompt_weights` must be a list of numbers") from None
    if q.ndim != 1 or q.size == 0:
        raise InputError(f"{where}: `prompt_weights` must be a non-empty list, got shape {q.shape}")
    _check_probs(q[None, :], "prompt_weights", where)
    if np.any(q == 0):
        raise InputError(f"{where}: `prompt_weights` must be > 0 (q(x) > 0 for every prompt)")
    expert = _matrix(raw["expert"], "expert", where)
    shape = (q.size, expert.shape[1])
    if expert.shape[1] < 2:
        raise InputError(f"{where}: `expert` needs at least 2 responses per prompt")
    mats = {"expert": expert}
    for key in ("reward", "reference", "sft_policy"):
        if key in raw:
            mats[key] = _matrix(raw[key], key, where)
    for key, arr in mats.items():
        if arr.shape != shape:
            raise InputError(f"{where}: `{key}` has shape {list(arr.shape)}, expected {list(shape)} "
                             f"(X = len(prompt_weights), Y = responses)")
    if not np.all(np.isfinite(mats["reward"])):
        raise InputError(f"{where}: `reward` contains NaN or infinity")
    for key in ("expert", "reference", "sft_policy"):
        if key in mats:
            _check_probs(mats[key], key, where)
    beta = raw["beta"]
    if not _finite_number(beta):
        raise InputError(f"{where}: `beta` must be a finite number, got {beta!r}")
    if beta <= 0:
        raise InputError(f"{where}: `beta` must be > 0, got {beta!r}")
    spread = float(np.max(mats["reward"]) - np.min(mats["reward"]))
    if not spread / beta <= MAX_SPREAD_OVER_BETA:
        raise InputError(f"{where}: the reward's range over `beta` is {spread / beta:.4g}; the "
                         f"closed forms need e^(range/beta) in float64, so it must be <= "
                         f"{MAX_SPREAD_OVER_BETA} (rescale the reward or raise `beta`)")
    steps = raw.get("sft_steps", [0.1, 0.5, 1.0])
    if (not isinstance(steps, list) or not steps
            or not all(_finite_number(s) and s > 0 for s in steps)):
        raise InputError(f"{where}: `sft_steps` must be a non-empty list of positive numbers")
    if "reference" in mats:
        ref_zero = (mats["reference"] == 0)
        # the regularized optimum lives on supp π_ref; an expert outside it has infinite SFT loss.
        if np.any(ref_zero & (expert > 0)):
            raise InputError(f"{where}: `expert` puts mass where `reference` is 0; the RL optimum "
                             "would give it probability 0 (infinite SFT loss)")
    inst = make_instance(q, expert, mats["reward"], float(beta),
                         mats.get("reference"), mats.get("sft_policy"))
    return inst, tuple(float(s) for s in steps)


# e^x overflows float64 past x = 709; the measured quantities go wrong beyond it, not before
MAX_SPREAD_OVER_BETA = 700


def load_instance(path: str | Path) -> tuple[Instance, tuple[float, ...]]:
    """Read and validate an instance file; every problem is an ``InputError`` naming the file."""
    return validate(read_json(path), str(path))


def read_json(path: str | Path):
    """The decoded JSON of an instance file (UTF-8); an unreadable file is an ``InputError``."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise InputError(f"{path}: no such file") from None
    except OSError as e:
        raise InputError(f"{path}: cannot read ({e.strerror})") from None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        line = data[: e.start].count(b"\n") + 1
        raise InputError(f"{path}:{line}: not UTF-8 text (byte {e.start})") from None
    try:
        raw = json.loads(text)
    except json.JSONDecodeError as e:
        raise InputError(f"{path}: invalid JSON at line {e.lineno}, column {e.colno}: {e.msg}") from None
    except ValueError as e:  # an integer of more than 4300 digits
        raise InputError(f"{path}: invalid JSON ({str(e).splitlines()[0]})") from None
    except RecursionError:
        raise InputError(f"{path}: invalid JSON (nested too deeply)") from None
    return raw


# ----------------------------------------------------------------------------- random instances
# Instances are drawn with a seeded numpy Generator: drawing them is input preparation, not part of
# any jitted computation, and costs no compilation (the checks and the search run on fresh batches).


def random_batch(rng: np.random.Generator, batch: int, num_x: int, num_y: int,
                 logit_scale: float = 2.0) -> Instance:
    """``batch`` generic instances stacked on a leading axis: probability vectors are softmaxes of
    Gaussian logits (scale ``logit_scale``), rewards uniform in [-1, 1], β log-uniform in [0.2, 5]."""

    def simplex(*shape):
        z = logit_scale * rng.standard_normal((batch, *shape))
        e = np.exp(z - z.max(-1, keepdims=True))
        return e / e.sum(-1, keepdims=True)

    return make_instance(q=simplex(num_x), expert=simplex(num_x, num_y),
                         reward=rng.uniform(-1.0, 1.0, (batch, num_x, num_y)),
                         beta=np.exp(rng.uniform(np.log(0.2), np.log(5.0), batch)),
                         reference=simplex(num_x, num_y), sft_policy=simplex(num_x, num_y))


def edge_cases(rng: np.random.Generator, num_x: int, num_y: int) -> dict[str, Instance]:
    """The edge cases every numeric check runs on, each a batch of one X×Y instance:

    - ``deterministic_expert``: p_D a point mass on each prompt (reference = expert too);
    - ``constant_reward``: r ≡ const on every prompt;
    - ``beta_large`` (β = 1e3) and ``beta_small`` (β = 1e-2).
    A two-response batch is ``random_batch(rng, B, X, 2)``.
    """
    base = random_batch(rng, 1, num_x, num_y)
    onehot = np.eye(num_y)[np.arange(num_x) % num_y][None]
    return {
        "deterministic_expert": dataclasses.replace(base, expert=jnp.asarray(onehot), reference=jnp.asarray(onehot)),
        "constant_reward": dataclasses.replace(base, reward=jnp.full_like(base.reward, 0.3)),
        "beta_large": dataclasses.replace(base, beta=jnp.full((1,), 1e3)),
        "beta_small": dataclasses.replace(base, beta=jnp.full((1,), 1e-2)),
    }


def stack(*batches: Instance) -> Instance:
    """Concatenate batches of instances along the leading axis."""
    return jax.tree.map(lambda *a: jnp.concatenate(a), *batches)


def take(batch: Instance, index) -> Instance:
    """One instance (integer ``index``) or a sub-batch (array ``index``) of a batch."""
    return jax.tree.map(lambda a: a[index], batch)
