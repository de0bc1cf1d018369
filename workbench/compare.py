"""Comparing a candidate's tensors with the reference's: tolerances made for FP16, and alignment by name."""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from workbench.graph import FLOAT_TYPES, GraphIndex

FP16_MAX = 65504.0
FP16_TINY = 2.0**-24  # smallest FP16 subnormal, about 5.96e-8
FP16_NORMAL_MIN = 2.0**-14  # smallest normal FP16, about 6.10e-5


@dataclass(frozen=True)
class Tolerance:
    """When a candidate tensor agrees with the reference.

    rel_l2: ||candidate - reference||₂ / ||reference||₂ allowed. FP16 keeps 11 bits
    (relative spacing 2^-11 ≈ 4.9e-4); 1e-2 leaves room for errors accumulated
    over a dozen layers while still catching a real fault.
    floor: the denominator is at least floor·√n, so a tensor of near-zero values is
    judged on absolute error (magnitude-aware) rather than on noise-sized ratios.
    """

    rel_l2: float = 1e-2
    floor: float = FP16_NORMAL_MIN


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
        result = {"axis": self.axis, "range": [self.start, self.stop], "rel_l2": _json_float(self.rel_l2)}
        if self.stop - self.start == 1:
            result["index"] = self.start
        if self.concat is not None:
            result.update(concat=self.concat, part=self.part)
        return result


@dataclass(frozen=True)
class TensorDiff:
    """How one candidate tensor differs from its reference (both read as float64)."""

    rel_l2: float  # over elements finite in both
    max_abs: float  # over elements finite in both
    nonfinite: int  # elements non-finite in the candidate where the reference is finite
    ok: bool  # within tolerance as a whole and in every slice
    worst_slice: WorstSlice | None = None  # None: the tensor has no slices (one row, no Concat axis)
    # Elements outside an FP16-aware allclose, |c - r| <= rtol·|r| + atol (see `elementwise_mismatches`).
    # Shown beside rel-L2, not part of `ok`: one rounding outlier in a large tensor is not a fault.
    mismatched: int = 0

    @property
    def effect(self) -> float:
        """The error that decides harm: inf when non-finite, else the worst of the whole and its slices."""
        if self.nonfinite:
            return float("inf")
        return max(self.rel_l2, self.worst_slice.rel_l2 if self.worst_slice else 0.0)

    def to_dict(self) -> dict:
        return asdict(self)


def tensor_diff(
    reference: np.ndarray,
    candidate: np.ndarray,
    tolerance: Tolerance = Tolerance(),
    slices: "tuple[SliceAxis, ...] | None" = None,
) -> TensorDiff:
    """The candidate's error, whole and per slice: the rows of axis 0 (when it has more than one row and
    the tensor at least 2 axes) and every axis in `slices` (Concat axes: `slice_axes`)."""
    if reference.shape != candidate.shape:
        return TensorDiff(rel_l2=float("inf"), max_abs=float("inf"), nonfinite=0, ok=False)
    if reference.dtype.kind not in "fc" or candidate.dtype.kind not in "fc":
        mismatched = int(np.count_nonzero(reference != candidate))
        return TensorDiff(rel_l2=mismatched / max(reference.size, 1), max_abs=float(mismatched > 0), nonfinite=0,
                          ok=mismatched == 0, mismatched=mismatched)
    # FP16/FP32 tensors are compared in float32 (half the memory traffic of float64); a tensor whose
    # squares would leave float32's range (the -3.4e38 of a mask) is compared in float64.
    work = np.float64 if max(reference.dtype.itemsize, candidate.dtype.itemsize) > 4 else np.float32
    ref = reference.astype(work, copy=False)
    cand = candidate.astype(work, copy=False)
    with np.errstate(invalid="ignore", over="ignore"):
        delta = cand - ref
    # The common case in one pass: a finite difference everywhere means both tensors are finite.
    all_finite = bool(np.isfinite(delta).all())
    if all_finite:
        nonfinite = special_mismatch = 0
        ref_both = ref
    else:
        ref_finite, cand_finite = np.isfinite(ref), np.isfinite(cand)
        if ref_finite.all():  # the usual NaN cascade: only the candidate went non-finite
            both, special_mismatch = cand_finite, 0
            nonfinite = int(cand_finite.size - np.count_nonzero(cand_finite))
        else:
            nonfinite = int(np.count_nonzero(ref_finite & ~cand_finite))
            both = ref_finite & cand_finite
            # Where the reference is itself non-finite, the candidate must match it exactly (−inf stays −inf).
            special_mismatch = int(np.count_nonzero(~ref_finite & ~((ref == cand) | (np.isnan(ref) & np.isnan(cand)))))
        all_finite = bool(both.all())  # finite both, only the difference overflowed
        delta, ref_both = (delta, ref) if all_finite else (delta[both], ref[both])
    if not delta.size and ref.size:  # nothing finite to compare: the error is unbounded
        return TensorDiff(rel_l2=float("inf"), max_abs=float("inf"), nonfinite=nonfinite, ok=False)
    abs_delta, abs_ref = np.abs(delta), np.abs(ref_both)  # reused by the elementwise check
    max_abs = float(np.max(abs_delta)) if delta.size else 0.0
    peak = float(np.max(abs_ref)) if ref_both.size else 0.0
    if work is np.float32 and max(peak, max_abs) > _FLOAT32_SQUARE_SAFE:
        ref_both, delta = ref_both.astype(np.float64), delta.astype(np.float64)
    ref_norm = _norm(ref_both)
    denominator = max(ref_norm, tolerance.floor * np.sqrt(max(ref_both.size, 1)))
    rel_l2 = _norm(delta) / denominator
    if all_finite:
        full_delta, full_ref = delta, ref_both
    else:  # slices need the tensor's layout: elements not finite in both count as 0 (they fail `nonfinite`)
        full_delta = np.zeros(ref.shape, delta.dtype)
        full_delta[both] = delta
        full_ref = np.where(both, ref, 0).astype(delta.dtype, copy=False)
    worst = _worst_slice(full_ref, full_delta, _slicings(reference.shape, slices), tolerance)
    rms = ref_norm / float(np.sqrt(max(ref_both.size, 1)))
    if all_finite and abs_delta.dtype == delta.dtype:  # not re-done in float64 for a huge tensor
        mismatched = _mismatches(abs_ref, abs_delta, tolerance, rms)
    else:
        mismatched = elementwise_mismatches(full_ref, full_delta, tolerance, rms)
    slices_ok = worst is None or worst.rel_l2 <= tolerance.rel_l2
    ok = nonfinite == 0 and special_mismatch == 0 and rel_l2 <= tolerance.rel_l2 and slices_ok
    return TensorDiff(rel_l2=rel_l2, max_abs=max_abs, nonfinite=nonfinite, ok=ok, worst_slice=worst, mismatched=mismatched)


