"""HF checkpoints: bit-exact round trip, transformers loads what we save, sharded and bf16
checkpoints, tied lm_head, and bad checkpoints reported by file and tensor."""

from __future__ import annotations

import dataclasses
import importlib.util
import json

import jax
import ml_dtypes
import numpy as np
import pytest
from flax import nnx

from llm_check import load_pretrained, save_pretrained
from llm_check.config import preset
from llm_check.model import Qwen3
from llm_check.sharding import make_mesh
from llm_check.weights import read_safetensors_header, read_tensor, write_safetensors
from theory.errors import InputError

pytestmark = pytest.mark.usefixtures("f32")

CFG = dataclasses.replace(preset("tiny"), vocab_size=128, hidden_size=32, intermediate_size=64,
                          num_attention_heads=4, num_key_value_heads=2, head_dim=16)
UNTIED = dataclasses.replace(CFG, tie_word_embeddings=False)
HAS_TORCH = all(importlib.util.find_spec(m) for m in ("torch", "transformers"))


def random_model(cfg, seed=0):
    """Large random weights and random norm weights, so that a wrong layout shows."""
    model = Qwen3(cfg, rngs=nnx.Rngs(seed), init_std=0.3)
    key = jax.random.key(seed + 1)
    for path, var in nnx.to_flat_state(nnx.state(model, nnx.Param)):
        if path[-1] == "weight":  # norm weights
            key, sub = jax.random.split(key)
            var.set_value(jax.random.uniform(sub, var.shape, minval=0.5, maxval=1.5))
    return model


def params(model):
    return {p: np.asarray(v.get_value()) for p, v in nnx.to_flat_state(nnx.state(model, nnx.Param))}


def tensors_of(path):
    header, start = read_safetensors_header(path)
    return {k: np.array(read_tensor(path, header, start, k)) for k in header}


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """A saved untied model (and the model itself), shared by the corruption tests."""
    with jax.enable_x64(False):
        model = random_model(UNTIED)
        folder = tmp_path_factory.mktemp("ckpt") / "untied"
        save_pretrained(model, UNTIED, folder)
        yield model, folder


@pytest.mark.parametrize("cfg", [CFG, UNTIED], ids=["tied", "untied"])
def test_round_trip_is_bit_exact(cfg, tmp_path):
    model = random_model(cfg)
    save_pretrained(model, cfg, tmp_path / "m")
    assert sorted(p.name for p in (tmp_path / "m").iterdir()) == ["config.json",
                                                                  "model.safetensors"]
    loaded, cfg2 = load_pretrained(tmp_path / "m")
    assert cfg2 == cfg
    a, b = params(model), params(loaded)
    assert a.keys() == b.keys()
    for k in a:
        np.testing.assert_array_equal(a[k], b[k], err_msg=str(k))
    names = set(tensors_of(tmp_path / "m" / "model.safetensors"))
    assert ("lm_head.weight" in names) == (not cfg.tie_word_embeddings)
    assert "model.layers.1.self_attn.q_norm.weight" in names  # q/k norms are exported


def test_save_replaces_an_existing_folder_and_leaves_no_temporaries(tmp_path):
    save_pretrained(random_model(CFG, seed=1), CFG, tmp_path / "m")
    model = random_model(CFG, seed=2)
    save_pretrained(model, CFG, tmp_path / "m")
    assert [p.name for p in tmp_path.iterdir()] == ["m"]
    np.testing.assert_array_equal(params(load_pretrained(tmp_path / "m")[0])[("embed_tokens",)],
                                  params(model)[("embed_tokens",)])
    with pytest.raises(InputError, match="lm_head"):  # config does not match the model
        save_pretrained(model, UNTIED, tmp_path / "bad")
    assert [p.name for p in tmp_path.iterdir()] == ["m"]


@pytest.mark.skipif(not HAS_TORCH, reason="torch and transformers are not installed")
def test_transformers_loads_what_we_save(saved):
    import torch
    from transformers import Qwen3ForCausalLM

    model, folder = saved
    ids = np.asarray(jax.random.randint(jax.random.key(3), (2, 9), 0, CFG.vocab_size), np.int32)
    ref = Qwen3ForCausalLM.from_pretrained(folder, dtype=torch.float32).eval()
    with torch.no_grad():
        want = ref(torch.tensor(ids, dtype=torch.long)).logits.numpy()
    got = np.asarray(nnx.jit(lambda m, x: m(x))(model, ids))
    assert np.abs(want).mean() > 1.0
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-4)


