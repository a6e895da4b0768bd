"""llm_check.checkpoint: exact round trips, atomic writes, clear errors on bad files."""

from __future__ import annotations

import os

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from llm_check import checkpoint as ckpt
from theory.errors import InputError

pytestmark = pytest.mark.usefixtures("f32")


def _trees():
    params = {"layer": {"kernel": jnp.arange(6.0).reshape(2, 3), "scale": jnp.ones(3)}}
    opt = optax.adamw(1e-3)
    state = opt.init(params)
    grads = jax.tree.map(lambda x: 0.1 * x + 1, params)
    _, state = opt.update(grads, state, params)
    return params, state


def test_round_trip_is_exact(tmp_path):
    params, state = _trees()
    path = ckpt.step_dir(str(tmp_path), 3)
    ckpt.save_checkpoint(path, {"params": params, "opt_state": state}, {"step": 3, "key": [1, 2]})
    zeros = jax.tree.map(jnp.zeros_like, (params, state))
    trees, meta = ckpt.load_checkpoint(path, {"params": zeros[0], "opt_state": zeros[1]})
    assert meta == {"step": 3, "key": [1, 2]}
    for a, b in zip(jax.tree.leaves((params, state)),
                    jax.tree.leaves((trees["params"], trees["opt_state"]))):
        assert np.asarray(a).dtype == np.asarray(b).dtype
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    assert jax.tree.structure(trees["opt_state"]) == jax.tree.structure(state)


def test_latest_ignores_unfinished_writes_and_prune_keeps_newest(tmp_path):
    params, _ = _trees()
    root = str(tmp_path)
    for s in (2, 4):
        ckpt.save_checkpoint(ckpt.step_dir(root, s), {"params": params}, {"step": s})
    os.makedirs(ckpt.step_dir(root, 6) + ".tmp-999")  # a writer killed mid-way
    os.makedirs(ckpt.step_dir(root, 8))  # no meta.json: incomplete
    assert ckpt.latest_checkpoint(root) == (ckpt.step_dir(root, 4), 4)
    ckpt.prune_checkpoints(root, keep=1)
    assert ckpt.latest_checkpoint(root) == (ckpt.step_dir(root, 4), 4)
    assert not os.path.exists(ckpt.step_dir(root, 2))
    ckpt.save_checkpoint(ckpt.step_dir(root, 4), {"params": params}, {"step": 44})  # overwrite
    assert ckpt.load_checkpoint(ckpt.step_dir(root, 4), {"params": params})[1]["step"] == 44
    assert ckpt.latest_checkpoint(str(tmp_path / "nothing")) is None


def test_bad_checkpoints_name_the_file_or_tensor(tmp_path):
    params, _ = _trees()
    path = str(tmp_path / "c")
    ckpt.save_checkpoint(path, {"params": params}, {"step": 1})
    wrong = {"layer": {"kernel": jnp.zeros((3, 2)), "scale": jnp.ones(3)}}
    with pytest.raises(InputError, match=r"tensor \['layer'\]\['kernel'\] has shape"):
        ckpt.load_checkpoint(path, {"params": wrong})
    extra = {"layer": {"kernel": jnp.zeros((2, 3)), "scale": jnp.ones(3), "bias": jnp.ones(3)}}
    with pytest.raises(InputError, match=r"tensor \['layer'\]\['bias'\] is missing"):
        ckpt.load_checkpoint(path, {"params": extra})
    with pytest.raises(InputError, match="opt_state.safetensors: missing"):
        ckpt.load_checkpoint(path, {"opt_state": params})
    with open(os.path.join(path, "params.safetensors"), "wb") as f:
        f.write(b"\x00garbage")
    with pytest.raises(InputError, match="params.safetensors: unreadable"):
        ckpt.load_checkpoint(path, {"params": params})
    with pytest.raises(InputError, match="meta.json: missing"):
        ckpt.load_checkpoint(str(tmp_path), {"params": params})
