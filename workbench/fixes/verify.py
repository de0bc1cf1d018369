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

from workbench.compare.diff import TensorDiff, verdict
from workbench.convert.low_precision import ConversionStats
from workbench.diagnosis.result import Diagnosis
from workbench.diagnosis.search import outputs_on, rediagnose
from workbench.errors import WorkbenchError
from workbench.fixes import catalogue as fix_catalogue
from workbench.fixes.catalogue import Fix
from workbench.io.model import Model
from workbench.io.save import save_model
from workbench.ir.graph import GraphIndex
from workbench.render.json import finite_or_none


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
            "worst_rel_l2": finite_or_none(self.worst_rel_l2),
            "error": self.error,
            "runs": self.runs,
            "move": self.move,
            "kept_fp32": self.kept_fp32,
            "fp16_weight_fraction": round(self.fp16_weight_fraction, 4),
        }


# The engine that judges a verified model a second time: the other arithmetic (issue 11).
OTHER_ENGINE = {"emulate": "ort-kernels", "ort-kernels": "emulate", "runtime": "emulate"}
NOT_AVAILABLE = "not available"


@dataclass(frozen=True)
class EngineVerdict:
    """What one engine says of the fixed model's outputs."""

    engine: str
    verdict: str  # "ok" | "nonfinite" | "divergent" | "not available" (the engine cannot compute this model)
    worst_rel_l2: float | None = None
    reason: str | None = None  # why not available

    @classmethod
    def of(cls, engine: str, outputs: dict[str, TensorDiff]) -> "EngineVerdict":
        return cls(engine, verdict(outputs), worst_rel_l2(outputs))

    def to_dict(self) -> dict:
        figure = None if self.worst_rel_l2 is None else finite_or_none(self.worst_rel_l2)
        entry = {"verdict": self.verdict, "worst_rel_l2": figure}
        return entry if self.reason is None else {**entry, "reason": self.reason}

    def describe(self) -> str:
        if self.verdict == NOT_AVAILABLE:
            return f"{self.engine}: {NOT_AVAILABLE}: {self.reason}"
        return f"{self.engine}: {self.verdict} (worst rel-L2 {self.worst_rel_l2:.3g})"


def second_opinion(after: Diagnosis) -> EngineVerdict:
    """The other engine's verdict on `after`'s candidate, or why it cannot give one."""
    engine = OTHER_ENGINE[after.engine]
    try:
        return EngineVerdict.of(engine, outputs_on(after, engine))
    except WorkbenchError as exc:
        # The first clause: the advice after it ("use --engine emulate") is for whoever chose that engine.
        return EngineVerdict(engine, NOT_AVAILABLE, reason=" ".join(str(exc).split(";")[0].split()))
    except Exception as exc:  # noqa: BLE001  a second opinion that breaks must not cost the verified fix
        return EngineVerdict(engine, NOT_AVAILABLE, reason=f"{engine} failed: {type(exc).__name__}: {' '.join(str(exc).split())[:200]}")


