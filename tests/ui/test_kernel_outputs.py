"""In a real kernel: what the Workbench leaves in a saved notebook, and what reaches stderr.

Anything a cell saves that names a widget other than the live Workbench shows "Error displaying
widget: model not found" after a reload; anything on stderr from a button callback lands in
JupyterLab's Log Console (here: in the cell that clicks).
"""

from pathlib import Path

import nbformat
from nbclient import NotebookClient

ROOT = Path(__file__).resolve().parents[2]
WIDGET_VIEW = "application/vnd.jupyter.widget-view+json"

CELLS = [
    f"import sys; sys.path.insert(0, {str(ROOT)!r})\n"
    "import numpy as np\nfrom workbench.ui import Workbench\n"
    f"with np.load({str(ROOT / 'sample_models/legacy_mask_bert.npz')!r}) as data:\n"
    "    feed = {k: data[k] for k in data.files}",
    f"bench = Workbench({str(ROOT / 'sample_models/legacy_mask_bert.onnx')!r}, inputs=feed)\nbench",
    "bench.fixes.apply_button.click()\nprint(bench.state.verification.ok, bench.widget.model_id)",
]


def test_a_saved_notebook_holds_only_the_workbench_widget_and_no_stderr(tmp_path):
    notebook = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(source) for source in CELLS])
    NotebookClient(notebook, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}).execute()
    outputs = [output for cell in notebook.cells for output in cell.outputs]
    assert not [o for o in outputs if o.output_type == "stream" and o.name == "stderr"]
    ok, model_id = notebook.cells[2].outputs[-1].text.split()
    assert ok == "True"
    views = [o.data[WIDGET_VIEW]["model_id"] for o in outputs if WIDGET_VIEW in o.get("data", {})]
    assert views == [model_id]  # no progress bar (tqdm's are widgets, closed and gone after a reload)
    assert not [o for o in notebook.cells[2].outputs if o.output_type == "display_data"]
