"""llm_check.checkpoint: exact round trips, atomic writes, clear errors on bad files."""

from __future__ import annotations

import os
import re

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
    path = str(tmp_path / "final")
    ckpt.save_checkpoint(path, {"params": params, "opt_state": state}, {"step": 3, "key": [1, 2]})
    zeros = jax.tree.map(jnp.zeros_like, (params, state))
    trees, meta = ckpt.load_checkpoint(path, {"params": zeros[0], "opt_state": zeros[1]})
    assert meta == {"step": 3, "key": [1, 2]}
    for a, b in zip(jax.tree.leaves((params, state)),
                    jax.tree.leaves((trees["params"], trees["opt_state"]))):
        assert np.asarray(a).dtype == np.asarray(b).dtype
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    assert jax.tree.structure(trees["opt_state"]) == jax.tree.structure(state)


def test_save_overwrites_atomically(tmp_path):
    params, _ = _trees()
    path = str(tmp_path / "final")
    ckpt.save_checkpoint(path, {"params": params}, {"step": 4})
    os.makedirs(path + ".tmp-999")  # a writer killed mid-way
    ckpt.save_checkpoint(path, {"params": params}, {"step": 44})  # overwrite
    assert ckpt.load_checkpoint(path, {"params": params})[1]["step"] == 44
    assert sorted(os.listdir(tmp_path)) == ["final"]  # the leftover is gone


def test_training_state_round_trip_is_exact_and_keeps_the_newest(tmp_path):
    """Orbax: params and optimizer state come back bit for bit, with the template's shardings;
    the meta too; only the newest step stays; a killed writer's temporary folder is ignored."""
    from jax.sharding import NamedSharding, PartitionSpec as P

    from llm_check.sharding import make_mesh, on_mesh, param_sharding

    params, state = _trees()
    mesh = make_mesh("data=1,fsdp=1")
    params = jax.tree.map(lambda x: jax.device_put(x, param_sharding(x.shape, mesh)), params)
    state = on_mesh(state, mesh)
    root = str(tmp_path / "ckpt")
    assert ckpt.latest_state(root) is None
    for step in (2, 4):
        ckpt.save_state(root, step, {"params": params, "opt_state": state},
                        {"step": step, "key": [1, 2]})
    os.makedirs(os.path.join(root, "6.orbax-checkpoint-tmp-123"))  # a writer killed mid-way
    assert ckpt.latest_state(root) == 4
    assert sorted(n for n in os.listdir(root) if n.isdigit()) == ["4"]
    template = jax.tree.map(lambda x: jax.device_put(jnp.zeros_like(x), x.sharding),
                            {"params": params, "opt_state": state})
    got, meta = ckpt.restore_state(root, 4, template)
    assert meta == {"step": 4, "key": [1, 2]}
    assert jax.tree.structure(got) == jax.tree.structure(template)
    for a, b in zip(jax.tree.leaves({"params": params, "opt_state": state}), jax.tree.leaves(got)):
        assert a.dtype == b.dtype and isinstance(b.sharding, NamedSharding)
        assert b.sharding.spec == a.sharding.spec
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    assert all(x.sharding.spec == P() for x in jax.tree.leaves(got["opt_state"])
               if x.ndim == 0)  # the step counters, replicated over the mesh


def test_bad_training_state_is_an_input_error(tmp_path):
    params, state = _trees()
    root = str(tmp_path / "ckpt")
    ckpt.save_state(root, 2, {"params": params, "opt_state": state}, {"step": 2})
    wrong = {"params": {"layer": {"kernel": jnp.zeros((3, 2)), "scale": jnp.ones(3)}},
             "opt_state": state}
    # checked against Orbax's metadata before any array is read; the message names the tensor
    where = re.escape(f"{root}/2: cannot restore the training state (")
    with pytest.raises(InputError, match=rf"^{where}tensor params\.layer\.kernel has shape "
                       r"\(2, 3\) float32, expected \(3, 2\) float32\)$"):
        ckpt.restore_state(root, 2, wrong)
    with pytest.raises(InputError, match=rf"^{where}tensor opt_state\.\S+: the run's state has "):
        ckpt.restore_state(root, 2, {"params": params})
    # an array where the checkpoint holds an empty node (adamw's weight-decay EmptyState)
    assert state[1] == optax.EmptyState()
    with pytest.raises(InputError, match=rf"^{where}tensor opt_state\.1: the run's state has "):
        ckpt.restore_state(root, 2, {"params": params, "opt_state": (state[0], jnp.zeros(3), state[2])})
    with pytest.raises(InputError, match=rf"^{where}tensor more\.\S+ is missing\)$"):
        ckpt.restore_state(root, 2, {"params": params, "opt_state": state, "more": state})
    with pytest.raises(InputError, match=rf"^{where}tensor extra is missing\)$"):  # empty nodes too
        ckpt.restore_state(root, 2, {"params": params, "opt_state": state, "extra": None})
    with pytest.raises(InputError, match=r"/3: cannot restore the training state \(no step 3; "
                       r"steps found: \[2\]\)$"):
        ckpt.restore_state(root, 3, {"params": params, "opt_state": state})
    os.remove(os.path.join(root, "2", "state", "_METADATA"))
    with pytest.raises(InputError, match=rf"^{where}its metadata is missing\)$"):
        ckpt.restore_state(root, 2, {"params": params, "opt_state": state})


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


def test_step_folders_of_the_older_format_are_named_and_not_read(tmp_path, capsys):
    root = tmp_path / "ckpt"
    (root / "step_000010").mkdir(parents=True)
    (root / "step_000010" / "params.safetensors").write_bytes(b"")
    assert ckpt.latest_state(str(root)) is None
    err = capsys.readouterr().err
    assert "step_000010: training state in an older format" in err and "starts again" in err
    assert ckpt.latest_state(str(tmp_path / "none")) is None  # no folder: nothing to say
    assert capsys.readouterr().err == ""


def test_a_template_whose_values_this_process_cannot_read_is_enough(tmp_path):
    """With several processes a template array may have shards on other processes' devices, and
    reading its values then fails; ``load_checkpoint`` needs only its shape and dtype."""

    class Remote:  # shape and dtype known here, values not (a non-addressable jax.Array)
        def __init__(self, shape, dtype):
            self.shape, self.dtype = shape, np.dtype(dtype)

        def __array__(self, *a, **k):
            raise RuntimeError("spans non-addressable devices")

    tree = {"w": np.arange(6, dtype=np.float32).reshape(2, 3), "n": np.float32(2.0)}
    ckpt.save_checkpoint(str(tmp_path / "c"), {"params": tree}, {"step": 1})
    out, _ = ckpt.load_checkpoint(str(tmp_path / "c"), {"params": {
        "w": Remote((2, 3), np.float32), "n": Remote((), np.float32)}})
    np.testing.assert_array_equal(out["params"]["w"], tree["w"])
    assert out["params"]["n"] == 2.0
    with pytest.raises(InputError, match=r"has shape \(2, 3\) float32, expected \(3, 2\)"):
        ckpt.load_checkpoint(str(tmp_path / "c"), {"params": {
            "w": Remote((3, 2), np.float32), "n": Remote((), np.float32)}})
