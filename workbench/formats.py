"""The low-precision formats a candidate can store its tensors in, and what each can hold.

FP16 is the common case. BF16 keeps FP32's range with 8 significant bits, so its faults are
precision loss and cancellation, not overflow. FP8 E4M3FN has no infinity: ONNX's Cast
saturates values beyond ±448 to ±448 (its `saturate` attribute's default), as FP8 engines do;
E5M2 saturates at ±57344 (ONNX Runtime saturates inf too).

Values of a format are held in numpy as float16 for FP16 and as float32 otherwise (numpy has no
BF16 or FP8 type; ml_dtypes' FP8 turns out-of-range values into NaN instead of saturating), so
every rounding goes through ONNX Runtime's Cast, the same one the emulating engine uses.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np
from onnx import TensorProto, helper


@dataclass(frozen=True)
class Precision:
    name: str  # as on the command line: fp16, bf16, fp8-e4m3, fp8-e5m2
    label: str  # as in sentences: FP16, BF16, FP8 E4M3, FP8 E5M2
    elem_type: int  # the ONNX TensorProto type
    max: float  # largest finite value
    tiny: float  # smallest positive value (subnormal); below half of it a value becomes 0
    normal_min: float  # smallest positive normal value
    bits: int  # significant bits, the implicit one included (FP32: 24)
    has_inf: bool  # False: values beyond max saturate to ±max instead of becoming ±inf
    rel_l2: float  # default tolerance on a tensor's relative L2 error
    min_opset: int  # first ONNX opset whose Cast converts to this type

    @property
    def range_text(self) -> str:
        return f"±{self.max:g}"

    @property
    def overflow_result(self) -> str:
        return "inf" if self.has_inf else f"±{self.max:g} (saturated)"

    def spacing(self, magnitude: float) -> float:
        """Distance between neighbouring values of this format near `magnitude` (normal range)."""
        magnitude = max(abs(float(magnitude)), self.normal_min)
        return 2.0 ** (np.floor(np.log2(magnitude)) - (self.bits - 1))

    def store(self, values: np.ndarray) -> np.ndarray:
        """`values` (float32) as this format holds them: float16 for FP16, else float32 holding the rounded values."""
        values = np.asarray(values)
        if self.elem_type == TensorProto.FLOAT16:
            with np.errstate(over="ignore"):
                return values.astype(np.float16)
        if values.dtype.kind != "f" or not values.size:
            return values
        flat = np.ascontiguousarray(values, dtype=np.float32).reshape(1, -1)
        return _rounding_session(self.elem_type).run(None, {"x": flat})[0].reshape(values.shape)


# Tolerances: FP16 keeps 11 bits (one rounding: relative RMS error about 3e-4) and 1e-2 leaves room
# for a dozen layers. With fewer bits one rounding alone costs more: BF16 about 2e-3, E4M3 about 4e-2,
# E5M2 about 7e-2; the tolerances keep a similar margin over what a dozen layers accumulate.
PRECISIONS = {
    p.name: p
    for p in (
        Precision("fp16", "FP16", TensorProto.FLOAT16, 65504.0, 2.0**-24, 2.0**-14, 11, True, 1e-2, 1),
        Precision("bf16", "BF16", TensorProto.BFLOAT16, 3.3895314e38, 2.0**-133, 2.0**-126, 8, True, 4e-2, 13),
        Precision("fp8-e4m3", "FP8 E4M3", TensorProto.FLOAT8E4M3FN, 448.0, 2.0**-9, 2.0**-6, 4, False, 0.15, 19),
        Precision("fp8-e5m2", "FP8 E5M2", TensorProto.FLOAT8E5M2, 57344.0, 2.0**-16, 2.0**-14, 3, False, 0.25, 19),
    )
}
FP16 = PRECISIONS["fp16"]
BY_ELEM_TYPE = {p.elem_type: p for p in PRECISIONS.values()}
LOW_TYPES = frozenset(BY_ELEM_TYPE) | {TensorProto.FLOAT8E4M3FNUZ, TensorProto.FLOAT8E5M2FNUZ}


def precision(name: str) -> Precision:
    from workbench.errors import WorkbenchError

    if name not in PRECISIONS:
        raise WorkbenchError(f"unknown precision '{name}'; use one of {', '.join(PRECISIONS)}.")
    return PRECISIONS[name]


def of_types(elem_types) -> Precision:
    """The format a candidate stores most of its low-precision tensors in (FP16 when it has none)."""
    counts: dict[int, int] = {}
    for elem_type in elem_types:
        if elem_type in BY_ELEM_TYPE:
            counts[elem_type] = counts.get(elem_type, 0) + 1
    return BY_ELEM_TYPE[max(counts, key=counts.get)] if counts else FP16


@functools.lru_cache(maxsize=None)
def _rounding_session(elem_type: int):
    """float32 -> the format -> float32, one ONNX Runtime session per format."""
    import onnxruntime as ort

    graph = helper.make_graph(
        [helper.make_node("Cast", ["x"], ["low"], to=elem_type), helper.make_node("Cast", ["low"], ["y"], to=TensorProto.FLOAT)],
        "round", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, None])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, None])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 21)])
    model.ir_version = 10
    options = ort.SessionOptions()
    options.log_severity_level = 4
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
