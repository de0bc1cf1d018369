"""A candidate tensor against the reference's: relative L2 error, non-finite values, and the worst slice."""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from workbench.compare.slices import SliceAxis, WorstSlice, slicings, worst_slice
from workbench.formats import FP16


@dataclass(frozen=True)
class Tolerance:
    """When a candidate tensor agrees with the reference.

    rel_l2: ||candidate - reference||₂ / ||reference||₂ allowed. FP16 keeps 11 bits
    (relative spacing 2^-11 ≈ 4.9e-4); 1e-2 leaves room for errors accumulated
    over a dozen layers while still catching a real fault.
    floor: the denominator is at least floor·√n, so a tensor of near-zero values is
    judged on absolute error (magnitude-aware) rather than on noise-sized ratios.
    """

    rel_l2: float = FP16.rel_l2
    floor: float = FP16.normal_min


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
    worst = worst_slice(full_ref, full_delta, slicings(reference.shape, slices), tolerance)
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


