"""Apply fixes and re-verify: the fixed FP16 variant diagnosed again against the same reference.

    report = workbench.diagnose("model.onnx", inputs="feed.npz")
    result = workbench.apply_fixes(report, report.fixes[:1])    # -> Verification
    result.ok, result.before.verdict, result.after.verdict, result.save("fixed.onnx")

Re-verification reuses the reference's captured tensors, so it costs one faithful FP16
pass of the fixed model plus one partial FP32 pass per suspect it still finds.
"""

from __future__ import annotations

import html
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
from onnx import TensorProto

from workbench import fixes as fix_catalogue
from workbench.diagnose import rediagnose
from workbench.errors import WorkbenchError
from workbench.fixes import Fix
from workbench.fp16 import ConversionStats
from workbench.graph import GraphIndex
from workbench.model import Model
from workbench.report import Diagnosis, _json_float
from workbench.save import save_model


@dataclass(frozen=True)
class Attempt:
    """One try of the automatic fix: the fixes in force and what verification said."""

    fixes: tuple[Fix, ...]
    verdict: str  # "ok" | "nonfinite" | "divergent" | "failed" (the variant did not run)
    worst_rel_l2: float
    error: str | None = None
    runs: int = 0  # model runs spent by the search once this attempt was verified
    move: str = ""  # "proposal" (a root's next fix) | "growth" (the kept region grew) | "shrink" | "user"
    kept_fp32: int = 0  # nodes computing in FP32 in this attempt
    fp16_weight_fraction: float = 1.0

    def to_dict(self) -> dict:
        return {
            "fixes": [f"{fix.name} {_target(fix)}" for fix in self.fixes],
            "verdict": self.verdict,
            "worst_rel_l2": _json_float(self.worst_rel_l2),
            "error": self.error,
            "runs": self.runs,
            "move": self.move,
            "kept_fp32": self.kept_fp32,
            "fp16_weight_fraction": round(self.fp16_weight_fraction, 4),
        }


@dataclass(frozen=True)
class Verification:
    """A fixed FP16 variant and its re-verification, with the diagnosis from before the fixes."""

    before: Diagnosis
    after: Diagnosis
    fixes: tuple[Fix, ...]
    runs: int  # model forward passes (full or partial) spent since the model was loaded, `before` included
    attempts: tuple[Attempt, ...] = ()
    task: object | None = None  # a workbench.task TaskResult, when a task-level check was asked for
    budget: int | None = None  # the automatic fix's run budget (None: fixes applied by hand)

    @property
    def model(self) -> Model:
        return self.after.candidate

    @property
    def conversion(self) -> ConversionStats | None:
        """What the FP16 conversion of the fixed model did (None for a candidate the user gave)."""
        return self.after.conversion

    @property
    def ok(self) -> bool:
        return self.after.verdict == "ok" and (self.task is None or bool(self.task.ok))

    @property
    def kept_fp32(self) -> tuple[str, ...]:
        """Nodes that compute in FP32; the Constants that only feed them their FP32 weights are not counted."""
        if not self.conversion:
            return ()
        index = GraphIndex.of(self.model)
        return tuple(n for n in self.conversion.kept_fp32 if n not in index.node_by_name or not _weights_only(index, n))

    @property
    def verified_by(self) -> dict[str, bool]:
        """Which engine accepted the fixed model: {engine name: outputs within tolerance}."""
        return {self.after.mode: self.after.verdict == "ok"}

    @property
    def clamped(self) -> tuple[str, ...]:
        """Constants whose values the fixes moved into FP16's range (clamped, mask to -1e4, eps raised)."""
        names = [name for fix in self.fixes for name in fix.constants_changed()]
        clamped_by_conversion = list(self.conversion.clamped) if self.conversion else []
        return tuple(dict.fromkeys(names + clamped_by_conversion))

    @property
    def fp16_weight_fraction(self) -> float:
        return fp16_weight_fraction(self.model)

    def check_task(self, task) -> "Verification":
        """This verification with a task-level check (workbench.task) on the model outputs added."""
        names = self.after.reference.graph.output
        reference = {o.name: self.after.reference_values[o.name] for o in names}
        candidate = {o.name: self.after.candidate_values[o.name] for o in names if o.name in self.after.candidate_values}
        return replace(self, task=task.check(self.after.feed, reference, candidate))

    def save(self, path: "str | Path") -> Path:
        """Write the fixed model (weights beside it above 2 GB); never over the reference's file."""
        protect = [p for p in (self.before.reference.path, self.before.candidate.path) if p is not None]
        return save_model(self.model, Path(path), protect=protect)

    def to_dict(self) -> dict:
        """The JSON of `workbench fix --json`."""
        after = self.after.to_dict()
        return {
            "ok": self.ok,
            "verdict": self.after.verdict,
            "kept_fp32": list(self.kept_fp32),
            "clamped": list(self.clamped),
            "fixes": [fix.to_dict() for fix in self.fixes],
            "outputs": after["outputs"],
            "roots": after["roots"],
            "before": {"verdict": self.before.verdict, "outputs": self.before.to_dict()["outputs"]},
            "runs": self.runs,
            "run_budget": self.budget,
            "budget_spent": self.budget is not None and self.runs >= self.budget and not self.ok,
            "verified_by": self.verified_by,
            "attempts": [attempt.to_dict() for attempt in self.attempts],
            "fp16_weight_fraction": round(self.fp16_weight_fraction, 4),
            "task": self.task.to_dict() if self.task is not None else None,
            "mode": self.after.mode,
        }

    def __repr__(self) -> str:
        return self.summary()

    def summary(self) -> str:
        status = "OK" if self.ok else "NOT FIXED"
        budget = f" (budget {self.budget}{', spent' if self.runs >= self.budget else ''})" if self.budget is not None else ""
        tried = f", {len(self.attempts)} attempt(s)" if self.attempts else ""
        lines = [f"{self.model.name}: {status} after {len(self.fixes)} fix(es), {self.runs} model runs{budget}{tried}"]
        lines += [f"  fix {fix.name}: {fix.description}" for fix in self.fixes]
        for name, after in self.after.outputs.items():
            before = self.before.outputs[name]
            lines.append(
                f"  output {name}: rel-L2 {before.rel_l2:.3g} -> {after.rel_l2:.3g}, non-finite {before.nonfinite} -> {after.nonfinite}"
            )
        lines.append(
            f"  {len(self.kept_fp32)} nodes kept in FP32, {len(self.clamped)} constants changed, "
            f"{self.fp16_weight_fraction:.1%} of float weights in FP16"
        )
        lines += [f"  still ROOT {f.kind}: {f.explanation}" for f in self.after.roots]
        if self.task is not None:
            lines += ["  " + line for line in self.task.summary().splitlines()]
        return "\n".join(lines)

    def _repr_html_(self) -> str:
        colour = "#1a7f37" if self.ok else "#cf222e"
        rows = "".join(
            f"<tr><td><code>{html.escape(name)}</code></td><td>{self.before.outputs[name].rel_l2:.3g}</td>"
            f"<td>{after.rel_l2:.3g}</td><td>{self.before.outputs[name].nonfinite}</td><td>{after.nonfinite}</td></tr>"
            for name, after in self.after.outputs.items()
        )
        applied = "".join(f"<li><code>{html.escape(f.name)}</code>: {html.escape(f.description)}</li>" for f in self.fixes)
        return (
            f"<div><p><b style='color:{colour}'>{'OK' if self.ok else 'NOT FIXED'}</b> "
            f"{html.escape(self.model.name)}: {self.before.verdict} -> {self.after.verdict}, {self.runs} model runs, "
            f"{len(self.kept_fp32)} nodes in FP32, {self.fp16_weight_fraction:.1%} of weights FP16</p>"
            f"<ul>{applied or '<li>no fixes</li>'}</ul>"
            "<table><tr><th>output</th><th>rel-L2 before</th><th>after</th><th>non-finite before</th><th>after</th></tr>"
            f"{rows}</table></div>"
        )


