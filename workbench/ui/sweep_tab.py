"""The Sweep tab: per-input output error, the roots grouped across inputs, and a table of inputs.

`SweepTab(result, on_open)` is the panel alone: clicking an input calls `on_open(input_id)`.
`SweepWorkbench(result)` puts it first among the Workbench's tabs: an input clicked there is diagnosed
and its diagnosis fills the other tabs.
"""

from __future__ import annotations

import html
import math
from typing import Callable

import ipywidgets as widgets
import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from workbench.sweep import SweepResult

ERROR_FLOOR = 1e-8  # exact matches are drawn here: a log axis has no 0
MAX_ROWS = 200  # inputs listed in the table, worst first
PASS_COLOUR, FAIL_COLOUR, NONFINITE_COLOUR = "#1a7f37", "#cf222e", "#bf8700"


def draw_error_histogram(axis: Axes, records, tolerance: float) -> None:
    """Inputs by worst output rel-L2 on log bins, failing ones stacked in red; non-finite inputs in a bar of their own."""
    finite = [r for r in records if not r["nonfinite"] and r["worst_rel_l2"] is not None]
    unbounded = len(records) - len(finite)
    values = np.array([max(r["worst_rel_l2"], ERROR_FLOOR) for r in finite] or [ERROR_FLOOR])
    high = max(values.max(), tolerance) * 10
    low = max(ERROR_FLOOR, values.min() / 10)
    bins = np.logspace(math.log10(low), math.log10(high), 40)
    failed = np.array([r["failed"] for r in finite] or [False])
    series = [values[~failed], values[failed]] if finite else [[], []]
    axis.hist(series, bins=bins, stacked=True, color=[PASS_COLOUR, FAIL_COLOUR], label=["pass", "fail"], gid="error-histogram")
    if unbounded:
        axis.bar(high * 3, unbounded, width=high * 3, color=NONFINITE_COLOUR, label=f"non-finite ({unbounded})", gid="nonfinite-bar")
    axis.axvline(tolerance, color="#6e7781", ls=":", lw=1, label=f"tolerance {tolerance:g}", gid="tolerance")
    axis.set_xscale("log")
    axis.set_xlabel("worst output rel-L2 vs FP32 (exact at 1e-8)")
    axis.set_ylabel("inputs")
    axis.legend(fontsize="small")


def error_histogram(result: SweepResult, figsize=(8, 3.2)) -> Figure:
    figure = Figure(figsize=figsize, layout="constrained")
    axis = figure.subplots()
    draw_error_histogram(axis, result.records, result.tolerance)
    axis.set_title(f"{len(result.failures):,} of {len(result.records):,} inputs fail")
    return figure


def groups_html(result: SweepResult) -> str:
    if not result.groups:
        return "<p>No input fails: no root to group.</p>"
    rows = "".join(
        f"<tr><td><code>{html.escape(g.node or '(no root named)')}</code></td><td>{html.escape(g.kind or '')}</td>"
        f"<td>{len(g.inputs):,}</td><td>{100 * g.fraction:.1f}%</td><td>{html.escape(g.shared)}</td></tr>"
        for g in result.groups
    )
    return ("<table class='wb-table wb-sweep-groups'><tr><th>root</th><th>kind</th><th>inputs</th><th>share</th>"
            f"<th>what they share</th></tr>{rows}</table>")


