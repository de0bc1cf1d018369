"""What went wrong at one node, as a kind and a sentence naming the offending values.

All arithmetic here is on numpy arrays: reference values in FP32 (or wider), the
candidate's in its own format (FP16 mostly; BF16 and FP8 values are held as float32), and
sentences speak in that format's terms (`workbench.formats`). "Local" output = the node run in the
candidate's precision on the reference's inputs: the node's own fault, free of
damage passed on from upstream.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnx

from workbench.compare.diff import TensorDiff
from workbench.compare.slices import WorstSlice
from workbench.formats import FP16, Precision

# Kinds, most specific first. Each root or warning has exactly one.
CONSTANT_OUT_OF_RANGE = "constant_out_of_range"
CONSTANT_UNDERFLOW = "constant_underflow"
ACTIVATION_OVERFLOW = "activation_overflow"
INF_ARITHMETIC = "inf_arithmetic"
OUTPUT_UNDERFLOW = "underflow"
PRECISION_LOSS = "precision_loss"
ACCUMULATED_ERROR = "accumulated_error"


@dataclass
class InputEvidence:
    name: str
    constant: bool
    reference: np.ndarray  # the reference's value (FP32)
    as_candidate: np.ndarray  # the same value cast to the candidate's input type
    fmt: Precision = FP16  # the candidate's low-precision format

    @property
    def overflows(self) -> int:
        """Elements finite in the reference beyond the format's range: ±inf in FP16, saturated in FP8."""
        if not _is_float(self.reference) or not self.reference.size or _within(self.reference, self.fmt):
            return 0  # the common case (every weight), decided without temporary arrays
        if self.reference.shape != np.shape(self.as_candidate):
            return 0
        return int(np.count_nonzero(_beyond_range(self.reference, self.as_candidate, self.fmt)))

    @property
    def vanishes(self) -> bool:
        """All its non-zero elements become 0 in the candidate's type (an eps of 1e-12, say)."""
        if not _is_float(self.reference) or self.reference.shape != self.as_candidate.shape:
            return False
        head = slice(0, 64)  # a weight keeps some non-zero value in its first elements: no full pass needed
        if np.any((self.reference.reshape(-1)[head] != 0) & (self.as_candidate.reshape(-1)[head] != 0)):
            return False
        if not np.any(self.reference != 0):
            return False
        return not np.any((self.reference != 0) & (self.as_candidate != 0))

    @property
    def lossy(self) -> bool:
        """The candidate's type cannot hold this value: it overflows, or vanishes to 0."""
        return bool(self.overflows or self.vanishes)


@dataclass
class NodeEvidence:
    node: onnx.NodeProto
    inputs: list[InputEvidence]
    reference: np.ndarray  # the reference's first output
    local: np.ndarray  # the node run in candidate precision on the reference's inputs
    local_diff: TensorDiff
    fmt: Precision = FP16  # the candidate's low-precision format

    @property
    def lossy_constants(self) -> list[InputEvidence]:
        return [i for i in self.inputs if i.constant and i.lossy]

    @property
    def lossy_activation_inputs(self) -> list[InputEvidence]:
        """Computed inputs that do not fit the candidate's type: the fault is upstream, not here."""
        return [i for i in self.inputs if not i.constant and i.overflows]


def classify(evidence: NodeEvidence) -> str | None:
    """The kind of fault this node makes on its own, or None when it makes none."""
    constants = evidence.lossy_constants
    if any(i.overflows for i in constants):
        return CONSTANT_OUT_OF_RANGE
    if constants:
        return CONSTANT_UNDERFLOW
    if evidence.lossy_activation_inputs:
        return None
    diff = evidence.local_diff
    if diff.ok:
        return None
    if _overflowed(evidence.reference, evidence.local, evidence.fmt):
        return ACTIVATION_OVERFLOW
    if diff.nonfinite:
        return INF_ARITHMETIC
    if _underflowed(evidence.reference, evidence.local, evidence.fmt):
        return OUTPUT_UNDERFLOW
    return PRECISION_LOSS


def explain(kind: str, evidence: NodeEvidence) -> str:
    node = evidence.node
    head = f"{node.op_type} `{node.name}`"
    sentence = _SENTENCES[kind](evidence)
    return f"{head}: {sentence}"


def _constant_out_of_range(e: NodeEvidence) -> str:
    constant = next(i for i in e.lossy_constants if i.overflows)
    worst = _extreme(constant.reference[_beyond_range(constant.reference, constant.as_candidate, e.fmt)])
    stored = float(np.asarray(e.fmt.store(np.array([worst], np.float32)), np.float64)[0])
    label = e.fmt.label
    text = f"input `{constant.name}` is {_num(worst)} in FP32 and {_num(stored)} in {label} (outside {label}'s {e.fmt.range_text})"
    return text + "; " + _consequence(e)


