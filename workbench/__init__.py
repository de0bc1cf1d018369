"""workbench: find out why a converted ONNX model gives wrong numbers, and fix it.

    import workbench
    report = workbench.diagnose("model.onnx")                  # FP16 conversion made here
    report = workbench.diagnose("model.onnx", "model_fp16.onnx", inputs="feed.npz")
    report.verdict, report.roots, report.to_dict()
    fixed = workbench.apply_fixes(report, report.roots[0].fixes[:1])   # re-verified: fixed.ok, fixed.after
    fixed = workbench.auto_fix(report)                                # the smallest fix found from the roots
    fixed.save("model_fp16_fixed.onnx")
"""

from workbench.compare.diff import TensorDiff, Tolerance
from workbench.convert.low_precision import Fp16Options, convert_to_fp16
from workbench.diagnosis.result import Diagnosis, Finding
from workbench.diagnosis.search import DiagnoseOptions, diagnose
from workbench.errors import WorkbenchError
from workbench.fixes.search import auto_fix
from workbench.fixes.verify import Verification, apply_fixes
from workbench.io.feeds import generate_feed, load_feed
from workbench.io.model import Model, load_model
from workbench.sweep import sweep
from workbench.task.checks import MaskedLmTask, SentenceEmbeddingTask

__all__ = [
    "Diagnosis",
    "DiagnoseOptions",
    "Finding",
    "Fp16Options",
    "MaskedLmTask",
    "Model",
    "SentenceEmbeddingTask",
    "TensorDiff",
    "Tolerance",
    "Verification",
    "WorkbenchError",
    "apply_fixes",
    "auto_fix",
    "convert_to_fp16",
    "diagnose",
    "generate_feed",
    "load_feed",
    "load_model",
    "sweep",
]


def __getattr__(name: str):
    """`workbench.Workbench` (the notebook widget) loads ipywidgets and matplotlib only when asked for."""
    if name == "Workbench":
        from workbench.ui import Workbench

        return Workbench
    raise AttributeError(f"module 'workbench' has no attribute {name!r}")
