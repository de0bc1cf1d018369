"""The Workbench widget: one diagnosis shown in five panels that share the selected node."""

from __future__ import annotations

import os
from pathlib import Path

import ipywidgets as widgets

import workbench
from workbench.diagnosis.result import Diagnosis
from workbench.ui import plots
from workbench.ui.error_plot import ErrorPlot
from workbench.ui.fixes import FixesPanel
from workbench.ui.graph_view import GraphPanel
from workbench.ui.inspector import InspectorPanel
from workbench.ui.overview import OverviewPanel
from workbench.ui.progress import busy_note
from workbench.ui.state import WorkbenchState
from workbench.ui.stats import NodeCatalog

TABS = ("Overview", "Error along the graph", "Node inspector", "Graph", "Fixes")
STYLE = """<style>
.wb-table { border-collapse: collapse; margin: 4px 0; }
.wb-table td, .wb-table th { border: 1px solid #d0d7de; padding: 2px 6px; text-align: right; }
.wb-table td:first-child, .wb-table th:first-child { text-align: left; }
.wb-tensors td, .wb-tensors th { white-space: nowrap; font-size: 0.85em; padding: 1px 4px; }
.wb-compare td { vertical-align: top; text-align: left; padding: 4px 8px; border: 1px solid #d0d7de; }
</style>"""


class Workbench:
    """Diagnose `model` against `candidate` (default: its FP16 conversion) and show the result.

    `inputs` and keyword options are those of `workbench.diagnose`. While it runs, a notebook shows a
    plain HTML progress line that is blanked afterwards (tqdm's widget bars would stay in the saved
    notebook as broken widgets), so `progress` is ignored.
    In a notebook, leave the Workbench as a cell's last expression (or `display` it).
    """

    def __init__(self, model, candidate=None, inputs=None, **diagnose_options):
        diagnose_options["progress"] = False
        with busy_note(f"Diagnosing {_model_name(model)}: both models run node by node…"):
            diagnosis = workbench.diagnose(model, candidate, inputs=inputs, **diagnose_options)
        self._build(diagnosis)

    @classmethod
    def from_diagnosis(cls, diagnosis: Diagnosis) -> "Workbench":
        bench = cls.__new__(cls)
        bench._build(diagnosis)
        return bench

    @classmethod
    def from_sweep(cls, result):  # the Sweep tab (ui/sweep_tab.py): an input opened there fills the other tabs
        from workbench.ui.sweep_tab import SweepWorkbench
        return SweepWorkbench(result)

    def _build(self, diagnosis: Diagnosis) -> None:
        self.diagnosis = diagnosis
        self.state = WorkbenchState()
        self.catalog = NodeCatalog(diagnosis)
        self.overview = OverviewPanel(diagnosis, on_inspect=self.inspect)
        self.error_plot = ErrorPlot.of(diagnosis)
        # The same figure as a picture, for saving and for notebooks rendered without widgets (nbconvert, CI).
        self.static_plot = widgets.Image(value=plots.figure_png(plots.error_along_graph(diagnosis)), format="png",
                                         layout=widgets.Layout(max_width="960px"))
        static = widgets.Accordion(children=[self.static_plot], titles=("Static figure (PNG)",), selected_index=None)
        self.inspector = InspectorPanel(diagnosis, self.state, self.catalog)
        self.graph = GraphPanel(diagnosis, self.state)
        self.fixes = FixesPanel(diagnosis, self.state)
        plot_panel = widgets.VBox([self.error_plot, static])
        panels = [self.overview.widget, plot_panel, self.inspector.widget, self.graph.widget, self.fixes.widget]
        self.tabs = widgets.Tab(children=panels, titles=TABS)
        self.tabs.observe(self._on_tab, "selected_index")
        self.widget = widgets.VBox([widgets.HTML(STYLE), self.tabs])
        self._node_names = {c.node for c in diagnosis.nodes}
        self.state.observe(self._on_node, "node")
        self.error_plot.observe(self._on_plot_pick, "selected")
        findings = diagnosis.roots + diagnosis.warnings
        if findings:
            self.state.node = findings[0].node

    def inspect(self, node: str) -> None:
        """Select `node` and open the node inspector."""
        self.state.node = node
        self.tabs.selected_index = TABS.index("Node inspector")

    def _on_tab(self, change) -> None:
        if change["new"] == TABS.index("Graph"):
            self.graph.activate()
        else:
            self.graph.deactivate()

    def _on_node(self, change) -> None:
        self.error_plot.selected = change["new"]

    def _on_plot_pick(self, change) -> None:
        """A node clicked in the error plot becomes the selection (every tab follows)."""
        if change["new"] in self._node_names:
            self.state.node = change["new"]

    def _ipython_display_(self) -> None:
        from IPython.display import display

        display(self.widget)

    def __repr__(self) -> str:
        return f"Workbench({self.diagnosis.summary()})"


def _model_name(model) -> str:
    if isinstance(model, (str, os.PathLike)):
        return Path(model).name
    name = getattr(model, "name", None)  # a workbench Model; a ModelProto has none
    return name if isinstance(name, str) and name else "the model"
