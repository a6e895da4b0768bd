"""HF Qwen3 checkpoints in and out: ``config.json`` + safetensors (single file or sharded).

- ``hf_table(config)`` is the one literal mapping: HF tensor name -> path of the NNX variable ->
  whether HF stores it transposed ((out, in) vs our (in, out)). Every tensor's shape is asserted
  against the shape the config implies (from ``nnx.eval_shape``: nothing is allocated for that).
- ``load_pretrained(path)`` reads ``model.safetensors`` or the shards listed in
  ``model.safetensors.index.json``. A missing tensor, an unexpected one, a wrong shape, a file
  shorter than its header says (truncated download) or a bad config raises ``InputError`` naming the
  file and the tensor. Every tensor is read and checked on the host BEFORE anything is placed on a
  device, so nothing half-loaded is ever returned. Tied models may store ``lm_head.weight``; it is
  accepted only if it equals the embedding.
- ``save_pretrained`` writes ``config.json`` + ``model.safetensors`` that ``transformers`` loads,
  into a temporary folder that is renamed into place (atomic). float32 weights round-trip
  bit-exactly; bf16 checkpoints load exactly into float32 master weights.
- No pickle anywhere: the safetensors format is read and written here directly (8-byte header
  length, JSON header, raw little-endian data) with NumPy; bfloat16 comes from ``ml_dtypes``.
"""

from __future__ import annotations

import json
import math
import os
import re
import shutil
import tempfile
from pathlib import Path

import jax
import jax.numpy as jnp
import ml_dtypes
import numpy as np
from flax import nnx

from llm_check.config import Qwen3Config
from llm_check.model import Qwen3
from theory.errors import InputError

# safetensors dtype names <-> NumPy dtypes
_DTYPES = {"F32": np.dtype(np.float32), "F16": np.dtype(np.float16),
           "BF16": np.dtype(ml_dtypes.bfloat16), "F64": np.dtype(np.float64)}
_NAMES = {v: k for k, v in _DTYPES.items()}
_LAYER = re.compile(r"^model\.layers\.(\d+)\.")


def hf_table(config: Qwen3Config) -> list[tuple[str, tuple, bool]]:
    """``[(hf_name, nnx_path, transposed)]`` for every tensor of ``config``'s model."""
    table = [("model.embed_tokens.weight", ("embed_tokens",), False),
             ("model.norm.weight", ("norm", "weight"), False)]
    for i in range(config.num_hidden_layers):
        p = f"model.layers.{i}."
        table += [
            (p + "input_layernorm.weight", ("layers", i, "input_layernorm", "weight"), False),
            (p + "self_attn.q_proj.weight", ("layers", i, "self_attn", "q_proj", "kernel"), True),
            (p + "self_attn.k_proj.weight", ("layers", i, "self_attn", "k_proj", "kernel"), True),
            (p + "self_attn.v_proj.weight", ("layers", i, "self_attn", "v_proj", "kernel"), True),
            (p + "self_attn.o_proj.weight", ("layers", i, "self_attn", "o_proj", "kernel"), True),
            (p + "self_attn.q_norm.weight", ("layers", i, "self_attn", "q_norm", "weight"), False),
            (p + "self_attn.k_norm.weight", ("layers", i, "self_attn", "k_norm", "weight"), False),
            (p + "post_attention_layernorm.weight",
             ("layers", i, "post_attention_layernorm", "weight"), False),
            (p + "mlp.gate_proj.weight", ("layers", i, "mlp", "gate_proj", "kernel"), True),
            (p + "mlp.up_proj.weight", ("layers", i, "mlp", "up_proj", "kernel"), True),
            (p + "mlp.down_proj.weight", ("layers", i, "mlp", "down_proj", "kernel"), True),
        ]
    if not config.tie_word_embeddings:
        table.append(("lm_head.weight", ("lm_head", "kernel"), True))
    return table


def _locate(variables: dict, var_path: tuple) -> tuple[tuple, int | None]:
    """(path of the model variable, layer index or None) for an ``hf_table`` path: a model made
    with ``scan_layers=True`` keeps layer ``i``'s ``("layers", i, *rest)`` at index ``i`` of the
    stacked variable ``("layers", *rest)``."""
    if (var_path not in variables and len(var_path) > 2 and var_path[0] == "layers"
            and isinstance(var_path[1], int)):
        stacked = ("layers", *var_path[2:])
        if stacked in variables:
            return stacked, var_path[1]
    return var_path, None


