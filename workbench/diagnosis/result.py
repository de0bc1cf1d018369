"""The diagnosis: what the CLI prints as JSON and what notebooks and widgets show."""

from __future__ import annotations

import html
import re
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from workbench.compare.diff import TensorDiff
from workbench.diagnosis import explain
from workbench.io.model import Model
from workbench.render.json import finite_or_none


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
    fixes: tuple = ()  # workbench.fixes.catalogue.Fix objects that address it, the least FP32 first (roots only)

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
    engines: tuple = field(repr=False, default=(), compare=False)  # (reference, candidate) workbench.engines
    tasks: dict = field(repr=False, default_factory=dict)  # output name -> workbench.task.checks TaskResult (issue 12)
    feed_origin: str | None = field(repr=False, default=None)  # what was generated when no inputs were given
    engine: str = "emulate"  # which engine computed the candidate: emulate | ort-kernels | runtime
    precision: str = "fp16"  # the candidate's low-precision format: fp16 | bf16 | fp8-e4m3 | fp8-e5m2
    notes: tuple[str, ...] = ()  # what was done to make the models runnable (an old opset converted, ...)

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
            "outputs": {name: self._output_dict(name, d) for name, d in self.outputs.items()},
            "mode": self.mode,
            "engine": self.engine,
            "precision": self.precision,
        }

    def _output_dict(self, name: str, diff: TensorDiff) -> dict:
        result = {"rel_l2": finite_or_none(diff.rel_l2), "max_abs": finite_or_none(diff.max_abs), "nonfinite": diff.nonfinite}
        # Added with issue 12: the worst slice (batch row, Concat part) and the task check, or null.
        result["worst_slice"] = diff.worst_slice.to_dict() if diff.worst_slice is not None else None
        result["task"] = self.tasks[name].to_dict() if name in self.tasks else None
        return result

    def output_line(self, name: str) -> str:
        """`divergent (rel-L2 0.018, ...), task ok: same top-1 at 100% of 80 positions`."""
        diff = self.outputs[name]
        state = "nonfinite" if diff.nonfinite else ("ok" if diff.ok else "divergent")
        text = f"{state} (rel-L2 {diff.rel_l2:.3g}, max |diff| {diff.max_abs:.3g}, non-finite {diff.nonfinite})"
        worst = diff.worst_slice
        if worst is not None and not diff.ok and worst.rel_l2 > diff.rel_l2:
            rank = np.ndim(self.reference_values[name]) if name in self.reference_values else None
            text += f", worst: {explain.name_slice(name, worst, rank)} at rel-L2 {worst.rel_l2:.3g}"
        result = self.tasks.get(name)
        if result is None:
            return text + ", task: none recognised (fix --task picks one)"
        return text + f", task {'ok' if result.ok else 'broken'}: {result.lines[0] if result.lines else result.name}"

    def __repr__(self) -> str:
        return self.summary()

    def summary(self) -> str:
        lines = [f"{self.candidate.name} against {self.reference.name} ({self.engine_label}): {self.verdict.upper()}"]
        lines += [f"  note: {note}" for note in self.notes]
        lines += [f"  output {name}: {self.output_line(name)}" for name in self.outputs]
        if self.feed_origin:
            lines.append(f"  inputs {self.feed_origin}")
        if self.first_nonfinite:
            lines.append(f"  first non-finite value at node {self.first_nonfinite}")
        for root in self.roots:
            lines.append(f"  ROOT {root.kind}: {root.explanation}")
            lines += [f"    fix {fix.name}: {fix.description}" for fix in root.fixes]
        lines += [f"  warning {f.kind}: {f.explanation}" for f in self.warnings]
        if self.verdict == "ok" and not self.roots:
            lines.append("  no root cause: the candidate matches the reference within tolerance")
        return "\n".join(lines)

    @property
    def engine_label(self) -> str:
        from workbench.engines import ENGINE_LABELS
        from workbench.formats import PRECISIONS

        return ENGINE_LABELS[self.engine].format(label=PRECISIONS[self.precision].label)

    def _repr_html_(self) -> str:
        """The summary's content as HTML: every line of `summary()` has its counterpart here."""
        colour = {"ok": "#1a7f37", "nonfinite": "#cf222e", "divergent": "#bf8700"}[self.verdict]
        rows = "".join(
            f"<tr><td><code>{html.escape(n)}</code></td><td>{d.rel_l2:.3g}</td><td>{d.max_abs:.3g}</td><td>{d.nonfinite}</td>"
            f"<td>{'yes' if d.ok else '<b>no</b>'}</td><td>{_prose_html(self.output_line(n))}</td></tr>"
            for n, d in self.outputs.items()
        )
        items = [f"<li>note: {html.escape(note)}</li>" for note in self.notes]
        if self.feed_origin:
            items.append(f"<li>inputs {_prose_html(self.feed_origin)}</li>")
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
            f"{html.escape(self.candidate.name)} against {html.escape(self.reference.name)} ({html.escape(self.engine_label)})</p>"
            "<table><tr><th>output</th><th>rel-L2</th><th>max |diff|</th><th>non-finite</th><th>within tolerance</th>"
            "<th>verdict, worst slice, task</th></tr>"
            f"{rows}</table><ul>{''.join(items)}</ul></div>"
        )


def _prose_html(text: str) -> str:
    """A report sentence as HTML: escaped, its `names` (backticks, as the text repr writes them) in code font."""
    return re.sub(r"`([^`]+)`", r"<code>\1</code>", html.escape(text))

