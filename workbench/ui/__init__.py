"""The notebook workbench: one widget over a diagnosis (ipywidgets + matplotlib; the core never imports this).

    from workbench.ui import Workbench
    Workbench("model.onnx", inputs=feed)               # diagnoses, then shows the panels
    Workbench.from_diagnosis(workbench.diagnose(...))   # or show a diagnosis you already have
"""

from workbench.ui.app import Workbench

__all__ = ["Workbench"]
