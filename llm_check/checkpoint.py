"""Checkpoints of two kinds.

**Training state** (``save_state`` / ``restore_state`` / ``latest_state``): the params, the
optimizer state and a JSON ``meta`` (step, stage, seed, the PRNG key data) of a stage in progress,
written with Orbax (``orbax.checkpoint.CheckpointManager``) under ``ROOT/<step>/``:

- sharded: every process writes the shards its devices hold, nothing is gathered to one host;
- atomic: Orbax writes into a temporary folder and renames it once every process has finished, so
  the newest step folder is always complete (a killed writer leaves a temporary folder that
  readers ignore);
- restorable onto another topology: ``restore_state`` reads into the shardings of a template
  (the freshly built params and optimizer state of the resuming run), so a state saved by 2
  processes x 2 devices resumes on 1 process x 4 devices and the reverse; values come back bit
  for bit;
- checked before it is read: a step whose tensors differ from the template's in name, shape or
  dtype (Orbax's metadata, ``_check_stored``) is an ``InputError`` naming the first such tensor;
- only the newest step is kept (``max_to_keep=1``).

**A stage's final weights** (``save_checkpoint`` / ``load_checkpoint``, the ``final`` folder the
next stage and ``coupling llm eval`` start from): named pytrees as safetensors files keyed by their
pytree path (``jax.tree_util.keystr``) plus a ``meta.json`` (the model config, the tokenizer). The
caller gathers the parameters to the host first (``sharding.to_host``) and only process 0
writes. Written into a sibling temp folder, flushed, then renamed into place; a killed writer
leaves only a ``*.tmp-*`` folder, which readers ignore and the next save removes.
"""

from __future__ import annotations

import json
import os
import shutil
import sys

import jax
import numpy as np
import orbax.checkpoint as ocp
from safetensors import SafetensorError
from safetensors.numpy import load_file, save_file

from theory.errors import InputError

def _flatten(tree) -> dict[str, np.ndarray]:
    leaves, _ = jax.tree_util.tree_flatten_with_path(tree)
    return {jax.tree_util.keystr(p): np.ascontiguousarray(np.asarray(x)) for p, x in leaves}


def save_checkpoint(path: str, trees: dict, meta: dict) -> None:
    """Write ``trees`` (name -> pytree) and ``meta`` to the folder ``path`` atomically."""
    parent = os.path.dirname(os.path.abspath(path))
    os.makedirs(parent, exist_ok=True)
    for name in os.listdir(parent):  # leftovers of a killed writer
        if name.startswith(os.path.basename(path) + ".tmp-"):
            shutil.rmtree(os.path.join(parent, name), ignore_errors=True)
    tmp = f"{path}.tmp-{os.getpid()}"
    os.makedirs(tmp)
    for name, tree in trees.items():
        save_file(_flatten(tree), os.path.join(tmp, f"{name}.safetensors"))
    with open(os.path.join(tmp, "meta.json"), "w") as f:
        json.dump(meta, f, indent=1, sort_keys=True)
        f.flush()
        os.fsync(f.fileno())
    if os.path.exists(path):
        old = f"{path}.old-{os.getpid()}"
        os.replace(path, old)
        os.replace(tmp, path)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(tmp, path)


def read_meta(path: str) -> dict:
    """The ``meta.json`` of the checkpoint folder ``path``; every problem is an ``InputError``."""
    meta_path = os.path.join(path, "meta.json")
    try:
        with open(meta_path, encoding="utf-8") as f:
            meta = json.load(f)
    except FileNotFoundError:
        raise InputError(f"{meta_path}: missing (not a checkpoint folder)") from None
    except json.JSONDecodeError as e:
        raise InputError(f"{meta_path}:{e.lineno}: bad JSON ({e.msg})") from None
    except UnicodeDecodeError as e:
        raise InputError(f"{meta_path}: not UTF-8 text (byte {e.start})") from None
    except ValueError as e:  # an integer of more than 4300 digits
        raise InputError(f"{meta_path}: bad JSON ({str(e).splitlines()[0]})") from None
    except RecursionError:
        raise InputError(f"{meta_path}: bad JSON (nested too deeply)") from None
    if not isinstance(meta, dict):
        raise InputError(f"{meta_path}: expected a JSON object")
    return meta


def load_checkpoint(path: str, templates: dict) -> tuple[dict, dict]:
    """Restore the pytrees named in ``templates`` (same structure, shapes and dtypes) and the meta."""
    meta = read_meta(path)
    out = {}
    for name, template in templates.items():
        file = os.path.join(path, f"{name}.safetensors")
        try:
            stored = load_file(file)
        except FileNotFoundError:
            raise InputError(f"{file}: missing") from None
        except (SafetensorError, OSError, ValueError) as e:
            raise InputError(f"{file}: unreadable ({str(e).splitlines()[0]})") from None
        leaves, treedef = jax.tree_util.tree_flatten_with_path(template)
        restored = []
        for p, like in leaves:
            key = jax.tree_util.keystr(p)
            if key not in stored:
                raise InputError(f"{file}: tensor {key} is missing")
            x = stored.pop(key)
            # shape and dtype only: the template may be a global array whose shards live on
            # other processes too, which this process cannot read
            shape = np.shape(like)
            dtype = np.dtype(like.dtype if hasattr(like, "dtype") else np.asarray(like).dtype)
            if shape == () and x.shape == (1,):  # safetensors stores scalars as [1]
                x = x.reshape(())
            if x.shape != shape or x.dtype != dtype:
                raise InputError(f"{file}: tensor {key} has shape {x.shape} {x.dtype}, expected "
                                 f"{shape} {dtype}")
            restored.append(x)
        if stored:
            raise InputError(f"{file}: unexpected tensor {sorted(stored)[0]}")
        out[name] = jax.tree_util.tree_unflatten(treedef, restored)
    return out, meta