# -- safetensors, read and written with NumPy ----------------------------------------------------

def read_safetensors_header(path: Path) -> tuple[dict, int]:
    """(``{name: {dtype, shape, data_offsets}}``, byte offset of the data) with every range
    checked against the file size."""
    size = path.stat().st_size
    with open(path, "rb") as f:
        head = f.read(8)
        if len(head) < 8:
            raise InputError(f"{path}: truncated safetensors file (no header)")
        n = int.from_bytes(head, "little")
        if n > size - 8:
            raise InputError(f"{path}: truncated safetensors file (header of {n} bytes, file of "
                             f"{size})")
        try:
            header = json.loads(f.read(n))
        except (ValueError, RecursionError):  # bad JSON or UTF-8, a 4300-digit integer, deep nesting
            raise InputError(f"{path}: corrupt safetensors header") from None
    if not isinstance(header, dict):
        raise InputError(f"{path}: corrupt safetensors header (not a JSON object)")
    header.pop("__metadata__", None)
    data_start = 8 + n
    def is_index(v) -> bool:
        return isinstance(v, int) and not isinstance(v, bool) and v >= 0

    for name, info in header.items():
        try:
            dtype, shape, (begin, end) = info["dtype"], info["shape"], info["data_offsets"]
        except (KeyError, TypeError, ValueError):
            raise InputError(f"{path}: corrupt safetensors header entry for tensor {name!r}") from None
        if (not isinstance(dtype, str) or not isinstance(shape, list)
                or not all(map(is_index, (*shape, begin, end)))):
            raise InputError(f"{path}: corrupt safetensors header entry for tensor {name!r} "
                             "(dtype must be a string, shape and data_offsets integers >= 0)")
        count = math.prod(shape)
        dt = _DTYPES.get(dtype)
        if dt is None:
            raise InputError(f"{path}: tensor {name!r} has unsupported dtype {dtype!r}")
        if not 0 <= begin <= end or end - begin != dt.itemsize * count:
            raise InputError(f"{path}: tensor {name!r}: byte range does not match its shape")
        if data_start + end > size:
            raise InputError(f"{path}: truncated safetensors file: tensor {name!r} ends at byte "
                             f"{data_start + end}, the file has {size}")
    return header, data_start


def read_tensor(path: Path, header: dict, data_start: int, name: str) -> np.ndarray:
    info = header[name]
    begin, end = info["data_offsets"]
    raw = np.memmap(path, dtype=np.uint8, mode="r", offset=data_start + begin, shape=(end - begin,)) \
        if end > begin else np.zeros((0,), np.uint8)
    return np.asarray(raw).view(_DTYPES[info["dtype"]]).reshape(info["shape"])


def write_safetensors(path: Path, tensors: dict[str, np.ndarray]) -> None:
    header, offset, blobs = {}, 0, []
    for name in sorted(tensors):
        a = np.ascontiguousarray(tensors[name])
        if a.dtype not in _NAMES:
            raise InputError(f"save: tensor {name!r} has dtype {a.dtype}, not a float type")
        blob = a.astype(a.dtype.newbyteorder("<"), copy=False).tobytes()
        header[name] = {"dtype": _NAMES[a.dtype], "shape": list(a.shape),
                        "data_offsets": [offset, offset + len(blob)]}
        offset += len(blob)
        blobs.append(blob)
    header["__metadata__"] = {"format": "pt"}
    h = json.dumps(header, separators=(",", ":")).encode()
    h += b" " * (-len(h) % 8)  # data aligned to 8 bytes, as the reference writer does
    with open(path, "wb") as f:
        f.write(len(h).to_bytes(8, "little"))
        f.write(h)
        for blob in blobs:
            f.write(blob)


# -- load ----------------------------------------------------------------------------------------

