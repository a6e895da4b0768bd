"""Training checkpoints: named pytrees as safetensors files plus a ``meta.json``, written atomically.

A checkpoint is a folder ``.../step_00000012/`` holding one ``NAME.safetensors`` per pytree (params,
optimizer state, a reference policy, ...) and ``meta.json`` (step, stage, seed, the PRNG key data,
anything JSON). Tensors are keyed by their pytree path (``jax.tree_util.keystr``) and restored into
a template pytree of the same structure, so the optimizer's state comes back exactly, bit for bit.

Atomicity: everything is written into a sibling temp folder, flushed, then renamed into place; a
killed writer leaves only a ``*.tmp-*`` folder, which readers ignore and the next save removes. So
the newest ``step_*`` folder is always complete.

Simplification: safetensors rather than Orbax (small CPU runs, one host); a sharded multi-host run
would gather the parameters first.
"""

from __future__ import annotations

import json
import os
import re
import shutil

import jax
import numpy as np
from safetensors import SafetensorError
from safetensors.numpy import load_file, save_file

from theory.errors import InputError

_STEP_DIR = re.compile(r"^step_(\d{8})$")


def _flatten(tree) -> dict[str, np.ndarray]:
    leaves, _ = jax.tree_util.tree_flatten_with_path(tree)
    return {jax.tree_util.keystr(p): np.ascontiguousarray(np.asarray(x)) for p, x in leaves}


def step_dir(root: str, step: int) -> str:
    return os.path.join(root, f"step_{step:08d}")


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
            like = np.asarray(like)
            if like.shape == () and x.shape == (1,):  # safetensors stores scalars as [1]
                x = x.reshape(())
            if x.shape != like.shape or x.dtype != like.dtype:
                raise InputError(f"{file}: tensor {key} has shape {x.shape} {x.dtype}, expected "
                                 f"{like.shape} {like.dtype}")
            restored.append(x)
        if stored:
            raise InputError(f"{file}: unexpected tensor {sorted(stored)[0]}")
        out[name] = jax.tree_util.tree_unflatten(treedef, restored)
    return out, meta


def latest_checkpoint(root: str) -> tuple[str, int] | None:
    """(path, step) of the newest complete ``step_*`` folder under ``root``, or None."""
    if not os.path.isdir(root):
        return None
    steps = [int(m.group(1)) for n in os.listdir(root) if (m := _STEP_DIR.match(n))
             and os.path.isfile(os.path.join(root, n, "meta.json"))]
    if not steps:
        return None
    s = max(steps)
    return step_dir(root, s), s


def prune_checkpoints(root: str, keep: int = 1) -> None:
    """Keep the newest ``keep`` complete step folders under ``root``; delete older ones (complete or not)."""
    if not os.path.isdir(root):
        return
    steps = sorted(int(m.group(1)) for n in os.listdir(root) if (m := _STEP_DIR.match(n)))
    complete = [s for s in steps if os.path.isfile(os.path.join(step_dir(root, s), "meta.json"))]
    if len(complete) <= keep:
        return
    oldest_kept = complete[-keep] if keep else max(steps) + 1
    for s in steps:
        if s < oldest_kept:
            shutil.rmtree(step_dir(root, s), ignore_errors=True)