# --------------------------------------------------------------------------- training state (Orbax)

def _manager(root: str, *, create: bool = True) -> ocp.CheckpointManager:
    return ocp.CheckpointManager(
        os.path.abspath(root),
        item_handlers={"state": ocp.StandardCheckpointHandler(), "meta": ocp.JsonCheckpointHandler()},
        options=ocp.CheckpointManagerOptions(max_to_keep=1, create=create,
                                             enable_async_checkpointing=False))


def save_state(root: str, step: int, state, meta: dict) -> None:
    """Save the pytree ``state`` (sharded jax arrays) and ``meta`` (JSON) as step ``step`` under
    ``root``; every process must call it (each writes its own shards). Older steps are removed."""
    with _manager(root) as mngr:
        mngr.save(step, args=ocp.args.Composite(state=ocp.args.StandardSave(state),
                                                meta=ocp.args.JsonSave(meta)))
        mngr.wait_until_finished()


def latest_state(root: str) -> int | None:
    """The newest complete step under ``root``, or None. Step folders of the older safetensors
    format (``step_<n>``) are not read: a line on stderr says so, and the stage restarts."""
    if not os.path.isdir(root):
        return None
    old = sorted(n for n in os.listdir(root) if n.startswith("step_"))
    if old:
        print(f"{root}: {', '.join(old)}: training state in an older format (safetensors), not "
              "read; this stage starts again from its first step", file=sys.stderr)
    with _manager(root, create=False) as mngr:
        return mngr.latest_step()


def _check_stored(where: str, mngr: ocp.CheckpointManager, step: int, abstract) -> None:
    """Compare the stored arrays' names, shapes and dtypes (Orbax's metadata, no array is read)
    with ``abstract``'s; a difference is an ``InputError`` that names the first tensor. Orbax's
    own restore would fail too, but inside its concurrent reads, whose unfinished tasks then
    outlive the error. Dtypes must match exactly: a float32 state does not restore into a
    bfloat16 template (the pipeline's master weights and optimizer state are always float32)."""
    def unrestorable(why: str) -> InputError:
        return InputError(f"{where}: cannot restore the training state ({why})")

    steps = list(mngr.all_steps())
    if step not in steps:
        raise unrestorable(f"no step {step}; steps found: {steps or 'none'}")
    meta = mngr.item_metadata(step)["state"]
    if meta is None or getattr(meta, "tree", None) is None:
        raise unrestorable("its metadata is missing")
    # empty nodes (optax's EmptyState, None) are kept, so that a missing one is found here too
    stored = ocp.tree.to_flat_dict(meta.tree, sep=".", keep_empty_nodes=True)
    want = ocp.tree.to_flat_dict(abstract, sep=".", keep_empty_nodes=True)
    for name in sorted(set(want) | set(stored)):
        if name not in stored:
            raise unrestorable(f"tensor {name} is missing")
        got, like = stored.get(name), want.get(name)
        if name not in want or hasattr(got, "shape") != hasattr(like, "shape"):
            raise unrestorable(f"tensor {name}: the run's state has another structure")
        if not hasattr(got, "shape"):  # an empty node on both sides
            continue
        if tuple(got.shape) != tuple(like.shape) or np.dtype(got.dtype) != np.dtype(like.dtype):
            raise unrestorable(f"tensor {name} has shape {tuple(got.shape)} {np.dtype(got.dtype)}, "
                               f"expected {tuple(like.shape)} {np.dtype(like.dtype)}")


def restore_state(root: str, step: int, template) -> tuple[object, dict]:
    """(state, meta) of step ``step`` under ``root``, restored with the structure, shapes, dtypes
    and shardings of ``template``; a checkpoint that does not match it is an ``InputError``."""
    abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, template)
    try:
        with _manager(root, create=False) as mngr:
            _check_stored(f"{root}/{step}", mngr, step, abstract)
            got = mngr.restore(step, args=ocp.args.Composite(
                state=ocp.args.StandardRestore(abstract), meta=ocp.args.JsonRestore()))
    except InputError:  # _check_stored's, already worded (InputError is a ValueError)
        raise
    except (ValueError, KeyError, TypeError, FileNotFoundError, OSError) as e:
        first = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise InputError(f"{root}/{step}: cannot restore the training state ({first})") from None
    state, meta = got["state"], got["meta"]
    want = jax.tree.structure(template)
    if jax.tree.structure(state) != want:
        raise InputError(f"{root}/{step}: the training state has another structure than the run's")
    return state, meta
