"""Mesh and shardings. The multi-device check runs in a subprocess with 8 simulated CPU devices
(XLA_FLAGS must be set before JAX initializes): a sharded forward and AdamW training step on a
("data", "fsdp") = (2, 4) mesh equal the unsharded ones."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest
from jax.sharding import PartitionSpec as P

from llm_check.sharding import make_mesh, param_spec
from theory.errors import InputError

pytestmark = pytest.mark.usefixtures("f32")

SCRIPT = textwrap.dedent('''
    import dataclasses, json, tempfile
    import jax, jax.numpy as jnp, numpy as np, optax
    from flax import nnx
    from llm_check.config import preset
    from llm_check.logprobs import token_logprobs
    from llm_check.model import Qwen3
    from llm_check.sharding import make_mesh, shard_batch, shard_model
    from llm_check.weights import load_pretrained, save_pretrained

    assert jax.device_count() == 8
    cfg = dataclasses.replace(preset("tiny"), vocab_size=128, hidden_size=32, intermediate_size=64,
                              num_attention_heads=4, num_key_value_heads=2, head_dim=16)
    ids = np.asarray(jax.random.randint(jax.random.key(1), (8, 12), 0, 128), np.int32)
    mask = np.ones_like(ids); mask[:4, :5] = 0

    def loss_fn(model, ids, mask):
        lp = token_logprobs(model, ids, mask, chunk_size=4)
        return -(lp * mask[:, 1:]).sum() / mask[:, 1:].sum()

    @nnx.jit
    def step(model, opt, ids, mask):
        logits = model(ids, attention_mask=mask)
        loss, grads = nnx.value_and_grad(loss_fn)(model, ids, mask)
        opt.update(model, grads)
        return logits, loss

    def run(model, ids, mask):
        opt = nnx.Optimizer(model, optax.adamw(1e-2), wrt=nnx.Param)
        logits, loss = step(model, opt, ids, mask)
        return logits, loss, model

    plain = Qwen3(cfg, rngs=nnx.Rngs(0), init_std=0.3)
    with tempfile.TemporaryDirectory() as d:
        save_pretrained(plain, cfg, d)
        mesh = make_mesh("data=2,fsdp=4")
        sharded, _ = load_pretrained(d, mesh=mesh)  # placed straight from host arrays
    other = shard_model(Qwen3(cfg, rngs=nnx.Rngs(0), init_std=0.3), mesh)
    l0, loss0, m0 = run(plain, ids, mask)
    batch = shard_batch({"ids": ids, "mask": mask}, mesh)
    l1, loss1, m1 = run(sharded, batch["ids"], batch["mask"])
    p0 = jax.tree.leaves(nnx.state(m0, nnx.Param))
    p1 = jax.tree.leaves(nnx.state(m1, nnx.Param))
    po = jax.tree.leaves(nnx.state(other, nnx.Param))
    q = m1.layers[0].self_attn.q_proj.kernel[...]
    print(json.dumps(dict(
        logits_err=float(np.abs(np.asarray(l0) - np.asarray(l1)).max()),
        loss_err=abs(float(loss0) - float(loss1)),
        param_err=max(float(np.abs(np.asarray(a) - np.asarray(b)).max()) for a, b in zip(p0, p1)),
        moved=max(float(np.abs(np.asarray(a) - np.asarray(b)).max()) for a, b in zip(p0, po)),
        q_spec=str(q.sharding.spec), q_shards=len({str(s.index) for s in q.addressable_shards}),
        logits_devices=len(l1.sharding.device_set),
        all_named=all(isinstance(x.sharding, jax.sharding.NamedSharding) for x in p1),
    )))
''')


def test_sharded_forward_and_training_step_equal_unsharded_on_8_devices():
    # LLVM optimization level 0 halves XLA:CPU compile time; both sides are compiled the same way
    env = dict(os.environ, JAX_PLATFORMS="cpu", JAX_ENABLE_X64="0",
               XLA_FLAGS="--xla_force_host_platform_device_count=8 "
                         "--xla_backend_optimization_level=0")
    out = subprocess.run([sys.executable, "-c", SCRIPT], env=env, capture_output=True, text=True,
                         timeout=300, cwd=os.path.dirname(os.path.dirname(__file__)))
    assert out.returncode == 0, out.stderr[-3000:]
    r = json.loads(out.stdout.strip().splitlines()[-1])
    assert r["logits_err"] <= 1e-5, r  # float32 reduction order differs across devices
    assert r["loss_err"] <= 1e-5, r
    assert r["param_err"] <= 1e-5, r
    assert r["moved"] > 1e-3, r  # the training step did change the weights
    assert r["q_spec"] == "P(None, 'fsdp')" and r["q_shards"] == 4, r
    assert r["logits_devices"] == 8 and r["all_named"], r


def test_make_mesh_parses_specs_and_rejects_bad_ones():
    mesh = make_mesh(None)
    assert mesh.axis_names == ("data", "fsdp") and mesh.devices.shape == (1, 1)
    assert make_mesh("fsdp=1").devices.shape == (1, 1)
    for bad, match in [("data=two", "data=two"), ("model=2", "model=2"), ("data=0", "data=0"),
                       ("data=64,fsdp=64", "needs 4096 devices")]:
        with pytest.raises(InputError, match=match):
            make_mesh(bad)


def test_param_spec_splits_the_largest_divisible_dimension():
    class FakeMesh:
        shape = {"data": 2, "fsdp": 4}

    assert param_spec((1024, 3072), FakeMesh) == P(None, "fsdp")
    assert param_spec((151936, 1024), FakeMesh) == P("fsdp", None)
    assert param_spec((6, 3), FakeMesh) == P()       # nothing divisible: replicated
    assert param_spec((128,), FakeMesh) == P("fsdp")
    FakeMesh.shape = {"data": 8, "fsdp": 1}
    assert param_spec((1024, 3072), FakeMesh) == P()
