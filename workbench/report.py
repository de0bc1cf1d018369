"""The diagnosis: what the CLI prints as JSON and what notebooks and widgets show."""

from __future__ import annotations

import html
import re
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from workbench.compare import TensorDiff
from workbench.model import Model


@dataclass(frozen=True)
class Finding:
    """A node that makes a fault of its own: a root (it harms the outputs) or a warning (it does not)."""

    node: str
    op_type: str
    kind: str
    explanation: str
    harmful: bool
    local: TensorDiff  # the node's own error: run in candidate precision on the reference's inputs
    output_effect: float  # worst output rel-L2 when only this fault is put into the FP32 run
    absorbed_by: str | None = None  # for a harmless one: the node after which the fault is gone
    fixes: tuple = ()  # workbench.fixes.Fix objects that address it, the least FP32 first (roots only)

    def to_dict(self) -> dict:
        result = {"node": self.node, "op_type": self.op_type, "kind": self.kind, "explanation": self.explanation}
        if self.fixes:
            result["fixes"] = [fix.to_dict() for fix in self.fixes]
        return result


@dataclass(frozen=True)
class NodeComparison:
    """One candidate node: how far its outputs are from the reference, in graph order."""

    node: str
    op_type: str
    outputs: dict[str, TensorDiff]  # candidate output name -> diff against its aligned reference tensor
    local: TensorDiff | None  # own error, computed where the output disagrees or a constant input is lossy

    @property
    def worst(self) -> TensorDiff | None:
        if not self.outputs:
            return None
        return max(self.outputs.values(), key=lambda d: (d.nonfinite, d.rel_l2))


@dataclass(frozen=True)
class Diagnosis:
    verdict: str  # "ok" | "nonfinite" | "divergent"
    roots: tuple[Finding, ...]
    warnings: tuple[Finding, ...]
    first_nonfinite: str | None
    outputs: dict[str, TensorDiff]
    mode: str  # "faithful" | "runtime"
    reference: Model = field(repr=False)
    candidate: Model = field(repr=False)
    nodes: tuple[NodeComparison, ...] = field(repr=False, default=())
    feed: dict[str, np.ndarray] = field(repr=False, default_factory=dict)
    reference_values: dict[str, np.ndarray] = field(repr=False, default_factory=dict)
    candidate_values: dict[str, np.ndarray] = field(repr=False, default_factory=dict)
    alignment: dict[str, str] = field(repr=False, default_factory=dict)  # candidate tensor -> reference tensor
    stats: dict[str, float] = field(repr=False, default_factory=dict)  # seconds, forward passes, node runs, sessions built
    # What a later diagnosis of a fixed variant reuses (workbench.diagnose.rediagnose):
    options: Any = field(repr=False, default=None)  # the DiagnoseOptions it ran with
    conversion: Any = field(repr=False, default=None)  # fp16.ConversionStats when the workbench made the candidate
    candidate_given: bool = field(repr=False, default=False)  # False: the candidate is the workbench's own conversion
    reference_index: Any = field(repr=False, default=None, compare=False)  # GraphIndex of the reference
    runners: tuple = field(repr=False, default=(), compare=False)  # (reference, candidate) NodeRunners

    @property
    def fixes(self) -> tuple:
        """Every root's proposed fixes, in root order, without repeats."""
        return tuple(dict.fromkeys(fix for root in self.roots for fix in root.fixes))

    def to_dict(self) -> dict:
        """The stable JSON contract of `workbench diagnose --json`."""
        return {
            "verdict": self.verdict,
            "roots": [f.to_dict() for f in self.roots],
            "warnings": [{k: v for k, v in f.to_dict().items() if k != "op_type"} for f in self.warnings],
            "first_nonfinite": self.first_nonfinite,
            "outputs": {
                name: {"rel_l2": _json_float(d.rel_l2), "max_abs": _json_float(d.max_abs), "nonfinite": d.nonfinite}
                for name, d in self.outputs.items()
            },
            "mode": self.mode,
        }

    def __repr__(self) -> str:
        return self.summary()

    def summary(self) -> str:
        lines = [f"{self.candidate.name} against {self.reference.name} ({self.mode} FP16): {self.verdict.upper()}"]
        for name, diff in self.outputs.items():
            lines.append(f"  output {name}: rel-L2 {diff.rel_l2:.3g}, max |diff| {diff.max_abs:.3g}, non-finite {diff.nonfinite}")
        if self.first_nonfinite:
            lines.append(f"  first non-finite value at node {self.first_nonfinite}")
        for root in self.roots:
            lines.append(f"  ROOT {root.kind}: {root.explanation}")
            lines += [f"    fix {fix.name}: {fix.description}" for fix in root.fixes]
        lines += [f"  warning {f.kind}: {f.explanation}" for f in self.warnings]
        if self.verdict == "ok" and not self.roots:
            lines.append("  no root cause: the candidate matches the reference within tolerance")
        return "\n".join(lines)

    def _repr_html_(self) -> str:
        """The summary's content as HTML: every line of `summary()` has its counterpart here."""
        colour = {"ok": "#1a7f37", "nonfinite": "#cf222e", "divergent": "#bf8700"}[self.verdict]
        rows = "".join(
            f"<tr><td><code>{html.escape(n)}</code></td><td>{d.rel_l2:.3g}</td><td>{d.max_abs:.3g}</td><td>{d.nonfinite}</td>"
            f"<td>{'yes' if d.ok else '<b>no</b>'}</td></tr>"
            for n, d in self.outputs.items()
        )
        items = []
        if self.first_nonfinite:
            items.append(f"<li>first non-finite value at node <code>{html.escape(self.first_nonfinite)}</code></li>")
        for root in self.roots:
            fixes = "".join(f"<li>fix <code>{html.escape(fix.name)}</code>: {_prose_html(fix.description)}</li>"
                            for fix in root.fixes)
            items.append(f"<li><b style='color:#cf222e'>ROOT</b> <code>{html.escape(root.kind)}</code>: "
                         f"{_prose_html(root.explanation)}{f'<ul>{fixes}</ul>' if fixes else ''}</li>")
        items += [f"<li><b>warning</b> <code>{html.escape(f.kind)}</code>: {_prose_html(f.explanation)}</li>"
                  for f in self.warnings]
        if self.verdict == "ok" and not self.roots:
            items.append("<li>no root cause: the candidate matches the reference within tolerance</li>")
        elif not self.roots and not self.warnings:
            items.append("<li>no root cause found</li>")
        return (
            f"<div><p><b style='color:{colour}'>{self.verdict.upper()}</b> "
            f"{html.escape(self.candidate.name)} against {html.escape(self.reference.name)} ({html.escape(self.mode)} FP16)</p>"
            "<table><tr><th>output</th><th>rel-L2</th><th>max |diff|</th><th>non-finite</th><th>within tolerance</th></tr>"
            f"{rows}</table><ul>{''.join(items)}</ul></div>"
        )


def _prose_html(text: str) -> str:
    """A report sentence as HTML: escaped, its `names` (backticks, as the text repr writes them) in code font."""
    return re.sub(r"`([^`]+)`", r"<code>\1</code>", html.escape(text))


def _json_float(value: float) -> float | None:
    """JSON has no inf or NaN: an unbounded error (shape mismatch, nothing finite to compare) is null."""
    return float(value) if np.isfinite(value) else None
