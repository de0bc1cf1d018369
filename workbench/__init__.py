"""workbench: find out why a converted ONNX model gives wrong numbers, and fix it.

    import workbench
    report = workbench.diagnose("model.onnx")                  # FP16 conversion made here
    report = workbench.diagnose("model.onnx", "model_fp16.onnx", inputs="feed.npz")
    report.verdict, report.roots, report.to_dict()
"""

from workbench.compare import Tolerance, TensorDiff
from workbench.diagnose import DiagnoseOptions, diagnose
from workbench.errors import WorkbenchError
from workbench.feeds import generate_feed, load_feed
from workbench.fp16 import Fp16Options, convert_to_fp16
from workbench.model import Model, load_model
from workbench.report import Diagnosis, Finding

__all__ = [
    "Diagnosis",
    "DiagnoseOptions",
    "Finding",
    "Fp16Options",
    "Model",
    "TensorDiff",
    "Tolerance",
    "WorkbenchError",
    "convert_to_fp16",
    "diagnose",
    "generate_feed",
    "load_feed",
    "load_model",
]