def load_config(path) -> Qwen3Config:
    cfg_path = Path(path) / "config.json"
    if not cfg_path.is_file():
        raise InputError(f"{path}: no config.json")
    d = _read_json(cfg_path)
    for field, v in (d.items() if isinstance(d, dict) else ()):
        if isinstance(v, (int, float)) and not isinstance(v, bool):
            try:
                float(v)
            except OverflowError:
                raise InputError(f"{cfg_path}: field {field!r} is too large ({len(str(v))} "
                                 "digits)") from None
    if isinstance(d, dict):  # the float fields, named (Qwen3Config would only say "bad value")
        rope = d.get("rope_parameters")
        for field, v in (("rope_theta", d.get("rope_theta")), ("rms_norm_eps", d.get("rms_norm_eps")),
                         ("rope_parameters.rope_theta",
                          rope.get("rope_theta") if isinstance(rope, dict) else None)):
            if (v is None and field != "rms_norm_eps") or field not in d and "." not in field:
                continue
            if isinstance(v, bool) or not isinstance(v, (int, float)):
                raise InputError(f"{cfg_path}: field {field!r} must be a number, got {v!r}")
    try:
        config = Qwen3Config.from_hf(d, source=str(cfg_path))
    except InputError as e:  # Qwen3Config's own checks say "config: ..."; name the file instead
        msg = str(e)
        raise InputError(f"{cfg_path}: {msg.removeprefix('config: ')}" if msg.startswith("config: ")
                         else msg) from None
    except (TypeError, ValueError) as e:  # e.g. rope_theta that is not a number
        raise InputError(f"{cfg_path}: bad field value ({e})") from None
    for field in ("rope_theta", "rms_norm_eps"):  # Qwen3Config checks > 0, which lets inf through
        if not math.isfinite(getattr(config, field)):
            raise InputError(f"{cfg_path}: field {field!r} must be a finite number, got "
                             f"{getattr(config, field)!r}")
    return config


def _read_json(path: Path):
    """A JSON file's value; bad UTF-8, bad JSON, giant integers and deep nesting are ``InputError``s."""
    data = path.read_bytes()
    try:
        return json.loads(data.decode("utf-8"))
    except UnicodeDecodeError as e:
        line = data[: e.start].count(b"\n") + 1
        raise InputError(f"{path}:{line}: not UTF-8 text (byte {e.start})") from None
    except json.JSONDecodeError as e:
        raise InputError(f"{path}: invalid JSON at line {e.lineno}, column {e.colno}: {e.msg}") from None
    except ValueError as e:  # an integer of more than 4300 digits
        raise InputError(f"{path}: invalid JSON ({str(e).splitlines()[0]})") from None
    except RecursionError:
        raise InputError(f"{path}: invalid JSON (nested too deeply)") from None


def _tensor_files(folder: Path) -> dict[str, Path]:
    """``{tensor name: file}`` from the index, or from the single ``model.safetensors``."""
    index = folder / "model.safetensors.index.json"
    if index.is_file():
        raw = _read_json(index)
        weight_map = raw.get("weight_map") if isinstance(raw, dict) else None
        if not isinstance(weight_map, dict):
            raise InputError(f"{index}: not a safetensors index (needs a 'weight_map' object)")
        for name, file in weight_map.items():
            if not isinstance(file, str) or not file:
                raise InputError(f"{index}: tensor {name!r} maps to {file!r}, not a file name")
            if not (folder / file).is_file():
                raise InputError(f"{index}: tensor {name!r} is in {file!r}, which does not exist")
        return {name: folder / file for name, file in weight_map.items()}
    single = folder / "model.safetensors"
    if not single.is_file():
        raise InputError(f"{folder}: no model.safetensors or model.safetensors.index.json")
    return {name: single for name in read_safetensors_header(single)[0]}