def test_sharded_checkpoint_with_index_loads(saved, tmp_path):
    model, folder = saved
    t = tensors_of(folder / "model.safetensors")
    names = sorted(t)
    parts = {"model-00001-of-00002.safetensors": names[::2],
             "model-00002-of-00002.safetensors": names[1::2]}
    for file, ns in parts.items():
        write_safetensors(tmp_path / file, {n: t[n] for n in ns})
    (tmp_path / "model.safetensors.index.json").write_text(json.dumps(
        {"metadata": {}, "weight_map": {n: f for f, ns in parts.items() for n in ns}}))
    (tmp_path / "config.json").write_text((folder / "config.json").read_text())
    loaded, _ = load_pretrained(tmp_path)
    a, b = params(model), params(loaded)
    for k in a:
        np.testing.assert_array_equal(a[k], b[k], err_msg=str(k))
    (tmp_path / "model-00002-of-00002.safetensors").unlink()
    with pytest.raises(InputError, match="model-00002-of-00002.safetensors"):
        load_pretrained(tmp_path)


def test_bf16_checkpoint_loads_exactly_into_float32(saved, tmp_path):
    _, folder = saved
    t = {k: v.astype(ml_dtypes.bfloat16) for k, v in tensors_of(folder / "model.safetensors").items()}
    write_safetensors(tmp_path / "model.safetensors", t)
    (tmp_path / "config.json").write_text((folder / "config.json").read_text())
    loaded, _ = load_pretrained(tmp_path)
    emb = params(loaded)[("embed_tokens",)]
    assert emb.dtype == np.float32
    np.testing.assert_array_equal(emb, t["model.embed_tokens.weight"].astype(np.float32))


def test_params_are_placed_with_named_sharding_when_a_mesh_is_given(saved):
    _, folder = saved
    loaded, _ = load_pretrained(folder, mesh=make_mesh(None))
    for leaf in jax.tree.leaves(nnx.state(loaded, nnx.Param)):
        assert isinstance(leaf.sharding, jax.sharding.NamedSharding)


def test_tied_checkpoint_with_a_stored_lm_head(tmp_path):
    model = random_model(CFG)
    save_pretrained(model, CFG, tmp_path)
    t = tensors_of(tmp_path / "model.safetensors")
    write_safetensors(tmp_path / "model.safetensors",
                      {**t, "lm_head.weight": t["model.embed_tokens.weight"]})
    loaded, _ = load_pretrained(tmp_path)  # equal to the embedding: accepted
    np.testing.assert_array_equal(params(loaded)[("embed_tokens",)], params(model)[("embed_tokens",)])
    write_safetensors(tmp_path / "model.safetensors",
                      {**t, "lm_head.weight": t["model.embed_tokens.weight"] + 1})
    with pytest.raises(InputError, match="'lm_head.weight' differs"):
        load_pretrained(tmp_path)


def _corrupt(folder, tmp_path, edit):
    """Copy of the checkpoint with ``edit(tensors)`` applied to model.safetensors."""
    t = tensors_of(folder / "model.safetensors")
    edit(t)
    write_safetensors(tmp_path / "model.safetensors", t)
    (tmp_path / "config.json").write_text((folder / "config.json").read_text())
    return tmp_path


@pytest.mark.parametrize("edit,match", [
    (lambda t: t.pop("model.layers.1.mlp.up_proj.weight"),
     r"tensor 'model.layers.1.mlp.up_proj.weight' is missing"),
    (lambda t: t.update({"model.layers.0.self_attn.q_proj.weight":
                         t["model.layers.0.self_attn.q_proj.weight"][:32]}),
     r"model.safetensors: tensor 'model.layers.0.self_attn.q_proj.weight' has shape \(32, 32\), "
     r"expected \(64, 32\)"),
    (lambda t: t.update({"model.layers.7.mlp.up_proj.weight": np.zeros((2, 2), np.float32)}),
     r"model.safetensors: unexpected tensor 'model.layers.7.mlp.up_proj.weight'"),
])
def test_bad_tensors_are_reported_by_file_and_tensor(saved, tmp_path, edit, match):
    _, folder = saved
    with pytest.raises(InputError, match=match):
        load_pretrained(_corrupt(folder, tmp_path, edit))


def test_truncated_file_is_reported(saved, tmp_path):
    _, folder = saved
    data = (folder / "model.safetensors").read_bytes()
    (tmp_path / "config.json").write_text((folder / "config.json").read_text())
    (tmp_path / "model.safetensors").write_bytes(data[: len(data) - 100])
    with pytest.raises(InputError, match=r"model.safetensors: truncated .* tensor 'model\."):
        load_pretrained(tmp_path)
    (tmp_path / "model.safetensors").write_bytes(data[:5])
    with pytest.raises(InputError, match="truncated"):
        load_pretrained(tmp_path)


