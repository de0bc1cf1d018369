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
class TensorDiff:
    """How one candidate tensor differs from its reference (both read as float64)."""

    rel_l2: float  # over elements finite in both
    max_abs: float  # over elements finite in both
    nonfinite: int  # elements non-finite in the candidate where the reference is finite
    ok: bool

    def to_dict(self) -> dict:
        return asdict(self)


def tensor_diff(reference: np.ndarray, candidate: np.ndarray, tolerance: Tolerance = Tolerance()) -> TensorDiff:
    if reference.shape != candidate.shape:
        return TensorDiff(rel_l2=float("inf"), max_abs=float("inf"), nonfinite=0, ok=False)
    if reference.dtype.kind not in "fc" or candidate.dtype.kind not in "fc":
        mismatched = int(np.count_nonzero(reference != candidate))
        return TensorDiff(rel_l2=mismatched / max(reference.size, 1), max_abs=float(mismatched > 0), nonfinite=0, ok=mismatched == 0)
    # FP16/FP32 tensors are compared in float32 (half the memory traffic of float64); a tensor whose
    # squares would leave float32's range (the -3.4e38 of a mask) is compared in float64.
    work = np.float64 if max(reference.dtype.itemsize, candidate.dtype.itemsize) > 4 else np.float32
    ref = reference.astype(work, copy=False)
    cand = candidate.astype(work, copy=False)
    ref_finite, cand_finite = np.isfinite(ref), np.isfinite(cand)
    nonfinite = int(np.count_nonzero(ref_finite & ~cand_finite))
    both = ref_finite & cand_finite
    # Where the reference is itself non-finite, the candidate must match it exactly (−inf stays −inf).
    special_mismatch = int(np.count_nonzero(~ref_finite & ~((ref == cand) | (np.isnan(ref) & np.isnan(cand)))))
    if both.all():
        delta, ref_both = cand - ref, ref
    else:
        delta, ref_both = cand[both] - ref[both], ref[both]
    if not delta.size and ref.size:  # nothing finite to compare: the error is unbounded
        return TensorDiff(rel_l2=float("inf"), max_abs=float("inf"), nonfinite=nonfinite, ok=False)
    max_abs = float(np.max(np.abs(delta))) if delta.size else 0.0
    peak = float(np.max(np.abs(ref_both))) if ref_both.size else 0.0
    if work is np.float32 and max(peak, max_abs) > _FLOAT32_SQUARE_SAFE:
        ref_both, delta = ref_both.astype(np.float64), delta.astype(np.float64)
    denominator = max(_norm(ref_both), tolerance.floor * np.sqrt(max(ref_both.size, 1)))
    rel_l2 = _norm(delta) / denominator
    ok = nonfinite == 0 and special_mismatch == 0 and rel_l2 <= tolerance.rel_l2
    return TensorDiff(rel_l2=rel_l2, max_abs=max_abs, nonfinite=nonfinite, ok=ok)


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
