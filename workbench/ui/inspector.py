"""Node inspector: pick a node (filtered list or the roots), see both runs' tensors side by side."""

from __future__ import annotations

import html

import ipywidgets as widgets

from workbench.compare.diff import TensorDiff
from workbench.diagnosis.result import Diagnosis
from workbench.ui import plots
from workbench.ui.node_list import NodeList
from workbench.ui.overview import prose_html
from workbench.ui.roles import COLOURS, HARMLESS, ROOT, VICTIM, node_roles
from workbench.ui.state import WorkbenchState
from workbench.ui.stats import (
    NodeCatalog,
    NodeDetail,
    TensorPair,
    TensorStats,
    constant_text,
)


class InspectorPanel:
    def __init__(self, diagnosis: Diagnosis, state: WorkbenchState, catalog: NodeCatalog):
        self.diagnosis, self.state, self.catalog = diagnosis, state, catalog
        self._all_nodes = catalog.nodes()
        self.roles = node_roles(diagnosis)
        self.filter = widgets.Text(placeholder="filter: node name or op type", description="Find",
                                   continuous_update=True)
        self.node_list = NodeList(items=self._items(""))
        self.root_buttons = [self._finding_button(f.node, "danger") for f in diagnosis.roots]
        self.warning_buttons = [self._finding_button(f.node, "warning") for f in diagnosis.warnings]
        self.detail = widgets.HTML("<p>Pick a node on the left, or a root above.</p>", layout=widgets.Layout(width="100%"))
        self.tensor_choice = widgets.Dropdown(description="Histogram", layout=widgets.Layout(width="420px"))
        self.histogram = widgets.Image(format="png", layout=widgets.Layout(max_width="720px"))
        self.filter.observe(self._on_filter, "value")
        self.node_list.observe(self._on_list_pick, "value")
        self.tensor_choice.observe(self._on_tensor_choice, "value")
        state.observe(self._on_node, "node")
        self.widget = self._layout()
        self._detail: NodeDetail | None = None

    # -- building -------------------------------------------------------------------------------
    def _layout(self) -> widgets.Widget:
        findings = widgets.HBox([widgets.HTML("<b>Roots:</b>" if self.root_buttons else "<b>No root.</b>")]
                                + self.root_buttons + self.warning_buttons)
        picker = widgets.VBox([self.filter, self.node_list])
        right = widgets.VBox([self.detail, self.tensor_choice, self.histogram],
                             layout=widgets.Layout(flex="1", overflow="auto", margin="0 0 0 12px"))
        return widgets.VBox([findings, widgets.HBox([picker, right])])

    def _finding_button(self, node: str, style: str) -> widgets.Button:
        button = widgets.Button(description=node, button_style=style, tooltip=f"inspect {node}",
                                layout=widgets.Layout(width="auto"))
        button.on_click(lambda _: self.select(node))
        return button

    def _items(self, text: str) -> list[list[str]]:
        needle = text.strip().lower()
        return [
            [name, op, self.roles.get(name, "clean")]
            for name, op in self._all_nodes
            if not needle or needle in name.lower() or needle in op.lower()
        ]

    # -- events ---------------------------------------------------------------------------------
    def select(self, node: str) -> None:
        self.state.node = node

    def _on_filter(self, change) -> None:
        self.node_list.items = self._items(change["new"])

    def _on_list_pick(self, change) -> None:
        if change["new"]:
            self.state.node = change["new"]

    def _on_node(self, change) -> None:
        name = change["new"]
        if not name:
            return
        if name not in self.node_list.names:
            self.filter.value = ""  # the node is filtered out: show the whole list again
        self.node_list.value = name
        self._detail = self.catalog.detail(name)
        self.detail.value = detail_html(self._detail, self.diagnosis)
        self._offer_tensors(self._detail)

    def _offer_tensors(self, detail: NodeDetail) -> None:
        floats = [t for t in detail.tensors if t.is_float]
        options = [(f"{t.role} {t.name}", t.name) for t in floats]
        default = next((t.name for t in floats if t.role == "output"), floats[0].name if floats else None)
        self.tensor_choice.options = options
        self.tensor_choice.value = default
        if default is None:
            self.histogram.value = b""

    def _on_tensor_choice(self, change) -> None:
        pair = next((t for t in self._detail.tensors if t.name == change["new"]), None) if self._detail else None
        if pair is None:
            return
        figure = plots.value_histogram(pair.reference, pair.candidate, f"{pair.role} {pair.name} of {self._detail.name}")
        self.histogram.value = plots.figure_png(figure)


