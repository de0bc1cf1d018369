"""Overview: the verdict, the output errors, the roots with their explanations, the warnings."""

from __future__ import annotations

import html
import re
from typing import Callable

import ipywidgets as widgets

from workbench.diagnosis.result import Diagnosis, Finding

VERDICT_COLOURS = {"ok": "#1a7f37", "nonfinite": "#cf222e", "divergent": "#bf8700"}
VERDICT_WORDS = {
    "ok": "the candidate matches the reference within tolerance",
    "nonfinite": "the candidate's outputs hold NaN or inf where the reference's are finite",
    "divergent": "the candidate's outputs are finite but beyond tolerance",
}


def verdict_html(diagnosis: Diagnosis, timing: bool = True) -> str:
    colour = VERDICT_COLOURS[diagnosis.verdict]
    seconds = f", {diagnosis.stats['seconds']:.1f} s" if timing and "seconds" in diagnosis.stats else ""
    return (
        f"<div style='font-size:1.3em'><b style='color:{colour}' class='wb-verdict'>{diagnosis.verdict.upper()}</b> "
        f"<span>{html.escape(VERDICT_WORDS[diagnosis.verdict])}</span></div>"
        f"<div>{html.escape(diagnosis.candidate.name)} against {html.escape(diagnosis.reference.name)}, "
        f"{html.escape(diagnosis.engine_label)}{seconds}</div>"
    )


def outputs_html(diagnosis: Diagnosis) -> str:
    rows = "".join(
        f"<tr><td><code>{html.escape(name)}</code></td><td>{d.rel_l2:.3g}</td><td>{d.max_abs:.3g}</td>"
        f"<td>{d.nonfinite}</td><td>{'ok' if d.ok else '<b>no</b>'}</td></tr>"
        for name, d in diagnosis.outputs.items()
    )
    first = diagnosis.first_nonfinite
    first_line = f"<p>First non-finite value at node <code>{html.escape(first)}</code>.</p>" if first else ""
    return (
        "<table class='wb-table'><tr><th>output</th><th>rel-L2</th><th>max |diff|</th><th>non-finite</th>"
        f"<th>within tolerance</th></tr>{rows}</table>{first_line}"
    )


def finding_html(finding: Finding, label: str) -> str:
    return (
        f"<div class='wb-finding'><b>{label}</b> <code>{html.escape(finding.kind)}</code> at "
        f"<code>{html.escape(finding.node)}</code> ({html.escape(finding.op_type)}): {prose_html(finding.explanation)}</div>"
    )


class OverviewPanel:
    """The verdict and findings; each finding has a button that opens it in the node inspector."""

    def __init__(self, diagnosis: Diagnosis, on_inspect: Callable[[str], None]):
        self.on_inspect = on_inspect
        self.inspect_buttons: list[widgets.Button] = []
        parts = [widgets.HTML(verdict_html(diagnosis)), widgets.HTML(outputs_html(diagnosis))]
        parts += self._findings("Root cause", diagnosis.roots, "danger")
        parts += self._findings("Warning", diagnosis.warnings, "warning")
        if not diagnosis.roots and not diagnosis.warnings:
            parts.append(widgets.HTML("<p>No root cause and no warning.</p>"))
        self.widget = widgets.VBox(parts)

    def _findings(self, label: str, findings: tuple[Finding, ...], style: str) -> list[widgets.Widget]:
        rows = []
        for finding in findings:
            button = widgets.Button(description=f"Inspect {finding.node}", button_style=style,
                                    tooltip=f"open {finding.node} in the node inspector",
                                    layout=widgets.Layout(width="auto", flex="0 0 auto"))
            button.on_click(lambda _, node=finding.node: self.on_inspect(node))
            self.inspect_buttons.append(button)
            rows.append(widgets.HBox([button, widgets.HTML(finding_html(finding, label))]))
        return rows


def prose_html(text: str) -> str:
    """A report sentence as HTML: escaped, and its `names` in code font, as the CLI's backticks mean."""
    return re.sub(r"`([^`]+)`", r"<code>\1</code>", html.escape(text))
