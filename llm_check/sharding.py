"""Device mesh and shardings: data parallelism plus FSDP on a ``("data", "fsdp")`` mesh.

- ``make_mesh("data=2,fsdp=4")`` builds a 2-D ``jax.sharding.Mesh``; ``None`` is a 1x1 mesh on the
  first device, so the same code runs on one device or many.
- Parameters (``param_spec``): each tensor is split along its largest dimension divisible by the
  ``fsdp`` axis size, over ``fsdp``, and replicated over ``data``; tensors with no such dimension
  (norm weights on a large mesh) are replicated. XLA inserts the all-gathers (GSPMD).
- Batches (``batch_sharding``): the leading (batch) axis is split over ``("data", "fsdp")``, so
  every device gets different examples; the batch size must be a multiple of the device count.
- ``place`` builds a global array straight from a host (NumPy) array with
  ``jax.make_array_from_callback``: each device receives only its own slice, and in a multi-host
  job every process passes the same host array and feeds only its local devices.

In the LLM pipeline (``coupling llm run --mesh data=D,fsdp=F``; ``pipeline.Context.mesh``, None
without a mesh): the params are FSDP-sharded at load time (``shard_model``, or ``load_pretrained``
straight from the files), and every batch fed to a jitted function is placed with its batch axis
over all D*F devices (``shard_batch``): the SFT and base steps' [A, B, T] micro-batches on axis 1
(the rows of each micro-batch), the rollout prompts and the GRPO step's prompts [P, ...], its
completions, masks, old/ref log-probs and advantages [P*G, ...] (rows grouped by prompt, so a device
holds whole groups), and the held-out CE batch and evaluation prompts. The built-in task's exact
answer set (``exact_eval``, (max_operand+1)^2 rows) stays replicated. So ``--sft-batch`` /
``--grad-accum``, ``--prompts-per-step`` and the held-out rows evaluated (``--eval-rows`` or
``--n-heldout``) must be multiples of D*F: ``RunConfig.check_mesh`` and ``check_heldout`` reject
others before anything is written. The metrics equal a one-device run's to float32 rounding
(reductions run in another order). ``--remat`` (``RunConfig.remat``) recomputes each layer's
activations in the backward pass (``Qwen3(remat=True)``): less activation memory, the same
gradients. ``--resume`` restores params and optimizer state from a checkpoint onto the devices
with the sharding of the freshly built ones (``place_like``), so a resumed run stays on the mesh.

Several processes (one per host; ``coupling llm run --coordinator HOST:PORT --num-processes N
--process-id I``): ``init_distributed`` first in every process, before anything else touches JAX,
then the mesh is built over ``jax.devices()`` (all processes' devices) exactly as on one host.
Each process passes only its own rows of a batch (``place_batch``, via
``jax.make_array_from_process_local_data``); a value the host needs whole is all-gathered
(``to_host``); only process 0 writes files (``is_main``); ``barrier`` waits for all::

    from llm_check.sharding import init_distributed, make_mesh
    init_distributed()                     # on TPU / SLURM / Open MPI the arguments are detected
    init_distributed("10.0.0.1:1234", num_processes=4, process_id=RANK)   # elsewhere
    mesh = make_mesh("data=4,fsdp=8")

Simplification: no tensor/sequence parallelism; FSDP splits whole weight matrices.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from llm_check.run_config import mesh_sizes
from theory.errors import InputError

AXES = ("data", "fsdp")


def make_mesh(spec: str | None = None, devices=None) -> Mesh:
    """``"data=D,fsdp=F"`` (either may be omitted, default 1) on the first D*F devices."""
    devices = list(jax.devices() if devices is None else devices)
    sizes = mesh_sizes(spec)
    n = sizes["data"] * sizes["fsdp"]
    if n > len(devices):
        raise InputError(f"mesh spec {spec!r} needs {n} devices; {len(devices)} are available")
    return Mesh(np.array(devices[:n]).reshape(sizes["data"], sizes["fsdp"]), AXES)


def param_spec(shape, mesh: Mesh) -> P:
    """Split the largest dimension divisible by the fsdp size over ``fsdp``; else replicate."""
    f = mesh.shape["fsdp"]
    if f == 1:
        return P()
    candidates = [d for d in range(len(shape)) if shape[d] % f == 0 and shape[d] >= f]
    if not candidates:
        return P()
    d = max(candidates, key=lambda i: shape[i])
    return P(*[("fsdp" if i == d else None) for i in range(len(shape))])


def param_sharding(shape, mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, param_spec(shape, mesh))


def batch_sharding(mesh: Mesh, ndim: int, axis: int = 0) -> NamedSharding:
    """The batch axis ``axis`` (default the leading one) over every device (``("data",
    "fsdp")``), the rest replicated."""
    return NamedSharding(mesh, P(*[(AXES if i == axis else None) for i in range(ndim)]))


def place(host, sharding: NamedSharding) -> jax.Array:
    """A global array with ``sharding`` from a host array that every process holds whole (each
    device gets only its slice)."""
    host = np.asarray(host)
    return jax.make_array_from_callback(host.shape, sharding, lambda index: host[index])


def place_batch(host, sharding: NamedSharding, axis: int = 0) -> jax.Array:
    """A global batch from the rows of ``host`` that this process's devices hold: the process
    passes only its own rows, contiguous along ``axis``, to
    ``jax.make_array_from_process_local_data`` (with one process: all of them)."""
    host = np.asarray(host)
    if jax.process_count() == 1:
        return jax.make_array_from_process_local_data(sharding, host, host.shape)
    n = host.shape[axis]
    rows = sorted({(idx[axis].start or 0, n if idx[axis].stop is None else idx[axis].stop)
                   for idx in sharding.addressable_devices_indices_map(host.shape).values()})
    lo, hi = rows[0][0], rows[-1][1]
    if sum(b - a for a, b in rows) != hi - lo:
        raise ValueError(f"this process's rows {rows} of the batch are not contiguous")
    local = np.take(host, np.arange(lo, hi), axis=axis)
    return jax.make_array_from_process_local_data(sharding, local, host.shape)


def shard_batch(batch, mesh: Mesh, axis: int = 0):
    """Place every array of a pytree with its batch axis ``axis`` split over the whole mesh.

    Host (NumPy) arrays and one-device arrays go through ``place_batch`` (each process hands over
    only its rows); arrays already on the mesh (a rollout's completions, log-probs computed under
    jit) are moved with ``jax.device_put``, which is free when they already have that sharding."""
    n = mesh.devices.size

    def one(x):
        if x.shape[axis] % n:
            raise InputError(f"batch size {x.shape[axis]} is not a multiple of the {n} devices of "
                             "the mesh")
        sharding = batch_sharding(mesh, x.ndim, axis)
        if isinstance(x, jax.Array) and (len(x.sharding.device_set) > 1
                                         or not x.is_fully_addressable):
            return jax.device_put(x, sharding)  # already on the mesh: a reshard at most
        return place_batch(np.asarray(x), sharding, axis)
    return jax.tree.map(one, batch)


def place_like(tree, template):
    """Put every array of ``tree`` (e.g. restored from a checkpoint as host arrays) on the devices
    like the matching array of ``template`` (same structure): with the template's sharding when
    that is a ``NamedSharding`` (a mesh), so a resumed run keeps its FSDP-sharded params and
    optimizer state instead of landing on one device; else as ``jnp.asarray`` does (uncommitted,
    like optax's step counters, which a jitted function may then combine with mesh arrays)."""
    def one(x, t):
        s = getattr(t, "sharding", None)
        if not isinstance(s, NamedSharding):
            return jnp.asarray(x)
        return jax.device_put(x, s) if isinstance(x, jax.Array) else place(x, s)
    return jax.tree.map(one, tree, template)


def on_mesh(tree, mesh: Mesh | None):
    """Every array of ``tree`` on ``mesh``: arrays that already have a ``NamedSharding`` stay as
    they are, the others (optax's step counters, made on one device) are replicated over the mesh,
    so that a checkpoint of the tree is a set of mesh arrays on every process. With no mesh:
    ``tree`` unchanged."""
    if mesh is None:
        return tree
    rep = NamedSharding(mesh, P())

    def one(x):
        if isinstance(getattr(x, "sharding", None), NamedSharding):
            return x
        return place(np.asarray(x), rep)
    return jax.tree.map(one, tree)


def shard_model(model, mesh: Mesh):
    """Re-place every variable of an NNX model (in place) with ``param_sharding``; returns it.
    Each process holds the same freshly initialised values (same seed), so every device takes its
    slice from its own process's copy (``place``)."""
    state = nnx.state(model)
    nnx.update(model, jax.tree.map(
        lambda x: place(np.asarray(x), param_sharding(x.shape, mesh)), state))
    return model


def to_host(x) -> np.ndarray:
    """The whole value of ``x`` as a NumPy array on this host. An array whose shards live on
    other processes' devices too (a multi-process batch) is all-gathered first
    (``multihost_utils.process_allgather``, a collective: every process must make the same call);
    anything else is plain ``np.asarray``."""
    if isinstance(x, jax.Array) and not x.is_fully_addressable:
        from jax.experimental import multihost_utils

        return np.asarray(multihost_utils.process_allgather(x, tiled=True))
    return np.asarray(x)


def is_main() -> bool:
    """True in the one process that writes files (``jax.process_index() == 0``)."""
    return jax.process_index() == 0


def barrier(name: str) -> None:
    """Wait until every process gets here (no-op with one process)."""
    if jax.process_count() > 1:
        from jax.experimental import multihost_utils

        multihost_utils.sync_global_devices(name)


def init_distributed(coordinator_address: str | None = None, num_processes: int | None = None,
                     process_id: int | None = None, *, timeout_s: int = 300,
                     heartbeat_timeout_s: int = 100) -> None:
    """Multi-process start-up: ``jax.distributed.initialize`` (arguments auto-detected on TPU,
    SLURM and Open MPI). Call it once per process before any other JAX call; then ``make_mesh``
    sees every process's devices.

    - ``timeout_s``: how long to wait for every process to join;
    - ``heartbeat_timeout_s``: a process that stops answering (killed, crashed) for this long
      makes JAX's coordination service terminate every other process with an error naming it,
      so a run never hangs on a dead peer;
    - on CPU, cross-process collectives go through gloo (``jax_cpu_collectives_implementation``;
      the flag only concerns the CPU client, so it is set unconditionally)."""
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    jax.distributed.initialize(coordinator_address=coordinator_address,
                               num_processes=num_processes, process_id=process_id,
                               initialization_timeout=timeout_s,
                               heartbeat_timeout_seconds=heartbeat_timeout_s,
                               shutdown_timeout_seconds=min(timeout_s, 60))