class SweepTab:
    """The panel: histogram, root groups, and one row per input (worst first) whose button opens it."""

    def __init__(self, result: SweepResult, on_open: Callable[[str], None] | None = None):
        self.result, self.on_open = result, on_open
        self.selected: str | None = None
        from workbench.ui import plots

        self.histogram = widgets.Image(value=plots.figure_png(error_histogram(result)), format="png",
                                       layout=widgets.Layout(max_width="760px"))
        self.groups = widgets.HTML(groups_html(result))
        self.failing_only = widgets.Checkbox(value=bool(result.failures), description="failing inputs only")
        self.failing_only.observe(lambda _: self._fill_table(), "value")
        self.table = widgets.VBox()
        self.buttons: dict[str, widgets.Button] = {}
        self._fill_table()
        head = widgets.HTML(f"<b>{len(result.failures):,} of {len(result.records):,} inputs fail</b> "
                            f"({html.escape(result.source.description)}; tolerance rel-L2 {result.tolerance:g})"
                            + (f", {len(result.skipped)} skipped" if result.skipped else ""))
        self.widget = widgets.VBox([head, self.histogram, self.groups, self.failing_only, self.table])

    def open(self, input_id: str) -> None:
        self.selected = input_id
        for name, button in self.buttons.items():
            button.button_style = "info" if name == input_id else ""
        if self.on_open is not None:
            self.on_open(input_id)

    def _fill_table(self) -> None:
        from workbench.sweep.groups import severity

        records = self.result.failures if self.failing_only.value else self.result.records
        ordered = sorted(records, key=severity)[:MAX_ROWS]
        self.buttons = {r["id"]: self._button(r["id"]) for r in ordered}
        rows = [widgets.HBox([self.buttons[r["id"]], widgets.HTML(_row_html(r))]) for r in ordered]
        more = len(records) - len(ordered)
        if more > 0:
            rows.append(widgets.HTML(f"... and {more:,} more (the worst {MAX_ROWS} are listed)"))
        self.table.children = rows

    def _button(self, input_id: str) -> widgets.Button:
        button = widgets.Button(description=input_id, tooltip=f"diagnose {input_id}", layout=widgets.Layout(width="220px"))
        button.on_click(lambda _: self.open(input_id))
        return button


def _row_html(record: dict) -> str:
    colour = FAIL_COLOUR if record["failed"] else PASS_COLOUR
    worst = "inf" if record["worst_rel_l2"] is None else f"{record['worst_rel_l2']:.3g}"
    traits = record["traits"]
    notes = ["fully padded row"] if traits.get("fully_padded_row") else []
    if traits.get("sequence"):
        notes.append(f"{traits['sequence']} positions")
    task = record.get("task") or {}
    if task.get("ok") is False:
        notes.append(f"{task.get('name', 'task')} fails")
    return (f"<span style='color:{colour}'><b>{html.escape(record['verdict'])}</b></span> rel-L2 {worst}, "
            f"non-finite {record['nonfinite']}" + (f"; {html.escape(', '.join(notes))}" if notes else ""))


class SweepWorkbench:
    """The Sweep tab first; an input opened there is diagnosed, and its diagnosis fills the Workbench's tabs."""

    def __init__(self, result: SweepResult):
        from workbench.ui.app import STYLE

        self.result = result
        self.sweep = SweepTab(result, on_open=self.open)
        self.tabs = widgets.Tab(children=[self.sweep.widget], titles=("Sweep",))
        self.tabs.observe(self._on_tab, "selected_index")
        self.bench = None  # the Workbench of the input opened last
        self.widget = widgets.VBox([widgets.HTML(STYLE), self.tabs])
        self._diagnoses: dict = {}

    def open(self, input_id: str) -> None:
        from workbench.ui.app import TABS, Workbench

        if input_id not in self._diagnoses:
            self._diagnoses[input_id] = self.result.diagnose(input_id)
        self.bench = Workbench.from_diagnosis(self._diagnoses[input_id])
        self.bench.tabs.observe(self._on_bench_tab, "selected_index")
        self.tabs.children = (self.sweep.widget, *self.bench.tabs.children)
        self.tabs.titles = ("Sweep", *(f"{title}: {input_id}" if i == 0 else title for i, title in enumerate(TABS)))
        self.tabs.selected_index = 1

    def _on_tab(self, change) -> None:  # the Workbench's own tab logic (e.g. Netron starts on its tab) still runs
        if self.bench is not None and change["new"] and change["new"] >= 1:
            self.bench.tabs.selected_index = change["new"] - 1

    def _on_bench_tab(self, change) -> None:  # e.g. a root's button in the Overview opens the node inspector
        if change["new"] is not None:
            self.tabs.selected_index = change["new"] + 1

    def _ipython_display_(self) -> None:
        from IPython.display import display

        display(self.widget)
