"""Model inputs: read from an .npz file, checked against the model, or generated.

Generated feeds look like real transformer inputs: token ids within the embedding
table found in the graph, attention masks of ones with some padding, floats from
normal(0, 1). Fixed seed: the same model always gets the same feed.
"""

from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np
import onnx
from onnx import helper

from workbench.errors import WorkbenchError
from workbench.graph import GraphIndex

Feed = dict[str, np.ndarray]

DEFAULT_BATCH = 2
DEFAULT_SEQUENCE = 16
# Ops through which an integer input still holds token ids on its way to an embedding Gather.
_ID_PRESERVING_OPS = {"Cast", "Unsqueeze", "Squeeze", "Reshape", "Flatten", "Identity", "Expand"}


def load_feed(path: str | Path) -> Feed:
    path = Path(path)
    if not path.is_file():
        raise WorkbenchError(f"{path}: no such inputs file; give an .npz saved with numpy.savez(path, name=array, ...).")
    try:
        with np.load(path, allow_pickle=False) as data:
            return {name: np.asarray(data[name]) for name in data.files}
    except (ValueError, OSError, zipfile.BadZipFile, EOFError) as exc:
        raise WorkbenchError(f"{path} is not a readable .npz of arrays ({exc}); save it with numpy.savez.") from None


def check_feed(index: GraphIndex, feed: Feed, model_name: str) -> Feed:
    """The feed cast to the model's input types, or a WorkbenchError naming what does not fit."""
    infos = {i.name: i for i in index.graph.input if i.name in index.input_names}
    missing = [name for name in infos if name not in feed]
    extra = [name for name in feed if name not in infos]
    if missing or extra:
        parts = []
        if missing:
            parts.append(f"missing {', '.join(repr(n) for n in missing)}")
        if extra:
            parts.append(f"unknown {', '.join(repr(n) for n in extra)}")
        raise WorkbenchError(
            f"the inputs do not match {model_name}: {'; '.join(parts)}; "
            f"the model takes {', '.join(repr(n) for n in infos)}."
        )
    checked, dims = {}, {}
    for name, info in infos.items():
        checked[name] = _checked_array(name, feed[name], info, dims)
    return checked


def _checked_array(name: str, value: np.ndarray, info: onnx.ValueInfoProto, dims: dict) -> np.ndarray:
    if info.type.WhichOneof("value") is None:  # no type in the file: take the feed as it is
        return _finite_checked(name, np.asarray(value))
    if not info.type.HasField("tensor_type"):
        raise WorkbenchError(f"input '{name}' is a sequence, map or optional, not a tensor; the workbench feeds tensors only.")
    tensor_type = info.type.tensor_type
    want = helper.tensor_dtype_to_np_dtype(tensor_type.elem_type)
    value = np.asarray(value)
    if _kind(value.dtype) != _kind(want):
        raise WorkbenchError(
            f"input '{name}' must be {want.name}, the feed has {value.dtype.name}; save it as {want.name}."
        )
    _finite_checked(name, value)
    if tensor_type.HasField("shape"):
        shape = tensor_type.shape.dim
        if len(shape) != value.ndim:
            raise WorkbenchError(f"input '{name}' must have {len(shape)} dimensions, the feed has shape {value.shape}.")
        for axis, (dim, size) in enumerate(zip(shape, value.shape)):
            if dim.HasField("dim_value") and dim.dim_value > 0 and dim.dim_value != size:  # -1 or 0: dynamic
                raise WorkbenchError(
                    f"input '{name}' must have size {dim.dim_value} on axis {axis}, the feed has shape {value.shape}."
                )
            if dim.HasField("dim_param"):
                seen = dims.setdefault(dim.dim_param, (size, name))
                if seen[0] != size:
                    raise WorkbenchError(
                        f"inputs '{seen[1]}' and '{name}' disagree on '{dim.dim_param}' ({seen[0]} against {size})."
                    )
    return value.astype(want, copy=False)