@dataclass(frozen=True)
class Verification:
    """A fixed FP16 variant and its re-verification, with the diagnosis from before the fixes."""

    before: Diagnosis
    after: Diagnosis
    fixes: tuple[Fix, ...]
    runs: int  # model forward passes (full or partial) spent since the model was loaded, `before` included
    attempts: tuple[Attempt, ...] = ()
    task: object | None = None  # a workbench.task.checks TaskResult, when a task-level check was asked for
    budget: int | None = None  # the automatic fix's run budget (None: fixes applied by hand)
    second_engine: EngineVerdict | None = None  # the other engine's verdict (with_second_engine)
    stopped: str | None = None  # why the automatic fix stopped: fixed | budget spent | attempts spent | no move left

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
    def verified_by(self) -> dict[str, EngineVerdict]:
        """{engine name: its verdict}: the engine that verified the fixes first, then the other one if asked."""
        default = EngineVerdict.of(self.after.engine, self.after.outputs)
        others = [self.second_engine] if self.second_engine is not None else []
        return {entry.engine: entry for entry in [default, *others]}

    def with_second_engine(self) -> "Verification":
        """This verification with the other engine's verdict on the fixed model (one more candidate pass)."""
        return replace(self, second_engine=second_opinion(self.after))

    @property
    def disagreement(self) -> str | None:
        """In words, when one engine accepts the fixed model and another does not; else None."""
        judged = [entry for entry in self.verified_by.values() if entry.verdict != NOT_AVAILABLE]
        accepts = [entry.engine for entry in judged if entry.verdict == "ok"]
        refuses = [f"{entry.engine} finds it {entry.verdict}" for entry in judged if entry.verdict != "ok"]
        if not accepts or not refuses:
            return None
        return f"the engines disagree: {', '.join(accepts)} accepts the fixed model, {', '.join(refuses)}"

    def engines_line(self) -> str:
        """One line: each engine's verdict, and in words when they disagree."""
        line = "judged by " + "; ".join(entry.describe() for entry in self.verified_by.values())
        disagreement = self.disagreement
        return f"{line} -- {disagreement}" if disagreement else line

    @property
    def budget_spent(self) -> bool:
        """Not fixed, and the automatic fix used its whole run budget (a larger one may find a fix)."""
        return self.stopped == "budget spent"

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
        """This verification with a task-level check (workbench.task.checks) on the model outputs added."""
        names = self.after.reference.graph.output
        reference = {o.name: self.after.reference_values[o.name] for o in names}
        candidate = {o.name: self.after.candidate_values[o.name] for o in names if o.name in self.after.candidate_values}
        return replace(self, task=task.check(self.after.feed, reference, candidate))

    def save(self, path: "str | Path", protect: Sequence[Path] = ()) -> Path:
        """Write the fixed model (weights beside it above 2 GB); never over a file either model was read from,
        nor over `protect` (the feed, say)."""
        sources = [*self.before.reference.source_files, *self.before.candidate.source_files, *protect]
        return save_model(self.model, Path(path), protect=sources)

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
            "budget_spent": self.budget_spent,
            "stopped": self.stopped,
            "verified_by": {name: entry.to_dict() for name, entry in self.verified_by.items()},
            "attempts": [attempt.to_dict() for attempt in self.attempts],
            "fp16_weight_fraction": round(self.fp16_weight_fraction, 4),
            "task": self.task.to_dict() if self.task is not None else None,
            "mode": self.after.mode,
        }

    def __repr__(self) -> str:
        return self.summary()

    def summary(self) -> str:
        status = "OK" if self.ok else "NOT FIXED"
        tried = f", {len(self.attempts)} attempt(s)" if self.attempts else ""
        lines = [f"{self.model.name}: {status} after {len(self.fixes)} fix(es), {self._runs_text()}{tried}"]
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
        lines.append(f"  {self.engines_line()}")
        lines += [f"  still ROOT {f.kind}: {f.explanation}" for f in self.after.roots]
        if self.task is not None:
            lines += ["  " + line for line in self.task.summary().splitlines()]
        return "\n".join(lines)

    def _runs_text(self) -> str:
        """'12 model runs', with the budget used of the total when the automatic fix ran, and why it stopped."""
        if self.budget is None:
            return f"{self.runs} model runs"
        why = f", {self.stopped}" if self.stopped not in (None, "fixed") else ""
        return f"{self.runs} of {self.budget} budgeted model runs{why}"

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
            raise WorkbenchError(f"{fix!r} is not a fix; take fixes from a diagnosis' roots or workbench.fixes.catalogue.")
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


def worst_rel_l2(outputs: dict[str, TensorDiff]) -> float:
    """The largest output error; inf when an output is non-finite where the reference is finite."""
    return max((float("inf") if d.nonfinite else d.rel_l2 for d in outputs.values()), default=0.0)


def _weights_only(index: GraphIndex, name: str) -> bool:
    """A node that computes nothing but constants (a Constant, a Reshape of a weight)."""
    return index.produces_constants(index.node_by_name[name])


def _target(fix: Fix) -> str:
    for attribute in ("tensors", "nodes", "node", "op_type"):
        value = getattr(fix, attribute, None)
        if value:
            return ",".join(value) if isinstance(value, tuple) else str(value)
    return ""