def _constant_underflow(e: NodeEvidence) -> str:
    constant = e.lossy_constants[0]
    smallest = _extreme(constant.reference[constant.reference != 0], smallest=True)
    label = e.fmt.label
    text = f"input `{constant.name}` is {_num(smallest)} in FP32 and 0 in {label} (below {label}'s smallest value {e.fmt.tiny:.2g})"
    if e.local_diff.ok:
        zeroed = (e.reference != 0) & (e.local.astype(np.float64) == 0)
        if zeroed.any():
            return text + f"; the output is 0 at {_count(zeroed)} where FP32 has {_num(_extreme(e.reference[zeroed], smallest=True))}"
        return text + "; the output is unchanged on these inputs, but a zero next to it would divide by zero"
    return text + "; " + _consequence(e)


def _activation_overflow(e: NodeEvidence) -> str:
    overflowing = _beyond_range(e.reference, e.local, e.fmt)
    peak = _extreme(e.reference[overflowing])
    inputs = ", ".join(f"`{i.name}` up to {_num(_extreme(i.reference))}" for i in e.inputs if _is_float(i.reference) and i.reference.size)
    sign = "" if peak > 0 else "-"
    becomes = f"becomes {sign}inf" if e.fmt.has_inf else f"saturates to {sign}{e.fmt.max:g}"
    return (
        f"the output reaches {_num(peak)} in FP32, beyond {e.fmt.label}'s {e.fmt.range_text}, and "
        f"{becomes} at {_count(overflowing)} (inputs: {inputs})"
    )


def _inf_arithmetic(e: NodeEvidence) -> str:
    return f"inputs hold ±inf in {e.fmt.label}; " + _consequence(e)


def _output_underflow(e: NodeEvidence) -> str:
    lost = (e.reference != 0) & (e.local.astype(np.float64) == 0)
    return (
        f"output values as small as {_num(_extreme(e.reference[lost], smallest=True))} are below {e.fmt.label}'s smallest "
        f"value {e.fmt.tiny:.2g} and become 0 at {_count(lost)} (relative error {e.local_diff.rel_l2:.2g})"
    )


def _precision_loss(e: NodeEvidence) -> str:
    text = f"{e.fmt.label} rounding alone gives a relative error of {e.local_diff.rel_l2:.2g} (max {_num(e.local_diff.max_abs)})"
    floats = [i for i in e.inputs if _is_float(i.reference) and i.reference.size]
    if node_cancels(e.node) and floats:
        big = max(float(np.max(np.abs(i.reference))) for i in floats)
        out = float(np.sqrt(np.mean(np.square(e.reference.astype(np.float64))))) if e.reference.size else 0.0
        if out > 0 and big / out > 100:
            spacing = e.fmt.spacing(min(big, e.fmt.max))
            text += (
                f": cancellation, inputs of magnitude {_num(big)} ({e.fmt.label} spacing {_num(spacing)} there) "
                f"leave a result of typical size {_num(out)}"
            )
    return text


def _accumulated(e: NodeEvidence) -> str:
    return f"largest local {e.fmt.label} error on the way ({e.local_diff.rel_l2:.2g}); no single node explains the outputs"


_SENTENCES = {
    CONSTANT_OUT_OF_RANGE: _constant_out_of_range,
    CONSTANT_UNDERFLOW: _constant_underflow,
    ACTIVATION_OVERFLOW: _activation_overflow,
    INF_ARITHMETIC: _inf_arithmetic,
    OUTPUT_UNDERFLOW: _output_underflow,
    PRECISION_LOSS: _precision_loss,
    ACCUMULATED_ERROR: _accumulated,
}


def node_cancels(node: onnx.NodeProto) -> bool:
    return node.op_type in ("Sub", "Add")


def _consequence(e: NodeEvidence) -> str:
    """What the bad input does in this op, e.g. '0 × -inf = NaN at 9 of 16 elements'."""
    local = e.local.astype(np.float64)
    new_nan = np.isnan(local) & ~np.isnan(e.reference)
    new_inf = np.isinf(local) & np.isfinite(e.reference)
    if new_nan.any():
        rule = {"Mul": "0 × -inf = NaN", "Add": "inf - inf = NaN", "Sub": "inf - inf = NaN", "Div": "inf / inf or 0 / 0 = NaN"}
        return f"{rule.get(e.node.op_type, 'the result is NaN')} at {_count(new_nan)}"
    if new_inf.any():
        return f"the output is ±inf at {_count(new_inf)} where FP32 is finite"
    return f"the output differs by a relative error of {e.local_diff.rel_l2:.2g}"