def _finite_checked(name: str, value: np.ndarray) -> np.ndarray:
    if _kind(value.dtype) == "f" and not np.isfinite(value).all():
        raise WorkbenchError(f"input '{name}' holds NaN or inf; give finite inputs, the FP32 reference must be finite.")
    return value


def _kind(dtype: np.dtype) -> str:
    dtype = np.dtype(dtype)
    return "b" if dtype == np.bool_ else ("f" if dtype.kind == "f" else dtype.kind.replace("u", "i"))


def generate_feed(index: GraphIndex, batch: int = DEFAULT_BATCH, sequence: int = DEFAULT_SEQUENCE, seed: int = 0) -> Feed:
    """A plausible feed for every model input, or a WorkbenchError for one that cannot be made up."""
    rng = np.random.default_rng(seed)
    feed = {}
    for info in index.graph.input:
        if info.name in index.input_names:
            feed[info.name] = _generate_one(index, info, batch, sequence, rng)
    return feed


def _generate_one(index, info, batch, sequence, rng) -> np.ndarray:
    name = info.name
    if not info.type.HasField("tensor_type") or not info.type.tensor_type.HasField("shape"):
        raise WorkbenchError(f"cannot generate input '{name}': its shape is unknown; pass --inputs feed.npz.")
    dtype = helper.tensor_dtype_to_np_dtype(info.type.tensor_type.elem_type)
    shape = _concrete_shape(info.type.tensor_type.shape.dim, batch, sequence)
    lowered = name.lower()
    if "mask" in lowered and _kind(dtype) in "fib":
        return _padding_mask(shape).astype(dtype)
    if _kind(dtype) == "f":
        return rng.standard_normal(shape).astype(dtype)
    if _kind(dtype) == "i":
        if "position" in lowered and len(shape) >= 1:
            return np.broadcast_to(np.arange(shape[-1]), shape).astype(dtype)
        if "token_type" in lowered or "segment" in lowered:
            return np.zeros(shape, dtype)
        vocab = embedding_rows(index, name)
        if vocab is None:
            raise WorkbenchError(
                f"cannot generate integer input '{name}': it feeds no embedding table whose size would bound it; "
                "pass --inputs feed.npz."
            )
        return rng.integers(0, vocab, size=shape).astype(dtype)
    if _kind(dtype) == "b":
        return np.ones(shape, dtype)
    raise WorkbenchError(f"cannot generate input '{name}' of type {dtype}; pass --inputs feed.npz.")


def _concrete_shape(dims, batch: int, sequence: int) -> tuple[int, ...]:
    shape = []
    for axis, dim in enumerate(dims):
        if dim.HasField("dim_value") and dim.dim_value > 0:
            shape.append(dim.dim_value)
        elif "batch" in dim.dim_param.lower() or (axis == 0 and not _looks_like_length(dim.dim_param)):
            shape.append(batch)
        else:
            shape.append(sequence)
    return tuple(shape)


def _looks_like_length(param: str) -> bool:
    return any(word in param.lower() for word in ("seq", "len", "token", "time"))


def _padding_mask(shape: tuple[int, ...]) -> np.ndarray:
    """Ones, with the tail of each later row padded (0) as in a batch of uneven sentences; no row is all padding."""
    mask = np.ones(shape)
    length = shape[-1] if shape else 0
    if len(shape) >= 2 and length >= 4:
        for row in range(1, shape[0]):
            padded = min(row * max(1, length // 4), length // 2)
            mask[row, ..., length - padded:] = 0
    return mask


def embedding_rows(index: GraphIndex, input_name: str) -> int | None:
    """Rows of the embedding table an integer input indexes (via Gather), if the graph shows one."""
    frontier, seen = [input_name], set()
    while frontier:
        name = frontier.pop()
        seen.add(name)
        for node in index.consumers.get(name, []):
            if node.op_type == "Gather" and len(node.input) > 1 and node.input[1] == name:
                table = node.input[0]
                if table in index.initializers and len(index.initializers[table].dims) >= 1:
                    return int(index.initializers[table].dims[0])
            if node.op_type in _ID_PRESERVING_OPS and node.input[0] == name:
                frontier.extend(out for out in node.output if out not in seen)
    return None
