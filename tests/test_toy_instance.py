"""Instance files: every malformed input is an InputError naming the file and the key."""

from __future__ import annotations

import json

import numpy as np
import pytest
from numpy.testing import assert_allclose

from theory.errors import InputError
from toy_models.instance import edge_cases, load_instance, random_batch

GOOD = {"prompt_weights": [0.4, 0.6], "expert": [[0.5, 0.5], [0.2, 0.8]], "reward": [[1, 0], [0, 1]],
        "beta": 0.5}


def _write(tmp_path, obj, raw: str | None = None):
    path = tmp_path / "inst.json"
    path.write_text(raw if raw is not None else json.dumps(obj))
    return path


def test_good_instance_defaults(tmp_path):
    inst, steps = load_instance(_write(tmp_path, GOOD))
    assert_allclose(inst.reference, inst.expert, rtol=0, atol=0)
    assert_allclose(inst.sft_policy, inst.expert, rtol=0, atol=0)
    assert steps == (0.1, 0.5, 1.0) and float(inst.beta) == 0.5


@pytest.mark.parametrize("change, message", [
    ({"expert": [[0.5, 0.5, 0.0], [0.2, 0.8, 0.0]]}, "`reward` has shape [2, 2], expected [2, 3]"),
    ({"expert": [[0.5, 0.5]]}, "`expert` has shape [1, 2], expected [2, 2]"),
    ({"reward": [[1, 0]]}, "`reward` has shape [1, 2], expected [2, 2]"),
    ({"expert": [[0.5, 0.6], [0.2, 0.8]]}, "`expert` row 0 sums to"),
    ({"expert": [[0.5, 0.5 + 2e-9], [0.2, 0.8]]}, "not 1 within 1e-09"),
    ({"expert": [[1.2, -0.2], [0.2, 0.8]]}, "`expert` has a negative probability at index [0, 1]"),
    ({"expert": [[float("nan"), 0.5], [0.2, 0.8]]}, "`expert` contains NaN"),
    ({"reward": [[float("nan"), 0], [0, 1]]}, "`reward` contains NaN"),
    ({"beta": 0}, "`beta` must be > 0"),
    ({"beta": -1.0}, "`beta` must be > 0"),
    ({"beta": "big"}, "`beta` must be a finite number"),
    ({"prompt_weights": [0.5, 0.6]}, "`prompt_weights` row 0 sums to"),
    ({"reference": [[1.0, 0.0], [0.2, 0.8]]}, "`expert` puts mass where `reference` is 0"),
    ({"sft_steps": [0.1, -1]}, "`sft_steps` must be a non-empty list of positive numbers"),
    ({"reward": "high"}, "`reward` must be"),
    ({"typo_key": 1}, "unknown key `typo_key`"),
])
def test_bad_instances_raise_one_clear_error(tmp_path, change, message):
    path = _write(tmp_path, {**GOOD, **change}, json.dumps({**GOOD, **change}).replace("NaN", "NaN"))
    with pytest.raises(InputError) as err:
        load_instance(path)
    assert message in str(err.value) and str(path) in str(err.value)
    assert "\n" not in str(err.value)


@pytest.mark.parametrize("key", ["prompt_weights", "expert", "reward", "beta"])
def test_missing_key(tmp_path, key):
    with pytest.raises(InputError, match=f"missing key `{key}`"):
        load_instance(_write(tmp_path, {k: v for k, v in GOOD.items() if k != key}))


def test_invalid_json_and_missing_file(tmp_path):
    with pytest.raises(InputError, match=r"invalid JSON at line 1, column \d+"):
        load_instance(_write(tmp_path, None, raw='{"beta": 1,'))
    with pytest.raises(InputError, match="no such file"):
        load_instance(tmp_path / "absent.json")


def test_random_batch_and_edge_cases_are_valid_instances():
    rng = np.random.default_rng(0)
    batch = random_batch(rng, 5, 3, 4)
    assert batch.expert.shape == (5, 3, 4) and batch.beta.shape == (5,)
    assert_allclose(np.asarray(batch.expert).sum(-1), 1.0, rtol=0, atol=1e-12)
    edges = edge_cases(rng, 3, 4)
    assert set(edges) == {"deterministic_expert", "constant_reward", "beta_large", "beta_small"}
    assert np.all(np.asarray(edges["deterministic_expert"].expert).max(-1) == 1.0)