def _count(mask: np.ndarray) -> str:
    return f"{int(np.count_nonzero(mask))} of {mask.size} elements"


def _extreme(values: np.ndarray, smallest: bool = False) -> float:
    values = np.asarray(values, dtype=np.float64).ravel()
    if not values.size:
        return 0.0
    pick = np.argmin(np.abs(values)) if smallest else np.argmax(np.abs(values))
    return float(values[pick])


def _num(value) -> str:
    value = float(value)
    if not np.isfinite(value):
        return str(value)
    return f"{value:.8g}" if abs(value) >= 1e5 or (value != 0 and abs(value) < 1e-3) else f"{value:.4g}"


def _is_float(array: np.ndarray) -> bool:
    return np.asarray(array).dtype.kind == "f"


def _within(values: np.ndarray, fmt: Precision) -> bool:
    """Every finite element fits the format's range (NaN compares False, and NaN is not an overflow)."""
    return not (float(np.max(values)) > fmt.max or float(np.min(values)) < -fmt.max)


def _beyond_range(reference: np.ndarray, stored: np.ndarray, fmt: Precision) -> np.ndarray:
    """Elements finite in FP32 that the format lost to its range: ±inf (FP16, BF16) or saturated at ±max (FP8)."""
    stored = np.asarray(stored, np.float64)
    lost = ~np.isfinite(stored) if fmt.has_inf else (~np.isfinite(stored) | (np.abs(stored) >= fmt.max))
    return np.isfinite(reference) & (np.abs(reference) > fmt.max) & lost


def _overflowed(reference: np.ndarray, local: np.ndarray, fmt: Precision = FP16) -> bool:
    if not _is_float(reference) or reference.shape != np.shape(local):
        return False
    return bool(np.any(_beyond_range(reference, local, fmt)))


def _underflowed(reference: np.ndarray, local: np.ndarray, fmt: Precision = FP16) -> bool:
    if not _is_float(reference):
        return False
    lost = (reference != 0) & (np.abs(reference) < fmt.tiny) & (local.astype(np.float64) == 0)
    return bool(lost.any())


# ---------------------------------------------------------------- slices (issue 12)

_ORDINALS = ("first", "second", "third", "fourth", "fifth", "sixth", "seventh", "eighth")


def name_slice(output: str, worst: WorstSlice, rank: int | None = None) -> str:
    """"rows 4–7 of `y`", "columns 4–7 of `y` (the second input of Concat `join`)"."""
    count = worst.stop - worst.start
    if worst.axis == 0:
        noun = "row" if count == 1 else "rows"
    elif rank == 2 and worst.axis == 1:
        noun = "column" if count == 1 else "columns"
    else:
        noun = "index" if count == 1 else "indexes"
    where = f"{worst.start}" if count == 1 else f"{worst.start}–{worst.stop - 1}"
    axis = f" on axis {worst.axis}" if not noun.startswith(("row", "column")) else ""
    text = f"{noun} {where}{axis} of `{output}`"
    if worst.concat is not None and worst.part is not None:
        text += f" ({_part_ordinal(worst)} input of Concat `{worst.concat}`, `{worst.part}`)"
    return text


def slice_effect(output: str, diff: TensorDiff, reference: np.ndarray, candidate: np.ndarray, tolerance: float) -> str | None:
    """What happens to the worst slice, when it is broken while the whole tensor hides it; else None.

    "rows 4–7 of `y` (...) become all zeros (the whole of `y` is off by only 1.2e-27)".
    """
    worst = diff.worst_slice
    if worst is None or worst.rel_l2 <= tolerance or diff.rel_l2 > tolerance:
        return None
    index = [slice(None)] * reference.ndim
    index[worst.axis] = slice(worst.start, worst.stop)
    ref_part, cand_part = reference[tuple(index)], np.asarray(candidate[tuple(index)], np.float64)
    plural = worst.stop - worst.start != 1 or worst.axis != 0
    if np.all(cand_part == 0) and np.any(ref_part != 0):
        effect = "become all zeros" if plural else "becomes all zeros"
    else:
        effect = f"{'are' if plural else 'is'} off by a relative error of {worst.rel_l2:.2g}"
    return f"{name_slice(output, worst, reference.ndim)} {effect} (the whole of `{output}` is off by only {diff.rel_l2:.2g})"


def _part_ordinal(worst: WorstSlice) -> str:
    return "the " + (_ORDINALS[worst.part_index] if worst.part_index < len(_ORDINALS) else f"#{worst.part_index + 1}")
