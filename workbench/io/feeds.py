"""Model inputs: read from an .npz file, checked against the model, or generated.

Generated feeds look like real inputs: token ids within the embedding table found in
the graph, attention masks of ones with some padding, structured images (shapes, edges,
a line of text) where the graph shows an image input into a Conv, floats from normal(0, 1)
otherwise. Fixed seed: the same model always gets the same feed. `describe_generated` says
what was made, for the report.
"""

from __future__ import annotations

import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
from onnx import helper

from workbench.errors import WorkbenchError
from workbench.ir.graph import GraphIndex

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
            if _is_named(dim):
                seen = dims.setdefault(dim.dim_param, (size, name))
                if seen[0] != size:
                    raise WorkbenchError(
                        f"inputs '{seen[1]}' and '{name}' disagree on '{dim.dim_param}' ({seen[0]} against {size})."
                    )
    return value.astype(want, copy=False)


# Exporters write these for a dimension with no name of its own (paddle2onnx: '?'); each is independent.
_ANONYMOUS_DIMS = {"", "?", "-1"}


def _is_named(dim) -> bool:
    """A symbolic dimension with a real name ('batch'): every use of that name must have one size."""
    return dim.HasField("dim_param") and dim.dim_param.strip() not in _ANONYMOUS_DIMS


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
        image = image_layout(index, info, batch)
        if image is not None:
            return generated_images(image, rng).astype(dtype)
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


# ---------------------------------------------------------------- images

IMAGE_HEIGHT, IMAGE_WIDTH = 64, 256  # a line of text fits; both multiples of 32, a CNN's usual total stride
_STRIDE = 32
# Ops between an image input and its first Conv: normalisation, layout-preserving copies, padding.
_IMAGE_PREAMBLE_OPS = {"Sub", "Div", "Mul", "Add", "Cast", "Identity", "BatchNormalization", "Pad", "Clip"}
# ImageNet's per-channel statistics (RGB), for a model that expects inputs normalised before it.
_IMAGENET_MEAN, _IMAGENET_STD = np.array([0.485, 0.456, 0.406]), np.array([0.229, 0.224, 0.225])


@dataclass(frozen=True)
class ImageLayout:
    """How to generate one image input [batch, channels, height, width] and what its values mean."""

    shape: tuple[int, int, int, int]
    scale: str  # "0..255", "0..1" (the model normalises itself) or "normalised" (mean/std applied here)
    picture: bool  # channels 1 or 3: a picture with shapes and text; else structured noise

    def describe(self, advice: bool = True) -> str:
        """"generated: structured 3×64×256 image with text (...); pass --inputs for a real one"."""
        _, channels, height, width = self.shape
        tail = "; pass --inputs for a real one" if advice else ""
        if not self.picture:
            return f"generated: smooth noise {channels}×{height}×{width}{tail}"
        content = "image with text" if _pillow() is not None else "image of drawn rectangles (Pillow not installed)"
        values = {"0..255": "values 0..255, the model normalises itself", "0..1": "values 0..1, the model normalises itself",
                  "normalised": "normalised with ImageNet mean/std, the model has no normalisation of its own"}[self.scale]
        return f"generated: structured {channels}×{height}×{width} {content} ({values}){tail}"


def image_layout(index: GraphIndex, info: onnx.ValueInfoProto, batch: int = DEFAULT_BATCH) -> ImageLayout | None:
    """The layout of a 4-D float input that reaches a Conv through normalisation ops, else None."""
    tensor_type = info.type.tensor_type
    if not tensor_type.HasField("shape") or len(tensor_type.shape.dim) != 4 or _kind(
            helper.tensor_dtype_to_np_dtype(tensor_type.elem_type)) != "f":
        return None
    conv, preamble = _first_conv(index, info.name)
    if conv is None:
        return None
    dims = [d.dim_value if d.HasField("dim_value") and d.dim_value > 0 else None for d in tensor_type.shape.dim]
    weight = index.initializers.get(conv.input[1]) if len(conv.input) > 1 else None
    channels = dims[1] or (int(weight.dims[1]) if weight is not None and len(weight.dims) == 4 else 3)
    height, width = _spatial(dims[2], IMAGE_HEIGHT), _spatial(dims[3], IMAGE_WIDTH)
    return ImageLayout((dims[0] or batch, channels, height, width), _value_scale(index, preamble),
                       channels in (1, 3))


def describe_generated(index: GraphIndex) -> str:
    """What `generate_feed` makes for this model, one clause per input, for a report to show."""
    parts = []
    for info in index.graph.input:
        if info.name not in index.input_names or not info.type.HasField("tensor_type"):
            continue
        image = image_layout(index, info)
        if image is not None:
            parts.append(f"'{info.name}': {image.describe(advice=False)}")
            continue
        kind = _kind(helper.tensor_dtype_to_np_dtype(info.type.tensor_type.elem_type)) if info.type.tensor_type.elem_type else "?"
        what = {"i": "token ids (random, within the vocabulary)", "f": "floats from normal(0, 1)", "b": "ones"}.get(kind, "values")
        if "mask" in info.name.lower():
            what = "a mask of ones with some padding"
        parts.append(f"'{info.name}': generated {what}")
    return "; ".join(parts) + ("; pass --inputs for real ones" if parts else "")