def test_corrupt_header_and_index_are_reported(saved, tmp_path):
    _, folder = saved
    (tmp_path / "config.json").write_text((folder / "config.json").read_text())
    header = json.dumps({"model.norm.weight": {"dtype": "F32", "shape": [32]}}).encode()
    (tmp_path / "model.safetensors").write_bytes(len(header).to_bytes(8, "little") + header)
    with pytest.raises(InputError, match="corrupt safetensors header entry for tensor "
                                         "'model.norm.weight'"):
        load_pretrained(tmp_path)
    (tmp_path / "model.safetensors.index.json").write_text(json.dumps({"weight_map": [1]}))
    with pytest.raises(InputError, match="index.json: not a safetensors index"):
        load_pretrained(tmp_path)


def test_bad_config_is_reported(saved, tmp_path):
    _, folder = saved
    (tmp_path / "model.safetensors").write_bytes((folder / "model.safetensors").read_bytes())
    cfg = json.loads((folder / "config.json").read_text())
    (tmp_path / "config.json").write_text(json.dumps(dict(cfg, use_sliding_window=True)))
    with pytest.raises(InputError, match=r"config.json: field 'use_sliding_window'"):
        load_pretrained(tmp_path)
    (tmp_path / "config.json").write_text("{")
    with pytest.raises(InputError, match="config.json: invalid JSON"):
        load_pretrained(tmp_path)
    (tmp_path / "config.json").unlink()
    with pytest.raises(InputError, match="no config.json"):
        load_pretrained(tmp_path)


def test_the_cli_reports_a_bad_checkpoint_in_one_line(saved, tmp_path):
    """What a user sees: InputError -> one line on stderr and exit code 2 (the dispatcher's rule)."""
    import contextlib
    import io

    from toy_models.cli import main

    _, folder = saved
    bad = _corrupt(folder, tmp_path, lambda t: t.pop("model.norm.weight"))
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        code = main(["llm", "eval", "--model", str(bad), "--task", "builtin"])
    assert code == 2, err.getvalue()
    assert "model.norm.weight" in err.getvalue() and "is missing" in err.getvalue()
    assert len(err.getvalue().strip().splitlines()) == 1


@pytest.mark.parametrize("cfg", [CFG, UNTIED], ids=["tied", "untied"])
def test_scanned_layers_load_and_save_the_same_hf_tensors(cfg, tmp_path):
    """A model with ``scan_layers=True`` stacks layer i at index i: HF -> scanned -> HF is
    bit-exact, and it computes the unrolled model's logits."""
    model = random_model(cfg)
    save_pretrained(model, cfg, tmp_path / "unrolled")
    scanned, _ = load_pretrained(tmp_path / "unrolled", scan_layers=True)
    assert scanned.scan_layers
    p, q = params(model), params(scanned)
    for i in range(cfg.num_hidden_layers):
        np.testing.assert_array_equal(q[("layers", "mlp", "up_proj", "kernel")][i],
                                      p[("layers", i, "mlp", "up_proj", "kernel")])
        np.testing.assert_array_equal(q[("layers", "self_attn", "k_norm", "weight")][i],
                                      p[("layers", i, "self_attn", "k_norm", "weight")])
    save_pretrained(scanned, cfg, tmp_path / "scanned")
    a, b = tensors_of(tmp_path / "unrolled" / "model.safetensors"), \
        tensors_of(tmp_path / "scanned" / "model.safetensors")
    assert sorted(a) == sorted(b)
    for name in a:
        np.testing.assert_array_equal(a[name], b[name], err_msg=name)
    back, _ = load_pretrained(tmp_path / "scanned")  # and into the unrolled layout again
    assert params(back).keys() == p.keys()
    for k in p:
        np.testing.assert_array_equal(params(back)[k], p[k])
    ids = jax.random.randint(jax.random.key(0), (2, 7), 0, cfg.vocab_size)
    np.testing.assert_allclose(scanned(ids), model(ids), rtol=0, atol=1e-5)


def test_a_bad_layer_tensor_is_reported_by_name_when_loading_scanned(saved, tmp_path):
    _, folder = saved
    t = tensors_of(folder / "model.safetensors")
    t["model.layers.1.self_attn.k_proj.weight"] = t["model.layers.1.self_attn.k_proj.weight"][:8]
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "config.json").write_text((folder / "config.json").read_text())
    write_safetensors(bad / "model.safetensors", t)
    with pytest.raises(InputError, match=r"tensor 'model.layers.1.self_attn.k_proj.weight' has "
                                         r"shape \(8, 32\), expected \(32, 32\)"):
        load_pretrained(bad, scan_layers=True)