def detail_html(detail: NodeDetail, diagnosis: Diagnosis) -> str:
    parts = [_heading_html(detail, diagnosis), _tensors_html(detail.tensors)]
    worst = "".join(_worst_html(t) for t in detail.tensors if t.diff is not None and not t.diff.ok)
    if worst:
        parts.append(f"<h4>Worst elements</h4>{worst}")
    if detail.constants:
        parts.append("<h4>Constant inputs</h4>" + "".join(_constant_html(t) for t in detail.constants))
    if detail.attributes:
        rows = "".join(f"<tr><td>{html.escape(k)}</td><td><code>{html.escape(v)}</code></td></tr>"
                       for k, v in detail.attributes.items())
        parts.append(f"<h4>Attributes</h4><table class='wb-table'>{rows}</table>")
    return "".join(parts)


def _heading_html(detail: NodeDetail, diagnosis: Diagnosis) -> str:
    role = node_roles(diagnosis).get(detail.name, "")
    badge = {ROOT: f" <b style='color:{COLOURS[ROOT]}'>ROOT CAUSE</b>",
             HARMLESS: f" <b style='color:{COLOURS[HARMLESS]}'>WARNING</b> <small>(harmless: outputs stay within tolerance)</small>",
             VICTIM: f" <b style='color:{COLOURS[VICTIM]}'>VICTIM</b> <small>(own error fine: passes on damage from upstream)</small>"}
    heading = (f"<h3 class='wb-node'><code>{html.escape(detail.name)}</code> · {html.escape(detail.op_type)}"
               f"{badge.get(role, '')}</h3>")
    explanations = [f for f in diagnosis.roots + diagnosis.warnings if f.node == detail.name]
    return heading + "".join(f"<p>{prose_html(f.explanation)}</p>" for f in explanations)


def _tensors_html(tensors: tuple[TensorPair, ...]) -> str:
    header = ("<tr><th>tensor</th><th>run</th><th>shape</th><th>dtype</th><th>min</th><th>max</th><th>mean</th>"
              "<th>non-finite</th><th>rel-L2</th></tr>")
    rows = []
    for t in tensors:
        name = html.escape(t.name) + (f" (FP32: {html.escape(t.reference_name)})"
                                      if t.reference_name and t.reference_name != t.name else "")
        diff = rel_l2_html(t.diff)
        kind = f"{t.role}{', constant' if t.constant else ''}"
        rows.append(f"<tr><td rowspan='2'><code>{name}</code><br><small>{kind}</small></td><td>FP32</td>"
                    f"{_stats_cells(t.reference_stats)}<td rowspan='2'>{diff}</td></tr>"
                    f"<tr><td>candidate</td>{_stats_cells(t.candidate_stats)}</tr>")
    return f"<div style='overflow-x:auto'><table class='wb-table wb-tensors'>{header}{''.join(rows)}</table></div>"


def rel_l2_html(diff: TensorDiff | None) -> str:
    """rel-L2 over the elements finite in both runs, and how many it leaves out (non-finite in the candidate only)."""
    if diff is None:
        return "–"
    text = f"{diff.rel_l2:.3g}" + ("" if diff.ok else " ✗")
    if diff.nonfinite:
        text += f"<br><small class='wb-nonfinite'>+ {diff.nonfinite} non-finite, not in the figure</small>"
    return text


def _stats_cells(stats: TensorStats | None) -> str:
    if stats is None:
        return "<td colspan='6'>not captured</td>"
    numbers = [_number(stats.min), _number(stats.max), _number(stats.mean)]
    nonfinite = ", ".join(f"{n} {label}" for n, label in ((stats.nan, "NaN"), (stats.posinf, "+inf"),
                                                          (stats.neginf, "-inf")) if n) or "0"
    return (f"<td>{stats.shape}</td><td>{stats.dtype}</td>" + "".join(f"<td>{n}</td>" for n in numbers)
            + f"<td>{nonfinite}</td>")


def _worst_html(pair: TensorPair) -> str:
    items = "".join(f"<li><code>{list(w.index)}</code>: FP32 {_number(w.reference)} → candidate {_number(w.candidate)}</li>"
                    for w in pair.worst)
    return f"<div><code>{html.escape(pair.name)}</code><ul>{items}</ul></div>" if items else ""


def _constant_html(pair: TensorPair) -> str:
    return (f"<div><code>{html.escape(pair.name)}</code>: FP32 {html.escape(constant_text(pair.reference))} → "
            f"candidate {html.escape(constant_text(pair.candidate))}</div>")


def _number(value: float | None) -> str:
    return "–" if value is None else f"{value:.4g}"