def load_pretrained(path, dtype=jnp.float32, mesh=None, *, param_dtype=jnp.float32,
                    remat: bool = False, attention: str = "einsum",
                    scan_layers: bool = False) -> tuple[Qwen3, Qwen3Config]:
    """Read an HF Qwen3 snapshot folder into a ``Qwen3`` computing in ``dtype`` with
    ``param_dtype`` master weights; with a ``mesh``, each weight goes straight from the host
    array to its ``NamedSharding`` (``sharding.param_sharding``). ``attention`` and
    ``scan_layers`` are passed to ``Qwen3`` (with ``scan_layers`` the per-layer HF tensors are
    stacked into one [L, ...] variable each)."""
    from llm_check import sharding

    folder = Path(path)
    config = load_config(folder)
    files = _tensor_files(folder)
    headers = {f: read_safetensors_header(f) for f in sorted(set(files.values()))}
    for name, f in files.items():
        if name not in headers[f][0]:
            raise InputError(f"{f}: tensor {name!r} is listed in the index but not in the file")
    # Checked against the files before the model is built: a config.json with a huge layer count
    # or width would otherwise build (or trace) a model of that size first.
    n_layers = 1 + max((int(m.group(1)) for name in files if (m := _LAYER.match(name))), default=-1)
    if config.num_hidden_layers > n_layers:  # fewer: the extra tensors are reported below
        raise InputError(f"{folder / 'config.json'}: num_hidden_layers={config.num_hidden_layers}, "
                         f"but the checkpoint holds {n_layers} layers")
    emb = "model.embed_tokens.weight"
    if emb in files:
        got = tuple(headers[files[emb]][0][emb]["shape"])
        if got != (config.vocab_size, config.hidden_size):
            raise InputError(f"{files[emb]}: tensor {emb!r} has shape {got}, but config.json says "
                             f"vocab_size={config.vocab_size}, hidden_size={config.hidden_size}")

    abstract = nnx.eval_shape(lambda: Qwen3(config, rngs=nnx.Rngs(0), dtype=dtype,
                                            param_dtype=param_dtype, remat=remat,
                                            attention=attention, scan_layers=scan_layers))
    graphdef, state = nnx.split(abstract)
    variables = dict(nnx.to_flat_state(state))
    table = hf_table(config)
    expected = {name for name, _, _ in table}
    extra = sorted(set(files) - expected)
    if config.tie_word_embeddings and "lm_head.weight" in extra:
        extra.remove("lm_head.weight")  # checked against the embedding below
    if extra:
        raise InputError(f"{files[extra[0]]}: unexpected tensor {extra[0]!r} for this config")

    host, layered = {}, {}
    for name, var_path, transposed in table:
        if name not in files:
            raise InputError(f"{folder}: tensor {name!r} is missing from the checkpoint")
        f = files[name]
        var_path, layer = _locate(variables, var_path)
        want = variables[var_path].shape[(0 if layer is None else 1):]
        hf_shape = tuple(reversed(want)) if transposed else tuple(want)
        got = tuple(headers[f][0][name]["shape"])
        if got != hf_shape:
            raise InputError(f"{f}: tensor {name!r} has shape {got}, expected {hf_shape}")
        a = read_tensor(f, *headers[f], name)
        a = np.ascontiguousarray(a.T if transposed else a).astype(param_dtype)
        if not np.all(np.isfinite(a)):
            raise InputError(f"{f}: tensor {name!r} contains NaN or infinity")
        if layer is None:
            host[var_path] = a
        else:
            layered.setdefault(var_path, {})[layer] = a
    for var_path, by_layer in layered.items():  # scan_layers: stack layer 0 .. L-1
        host[var_path] = np.stack([by_layer[i] for i in range(len(by_layer))])
    if config.tie_word_embeddings and "lm_head.weight" in files:
        f = files["lm_head.weight"]
        head = read_tensor(f, *headers[f], "lm_head.weight")
        emb = host[("embed_tokens",)]
        if head.shape != emb.shape or not np.array_equal(head.astype(param_dtype), emb):
            raise InputError(f"{f}: tensor 'lm_head.weight' differs from the embedding, but the "
                             "config says tie_word_embeddings=true")

    for var_path, a in host.items():  # every tensor is valid: now place them
        var = variables[var_path]
        if mesh is None:
            var.set_value(jnp.asarray(a))
        else:
            var.set_value(sharding.place(a, sharding.param_sharding(a.shape, mesh)))
    return nnx.merge(graphdef, state), config


# -- save ----------------------------------------------------------------------------------------

def save_pretrained(model: Qwen3, config: Qwen3Config, path) -> None:
    """Write ``config.json`` + ``model.safetensors`` (HF names and layouts) atomically."""
    variables = dict(nnx.to_flat_state(nnx.state(model, nnx.Param)))
    tensors, fetched = {}, {}
    for name, var_path, transposed in hf_table(config):
        var_path, layer = _locate(variables, var_path)
        if var_path not in variables:
            raise InputError(f"save: the model has no variable {var_path} for tensor {name!r}")
        if var_path not in fetched:
            fetched[var_path] = np.asarray(jax.device_get(variables[var_path].get_value()))
        a = fetched[var_path] if layer is None else fetched[var_path][layer]
        tensors[name] = a.T if transposed else a
    dest = Path(path)
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}.", dir=dest.parent))
    try:
        (tmp / "config.json").write_text(json.dumps(config.to_hf(), indent=2) + "\n")
        write_safetensors(tmp / "model.safetensors", tensors)
        if dest.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{dest.name}.old.", dir=dest.parent))
            os.replace(dest, old / dest.name)
            os.replace(tmp, dest)
            shutil.rmtree(old)
        else:
            os.replace(tmp, dest)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)
