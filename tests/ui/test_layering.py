"""ui/ imports the core, never the other way round; the core needs none of the notebook packages."""

import subprocess
import sys
from pathlib import Path

CORE = Path(__file__).resolve().parents[2] / "workbench"


def test_core_modules_never_import_the_ui():
    # __init__ may offer `workbench.Workbench` lazily (a module __getattr__); the import test below holds it to that.
    modules = [p for p in CORE.glob("*.py") if p.name != "__init__.py"]
    assert [p.name for p in modules if "workbench.ui" in p.read_text() or "import ui" in p.read_text()] == []


def test_importing_the_core_loads_no_widget_or_plotting_package():
    code = "import sys, workbench; print([m for m in ('ipywidgets', 'matplotlib', 'workbench.ui') if m in sys.modules])"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]"