def apply_fixes(
    before: Diagnosis,
    fixes: Sequence[Fix],
    runs_so_far: int | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> Verification:
    """Apply `fixes` (in order) to `before`'s reference, convert to FP16 and diagnose the result again.

    Fixes always start from the FP32 reference and the workbench's FP16 conversion (with
    `before`'s conversion options), so undoing one is applying the list without it.
    `progress(done, total)` follows the re-verification node by node (for a progress bar).
    """
    fixes = tuple(fixes)
    for fix in fixes:
        if not isinstance(fix, Fix):
            raise WorkbenchError(f"{fix!r} is not a fix; take fixes from a diagnosis' roots or workbench.fixes.")
    candidate, stats = fix_catalogue.apply(before.reference, fixes, before.options.fp16)
    after = rediagnose(before, candidate, stats, progress)
    spent = before.stats.get("forward_passes", 0) if runs_so_far is None else runs_so_far
    return Verification(before, after, fixes, spent + after.stats["forward_passes"])


def fp16_weight_fraction(model: Model) -> float:
    """Share of float weight elements stored as FP16 (1.0: every weight FP16).

    Weights are initializers and Constant nodes' tensors (paddle2onnx stores every weight as a Constant).
    """
    fp16 = total = 0
    tensors = list(model.graph.initializer) + [
        attr.t for node in model.graph.node if node.op_type == "Constant" for attr in node.attribute if attr.name == "value"
    ]
    for tensor in tensors:
        if tensor.data_type in (TensorProto.FLOAT, TensorProto.FLOAT16, TensorProto.DOUBLE):
            count = int(np.prod(tensor.dims))
            total += count
            fp16 += count if tensor.data_type == TensorProto.FLOAT16 else 0
    return fp16 / total if total else 1.0


def _weights_only(index: GraphIndex, name: str) -> bool:
    """A node that computes nothing but constants (a Constant, a Reshape of a weight)."""
    return index.produces_constants(index.node_by_name[name])


def _target(fix: Fix) -> str:
    for attribute in ("tensors", "nodes", "node", "op_type"):
        value = getattr(fix, attribute, None)
        if value:
            return ",".join(value) if isinstance(value, tuple) else str(value)
    return ""