def elementwise_mismatches(reference: np.ndarray, delta: np.ndarray, tolerance: Tolerance, rms: float | None = None) -> int:
    """Elements where |delta| > rtol·|reference| + atol: an allclose made for FP16.

    rtol is the tolerance's relative budget (1e-2, some twenty FP16 roundings of 2^-11); atol is that
    budget times the tensor's RMS, at least FP16's smallest normal: an element far below the typical
    magnitude is judged on the tensor's absolute scale, not on a noise-sized ratio.
    """
    if not reference.size:
        return 0
    if rms is None:
        rms = _norm(reference) / float(np.sqrt(reference.size))
    return _mismatches(np.abs(reference), np.abs(delta), tolerance, rms)


def _mismatches(abs_reference: np.ndarray, abs_delta: np.ndarray, tolerance: Tolerance, rms: float) -> int:
    atol = float(max(tolerance.rel_l2 * rms, tolerance.floor))  # a Python float keeps float32 arrays float32
    bound = abs_reference * tolerance.rel_l2
    bound += atol
    return int(np.count_nonzero(abs_delta > bound))


def _slicings(shape: tuple[int, ...], slices) -> list[SliceAxis]:
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


def _worst_slice(reference: np.ndarray, delta: np.ndarray, slicings: list[SliceAxis], tolerance: Tolerance) -> WorstSlice | None:
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


def _json_float(value: float) -> float | None:
    return float(value) if np.isfinite(value) else None


_FLOAT32_SQUARE_SAFE = 1e15  # a sum of up to 1e8 squares of values below this stays finite in float32


def _norm(values: np.ndarray) -> float:
    """L2 norm without BLAS: np.linalg.norm's threaded dot stalls when cores are busy."""
    return float(np.sqrt(np.sum(np.square(values))))


def verdict(outputs: dict[str, TensorDiff]) -> str:
    """ok, nonfinite (non-finite where the reference is finite) or divergent (beyond tolerance)."""
    if any(diff.nonfinite for diff in outputs.values()):
        return "nonfinite"
    if not all(diff.ok for diff in outputs.values()):
        return "divergent"
    return "ok"


def align(reference: GraphIndex, candidate: GraphIndex) -> dict[str, str]:
    """Map each candidate tensor to the reference tensor holding the same value, by name.

    A name present in both aligns directly. The Casts a conversion inserts (at the model's
    inputs and outputs, around nodes kept in FP32) give new names to the same value: a
    float-to-float Cast's input and output align to the same reference tensor. Never by position.
    """
    known = set(reference.producer) | set(reference.initializers) | set(reference.input_names)
    candidate_names = set(candidate.producer) | set(candidate.initializers) | set(candidate.input_names)
    mapping = {name: name for name in candidate_names if name in known}
    value_casts = [
        (node.input[0], node.output[0])
        for node in candidate.nodes
        if node.op_type == "Cast" and candidate.elem_types.get(node.input[0]) in FLOAT_TYPES and _casts_to_float(node)
    ]
    changed = True
    while changed:
        changed = False
        for source, target in value_casts:
            if source in mapping and target not in mapping:
                mapping[target] = mapping[source]
                changed = True
            elif target in mapping and source not in mapping:
                mapping[source] = mapping[target]
                changed = True
    return mapping


def _casts_to_float(node) -> bool:
    return any(attr.name == "to" and attr.i in FLOAT_TYPES for attr in node.attribute)


# Ops whose output has the layout of their (broadcast) inputs: a Concat's parts stay where they were.
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
