"""ONNX Runtime sessions as the engines build them: quiet, without spinning threads, failures in one line."""

from __future__ import annotations

import re

import onnxruntime as ort

from workbench.errors import WorkbenchError

# ORT's own logger writes lines such as `[E:onnxruntime:, sequential_executor.cc ...]` to stderr
# beside the workbench's one-line error; the error itself still reaches us as an exception.
ort.set_default_logger_severity(4)


def session_options(optimize: bool = True, intra_op_threads: int = 0) -> ort.SessionOptions:
    """`intra_op_threads` 0: ONNX Runtime's default, a thread per core (a sweep's N workers ask for fewer)."""
    options = ort.SessionOptions()
    options.log_severity_level = 4
    options.intra_op_num_threads = intra_op_threads
    # Each session has its own thread pool, whose threads spin after every run by default.
    # A diagnosis holds about a hundred sessions: spinning made a 0.06 s diagnosis take 1.7-4 s.
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    if not optimize:
        # Optimisations would remove the rounding Casts (Cast pairs) and fuse across tensors we capture.
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    return options


def failure_detail(exc: Exception) -> str:
    """The informative last line of an ORT exception, at most 300 characters."""
    text = str(exc).strip()
    return text.splitlines()[-1][:300] if text else type(exc).__name__


def build_session(model_bytes: bytes, providers, optimize: bool = True, what: str = "the model",
                  intra_op_threads: int = 0) -> ort.InferenceSession:
    try:
        return ort.InferenceSession(model_bytes, session_options(optimize, intra_op_threads), providers=list(providers))
    except Exception as exc:  # ORT reports unsupported ops, bad graphs and its optimizer's faults this way
        detail = failure_detail(exc)
        training = re.search(r"(ai\.onnx\.preview\.training:\w+)", detail)
        if training:
            raise WorkbenchError(
                f"{what} uses the training-only op {training.group(1)}, which inference engines (ONNX Runtime, "
                "TensorRT) do not run; diagnose the inference graph exported without it."
            ) from None
        raise WorkbenchError(f"ONNX Runtime cannot load {what}: {detail}") from None
