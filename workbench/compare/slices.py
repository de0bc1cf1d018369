"""Cutting a tensor into parts judged each against its own scale: batch rows, and the parts a Concat joined.

A fault that destroys one row of a batch (a fully padded sentence) or one part of a Concat is averaged
away by the rest in a whole-tensor error; the worst slice keeps it visible.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from workbench.ir.graph import GraphIndex
from workbench.render.json import finite_or_none


@dataclass(frozen=True)
class SliceAxis:
    """One way to cut a tensor into parts that are each judged against their own scale.

    bounds: the parts' edges along `axis` (a Concat of widths 4 and 4: (0, 4, 8)); None: every index
    along the axis is a part of its own (the rows of a batch). `concat`/`parts`: the Concat that built
    the axis and the tensor each part comes from, for sentences naming the slice.
    """

    axis: int
    bounds: tuple[int, ...] | None = None
    concat: str | None = None
    parts: tuple[str, ...] = ()


@dataclass(frozen=True)
class WorstSlice:
    """The part of a tensor with the largest error relative to its own scale: [start, stop) along axis."""

    axis: int
    start: int
    stop: int
    rel_l2: float
    concat: str | None = None  # the Concat that built this axis, when the graph shows one
    part: str | None = None  # that Concat's input holding the slice
    part_index: int | None = None  # its position among the Concat's inputs, from 0

    def to_dict(self) -> dict:
        result = {"axis": self.axis, "range": [self.start, self.stop], "rel_l2": finite_or_none(self.rel_l2)}
        if self.stop - self.start == 1:
            result["index"] = self.start
        if self.concat is not None:
            result.update(concat=self.concat, part=self.part)
        return result



def slicings(shape: tuple[int, ...], slices) -> list[SliceAxis]:
    """The batch rows (axis 0 with more than one row, of more than one element each), then the given axes.

    A row of one element ([batch, 1]: a score, a norm) is an element: the advisory allclose judges those.
    """
    rows = len(shape) >= 2 and shape[0] > 1 and int(np.prod(shape[1:])) > 1
    found = [SliceAxis(0)] if rows else []
    for spec in slices or ():
        if 0 <= spec.axis < len(shape) and (spec.bounds is None or spec.bounds[-1] == shape[spec.axis]):
            if spec not in found:
                found.append(spec)
    return found


def worst_slice(reference: np.ndarray, delta: np.ndarray, slicings: list[SliceAxis], tolerance) -> WorstSlice | None:
    """The slice with the largest rel-L2, each slice's denominator at least floor·√(its size)."""
    worst = None
    for spec in slicings:
        ref_sq, delta_sq = _squares_along(reference, spec.axis), _squares_along(delta, spec.axis)
        bounds = spec.bounds if spec.bounds is not None else tuple(range(reference.shape[spec.axis] + 1))
        starts = np.asarray(bounds[:-1])
        per_index = reference.size // max(reference.shape[spec.axis], 1)
        sizes = np.diff(bounds) * per_index
        ref_sums, delta_sums = np.add.reduceat(ref_sq, starts), np.add.reduceat(delta_sq, starts)
        denominators = np.maximum(np.sqrt(ref_sums), tolerance.floor * np.sqrt(np.maximum(sizes, 1)))
        errors = np.sqrt(delta_sums) / denominators
        at = int(np.argmax(errors))
        # ties go to a Concat's part: it names where the slice came from
        if worst is None or errors[at] > worst.rel_l2 or (spec.concat is not None and errors[at] == worst.rel_l2):
            part = spec.parts[at] if at < len(spec.parts) else None
            worst = WorstSlice(spec.axis, int(bounds[at]), int(bounds[at + 1]), float(errors[at]), spec.concat, part,
                               at if part is not None else None)
    return worst


def _squares_along(values: np.ndarray, axis: int) -> np.ndarray:
    """Sum of squares over every axis but `axis`, in float64: one number per index along `axis`."""
    moved = np.moveaxis(np.square(values), axis, 0).reshape(values.shape[axis], -1)
    return moved.sum(axis=1).astype(np.float64)  # numpy sums each row pairwise: accurate in float32 too


_LAYOUT_PRESERVING_OPS = {
    "Abs", "Add", "Cast", "Ceil", "Clip", "Div", "Elu", "Erf", "Exp", "Floor", "Gelu", "HardSigmoid", "HardSwish",
    "Identity", "LeakyRelu", "Log", "Max", "Min", "Mish", "Mul", "Neg", "Pow", "PRelu", "Reciprocal", "Relu",
    "Round", "Selu", "Sigmoid", "Sign", "Softplus", "Softsign", "Sqrt", "Sub", "Sum", "Tanh", "Where",
}
_SLICE_SEARCH_LIMIT = 64  # producers visited at most, walking up from a tensor to a Concat


def slice_axes(index: GraphIndex, name: str, values: dict[str, np.ndarray]) -> tuple[SliceAxis, ...]:
    """The Concat axes of tensor `name`: built by a Concat, or by one and then passed through elementwise ops.

    `values`: tensors by name (a captured run) for the ranks and the parts' widths, which the graph
    alone may not tell. Returns () when no Concat built the tensor.
    """
    if name not in values or np.ndim(values[name]) == 0:
        return ()
    rank, found, seen = np.ndim(values[name]), [], set()
    frontier = [name]
    while frontier and len(seen) < _SLICE_SEARCH_LIMIT:
        tensor = frontier.pop()
        seen.add(tensor)
        node = index.producer.get(tensor)
        if node is None or tensor not in values:
            continue
        if node.op_type == "Concat":
            spec = _concat_axis(node, values, rank, np.shape(values[name]))
            if spec is not None and spec not in found:
                found.append(spec)
        elif node.op_type in _LAYOUT_PRESERVING_OPS:
            frontier += [i for i in node.input if i and i not in seen and not index.is_constant(i)]
    return tuple(found)


def _concat_axis(node, values: dict[str, np.ndarray], rank: int, shape: tuple[int, ...]) -> SliceAxis | None:
    """The Concat's axis in the coordinates of the tensor read downstream (rank `rank`, numpy broadcasting)."""
    parts = [i for i in node.input if i]
    if len(parts) < 2 or any(p not in values for p in parts):
        return None
    own_rank = np.ndim(values[node.output[0]])
    axis = next((a.i for a in node.attribute if a.name == "axis"), 0)
    axis = axis + own_rank if axis < 0 else axis
    shifted = axis + rank - own_rank
    widths = [np.shape(values[p])[axis] for p in parts]
    if not 0 <= shifted < rank or shape[shifted] != sum(widths):
        return None  # broadcast away or reduced on the way
    return SliceAxis(shifted, tuple(int(b) for b in np.cumsum([0, *widths])), node.name, tuple(parts))