def generated_images(layout: ImageLayout, rng: np.random.Generator) -> np.ndarray:
    """float32 [batch, channels, height, width] in the layout's value scale, a different picture per row."""
    batch, channels, height, width = layout.shape
    if not layout.picture:
        coarse = rng.standard_normal((batch, channels, max(1, height // 8), max(1, width // 8)))
        return np.repeat(np.repeat(coarse, 8, axis=2), 8, axis=3)[:, :, :height, :width].astype(np.float32)
    rows = [_picture(height, width, rng) for _ in range(batch)]  # [height, width, 3] in 0..1
    images = np.stack(rows).transpose(0, 3, 1, 2)
    if channels == 1:
        images = np.einsum("c,bchw->bhw", np.array([0.299, 0.587, 0.114]), images)[:, None]  # luma
    if layout.scale == "0..255":
        images = images * 255.0
    elif layout.scale == "normalised":
        mean = _IMAGENET_MEAN if channels == 3 else _IMAGENET_MEAN.mean(keepdims=True)
        std = _IMAGENET_STD if channels == 3 else _IMAGENET_STD.mean(keepdims=True)
        images = (images - mean[:, None, None]) / std[:, None, None]
    return images.astype(np.float32)


_WORDS = ("FP16", "invoice", "total", "2026", "workbench", "Model", "overflow", "ONNX", "page", "42.50")


def _picture(height: int, width: int, rng: np.random.Generator) -> np.ndarray:
    """[height, width, 3] float64 in 0..1: a gradient, shapes with edges, and a line of text."""
    pil = _pillow()
    if pil is None:
        return _drawn_rectangles(height, width, rng)
    image_module, draw_module, font_module = pil
    top, bottom = rng.uniform(0.6, 1.0, 3), rng.uniform(0.3, 0.8, 3)
    ramp = np.linspace(0, 1, height)[:, None, None]
    background = ((top * (1 - ramp) + bottom * ramp) * 255).astype(np.uint8)
    picture = image_module.fromarray(np.broadcast_to(background, (height, width, 3)).copy())
    draw = draw_module.Draw(picture)
    for _ in range(4):
        x0, y0 = int(rng.integers(0, width - 8)), int(rng.integers(0, height - 8))
        box = (x0, y0, x0 + int(rng.integers(8, max(9, width // 3))), y0 + int(rng.integers(8, max(9, height // 2))))
        colour = tuple(int(c) for c in rng.integers(0, 256, 3))
        (draw.ellipse if rng.random() < 0.5 else draw.rectangle)(box, fill=colour, outline=(0, 0, 0))
    words = " ".join(str(w) for w in rng.choice(_WORDS, 3, replace=False))
    size = max(10, height // 4)
    try:
        font = font_module.load_default(size=size)
    except TypeError:  # Pillow before 10.1: a fixed bitmap font
        font = font_module.load_default()
    draw.text((4, height // 2 - size // 2), words, fill=(0, 0, 0), font=font)
    return np.asarray(picture, np.float64) / 255.0


def _drawn_rectangles(height: int, width: int, rng: np.random.Generator) -> np.ndarray:
    """Without Pillow: a gradient, filled rectangles, and dark bars where a line of text would be."""
    picture = np.broadcast_to(np.linspace(0.9, 0.5, height)[:, None, None], (height, width, 3)).copy()
    for _ in range(4):
        y0, x0 = int(rng.integers(0, height - 8)), int(rng.integers(0, width - 8))
        picture[y0:y0 + int(rng.integers(8, height // 2 + 9)), x0:x0 + int(rng.integers(8, width // 3 + 9))] = rng.uniform(0, 1, 3)
    line = slice(height // 2 - height // 8, height // 2 + height // 8)
    for x in range(4, width - 8, 7):
        if rng.random() < 0.8:
            picture[line, x:x + 4] = 0.0
    return picture


def _pillow():
    """(Image, ImageDraw, ImageFont) if Pillow is installed, else None: it is optional."""
    try:
        from PIL import Image, ImageDraw, ImageFont
    except ImportError:
        return None
    return Image, ImageDraw, ImageFont


def _first_conv(index: GraphIndex, name: str, depth: int = 4):
    """(the Conv the input reaches through preamble ops, those ops in order), or (None, [])."""
    preamble = []
    for _ in range(depth + 1):
        readers = index.consumers.get(name, [])
        conv = next((n for n in readers if n.op_type == "Conv" and n.input[0] == name), None)
        if conv is not None:
            return conv, preamble
        step = next((n for n in readers if n.op_type in _IMAGE_PREAMBLE_OPS and n.output), None)
        if step is None:
            return None, []
        preamble.append(step)
        name = step.output[0]
    return None, []


def _value_scale(index: GraphIndex, preamble: list) -> str:
    """0..255 or 0..1 when the model normalises its own input (the constants tell which), else normalised."""
    constants = []
    for node in preamble:
        if node.op_type in ("Sub", "Add", "Div", "Mul"):
            constant = next((i for i in node.input[1:] if i in index.initializers), None)
            if constant is not None:
                constants.append((node.op_type, np.abs(index.initializer_array(constant).astype(np.float64))))
    if not constants:
        return "normalised"
    for op, values in constants:
        # a mean of 123.7, a divisor of 255 or 58.4, a factor of 1/255: pixel values 0..255
        if (op in ("Sub", "Add", "Div") and values.size and values.max() > 1.5) or (op == "Mul" and values.size and values.max() < 0.02):
            return "0..255"
    return "0..1"


def _spatial(fixed: int | None, default: int) -> int:
    """A fixed size as given; else the default, at least 64 and a multiple of the total stride 32."""
    if fixed is not None:
        return fixed
    return max(64, -(-default // _STRIDE) * _STRIDE)
