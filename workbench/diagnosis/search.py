"""Root causes: which nodes go wrong on their own, and which of those harm the outputs.

1. Capture every tensor of the reference (FP32) and the candidate on the same feed.
2. Per candidate node whose output disagrees (or that reads a constant FP16 cannot hold),
   the local error: the node run in candidate precision on the reference's inputs.
   A node whose local output is right only passes on damage from upstream.
3. Each suspect's local output is put into the FP32 run alone; if the outputs then
   leave tolerance it is a root, else a warning (a masked -inf that Softmax turns into 0,
   an overflow that tanh saturates). Faults are tested one at a time, so independent
   faults are each reported.
"""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Callable

import numpy as np
import onnx
from tqdm.auto import tqdm

from workbench.compare.align import align
from workbench.compare.diff import TensorDiff, Tolerance, tensor_diff, verdict
from workbench.compare.slices import slice_axes
from workbench.convert.low_precision import (
    ConversionStats,
    Fp16Options,
    convert_to_fp16,
)
from workbench.convert.opset import runnable
from workbench.diagnosis import explain
from workbench.diagnosis.explain import InputEvidence, NodeEvidence
from workbench.diagnosis.result import Diagnosis, Finding, NodeComparison
from workbench.engines import Engine, make_engine
from workbench.engines.emulate import EmulatingEngine
from workbench.engines.node_by_node import Values, downstream, replay
from workbench.errors import WorkbenchError
from workbench.fixes import catalogue as fixes
from workbench.formats import BY_ELEM_TYPE, FP16, Precision, of_types, precision
from workbench.io.feeds import (
    Feed,
    check_feed,
    describe_generated,
    generate_feed,
    load_feed,
)
from workbench.io.model import Model, load_model
from workbench.ir.graph import GraphIndex, node_reads
from workbench.task import checks as task

MODES = ("faithful", "runtime")
# Harmless faults of these kinds are still worth a warning; harmless rounding is not.
_WARN_WHEN_HARMLESS = {
    explain.CONSTANT_OUT_OF_RANGE,
    explain.CONSTANT_UNDERFLOW,
    explain.ACTIVATION_OVERFLOW,
    explain.INF_ARITHMETIC,
}


@dataclass(frozen=True)
class DiagnoseOptions:
    mode: str = "faithful"  # faithful: compute as a low-precision engine does; runtime: run as ORT does
    # How the candidate is computed in faithful mode (workbench.engines): emulate (FP32 arithmetic, every
    # low-precision tensor rounded where stored; one session) or ort-kernels (ORT's FP16 kernels node by node).
    engine: str = "emulate"
    tolerance: Tolerance = field(default_factory=Tolerance)
    fp16: Fp16Options = field(default_factory=Fp16Options)  # how to make the candidate when none is given
    providers: tuple[str, ...] = ("CPUExecutionProvider",)  # for the candidate in runtime mode
    progress: bool = False  # show tqdm progress bars
    # MiB of the candidate's intermediate tensors to keep for inspection (None: all). Beyond it each
    # tensor is compared as soon as it is computed and dropped after its last reader, keeping its
    # statistics: the run then holds the activations once (the reference's), not twice. Faithful mode.
    memory_budget_mb: float | None = None


def diagnose(
    model,
    candidate=None,
    inputs: "Feed | str | Path | None" = None,
    options: DiagnoseOptions | None = None,
    **option_overrides,
) -> Diagnosis:
    """Diagnose `candidate` (default: the workbench's FP16 conversion of `model`) against `model`.

    `model`/`candidate`: a path, an onnx.ModelProto or a workbench Model. `inputs`: a dict
    keyed by input name, an .npz path, or None to generate a feed. Keyword overrides set
    DiagnoseOptions fields, e.g. `diagnose(path, mode="runtime")`.
    """
    options = _with_overrides(options or DiagnoseOptions(), option_overrides)
    start = time.perf_counter()
    reference, note = runnable(load_model(model))
    notes = [note] if note else []
    conversion = None
    if candidate is None:
        candidate_model, conversion = convert_to_fp16(reference, options.fp16)
    else:
        candidate_model, note = runnable(load_model(candidate))
        notes += [f"candidate: {note}"] if note else []
    search = _Search(reference, candidate_model, options, candidate_given=candidate is not None)
    search.notes = tuple(notes)
    diagnosis = search.run(_resolve_feed(search.ref_index, inputs, reference.name), start, conversion)
    if inputs is None:  # issue 12: say what kind of feed was made up, and that a real one is better
        diagnosis = replace(diagnosis, feed_origin=describe_generated(search.ref_index))
    return diagnosis


def rediagnose(
    before: Diagnosis,
    candidate: Model,
    conversion: ConversionStats | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> Diagnosis:
    """Diagnose another candidate against `before`'s reference, on the same feed and options.

    The reference's captured tensors and its engine (with its cached sessions) are
    reused, so checking a fixed variant costs one candidate pass plus its suspects.
    `progress(done, total)` is called after each node of the candidate pass.
    """
    start = time.perf_counter()
    search = _Search(before.reference, candidate, before.options, candidate_given=before.candidate_given, reuse=before)
    search.on_progress = progress
    search.notes = before.notes
    return replace(search.run(before.feed, start, conversion), feed_origin=before.feed_origin)


def outputs_on(diagnosis: Diagnosis, engine: str) -> dict[str, TensorDiff]:
    """`diagnosis`' candidate computed by another engine, its outputs compared with the reference's.

    The same feed, tolerance and captured reference; one candidate pass, no node-level search.
    A WorkbenchError when that engine cannot run the candidate (ort-kernels on BF16 or FP8).
    """
    options = replace(diagnosis.options, mode="faithful", engine=engine)
    search = _Search(diagnosis.reference, diagnosis.candidate, options, diagnosis.candidate_given, reuse=diagnosis)
    search.ref_values = diagnosis.reference_values
    feed = check_feed(search.cand_index, diagnosis.feed, diagnosis.candidate.name)
    return search._output_diffs(search.cand_engine.capture(dict(feed)))


def _with_overrides(options: DiagnoseOptions, overrides: dict) -> DiagnoseOptions:
    known = {f.name for f in fields(DiagnoseOptions)}
    unknown = sorted(set(overrides) - known)
    if unknown:
        raise TypeError(f"diagnose() got unknown option(s) {unknown}; known: {sorted(known)}")
    options = replace(options, **overrides)
    if options.mode not in MODES:
        raise WorkbenchError(f"unknown mode '{options.mode}'; use one of {', '.join(MODES)}.")
    if options.engine not in ("emulate", "ort-kernels"):
        raise WorkbenchError(f"unknown engine '{options.engine}'; use emulate or ort-kernels (or --mode runtime).")
    return options


def engine_name(options: DiagnoseOptions) -> str:
    return "runtime" if options.mode == "runtime" else options.engine


def _resolve_feed(index: GraphIndex, inputs, model_name: str) -> Feed:
    if inputs is None:
        feed = generate_feed(index)
    elif isinstance(inputs, (str, Path)):
        feed = load_feed(inputs)
    else:
        feed = dict(inputs)
    return check_feed(index, feed, model_name)


class _Search:
    def __init__(self, reference: Model, candidate: Model, options: DiagnoseOptions, candidate_given: bool, reuse: Diagnosis | None = None):
        self.reference, self.candidate, self.options = reference, candidate, options
        self.candidate_given = candidate_given
        self.reuse = reuse
        self.ref_index = reuse.reference_index if reuse else GraphIndex.of(reference)
        self.cand_index = GraphIndex.of(candidate)
        # The reference runs in FP32 on the same emulating engine: a plain FP32 session, every tensor marked.
        self.ref_engine: Engine = reuse.engines[0] if reuse is not None else EmulatingEngine(reference, self.ref_index)
        self.cand_engine: Engine = make_engine(engine_name(options), candidate, self.cand_index, options.providers)
        self._runs_before = self.ref_engine.runs
        self._forward_passes = 0
        # The format asked for, or for a given candidate the one it stores most tensors in.
        self.precision = of_types(self.cand_index.elem_types.values()) if candidate_given else precision(options.fp16.precision)
        self.tol = _tolerance_for(options.tolerance, self.precision)
        self._local_outputs: dict[str, dict[str, np.ndarray]] = {}  # suspect node name -> its local outputs
        self._worst_local: NodeEvidence | None = None
        self._lossy_constants: dict[str, bool] = {}  # candidate constant name -> does FP16 lose it
        self._early_diffs: dict[str, dict[str, TensorDiff]] = {}  # node -> its outputs' diffs, compared as computed
        self._released: dict[str, tuple[np.dtype, tuple]] = {}  # dropped candidate tensor -> (dtype, shape)
        self._slice_notes: dict[str, str] = {}  # issue 12: suspect -> the output slice its fault alone destroys

    # -- capture ------------------------------------------------------------------------------
    def run(self, feed: Feed, start: float, conversion: ConversionStats | None = None) -> Diagnosis:
        cand_feed = check_feed(self.cand_index, feed, self.candidate.name)
        for index in (self.ref_index, self.cand_index):
            index.prefetch_initializers()
        if self.reuse is not None:
            self.ref_values = self.reuse.reference_values  # read-only here: injections work on copies
        else:
            self.ref_values = self.ref_engine.capture(dict(feed))
            self._forward_passes += 1
        self.alignment = align(self.ref_index, self.cand_index)
        self.cand_values = self._candidate_pass(dict(cand_feed))
        self._forward_passes += 1
        output_diffs = self._output_diffs(self.cand_values)
        # issue 12: the check a user of each output makes (top-1, mask IoU, cosine), chosen from the graph
        cand_outputs = {n: self.cand_values[n] for n in output_diffs}
        tasks = task.check_outputs(self.ref_index, {n: self.ref_values[n] for n in output_diffs}, cand_outputs, feed)
        nodes, suspects = self._compare_nodes()
        the_verdict = verdict(output_diffs)
        if the_verdict == "ok":  # nothing to explain: only range faults are worth a warning
            suspects = [(item, kind) for item, kind in suspects if kind in _WARN_WHEN_HARMLESS]
        roots, warnings = self._findings(suspects)
        if the_verdict == "ok" and roots:
            warnings = [self._demoted(root) for root in roots] + warnings
            roots = []
        if the_verdict != "ok" and not roots and self._worst_local is not None:
            warnings.append(self._accumulated(self._worst_local))
        return Diagnosis(
            verdict=the_verdict,
            roots=tuple(roots),
            warnings=tuple(warnings),
            first_nonfinite=self._first_nonfinite(nodes),
            outputs=output_diffs,
            mode=self.options.mode,
            engine=self.cand_engine.name,
            precision=self.precision.name,
            reference=self.reference,
            candidate=self.candidate,
            nodes=tuple(nodes),
            feed=feed,
            reference_values=self.ref_values,
            candidate_values=self.cand_values,
            alignment=self.alignment,
            stats={
                "seconds": time.perf_counter() - start,
                "forward_passes": self._forward_passes,
                "engine_runs": self.ref_engine.runs + self.cand_engine.runs - self._runs_before,
                "sessions_built": self.ref_engine.sessions_built + self.cand_engine.sessions_built,
                "candidate_tensors_dropped": len(self._released),
            },
            options=self.options,
            conversion=conversion,
            candidate_given=self.candidate_given,
            reference_index=self.ref_index,
            engines=(self.ref_engine, self.cand_engine),
            notes=self.notes,
            tasks=tasks,
        )

    on_progress: Callable[[int, int], None] | None = None
    notes: tuple[str, ...] = ()

    def _capture(self, feed: Values, label: str, after_node=None) -> Values:
        """The candidate's tensors; node by node (with a progress bar) when each must be seen as computed."""
        total = len(self.cand_index.nodes)
        if after_node is None and not self.options.progress:
            values = self.cand_engine.capture(feed)
            if self.on_progress is not None:
                self.on_progress(total, total)
            return values
        done = iter(range(1, total + 1))
        bar = tqdm(total=total, desc=label, unit="node", leave=False, disable=not self.options.progress or self.on_progress is not None)

        def on_node(node: onnx.NodeProto, current: Values) -> None:
            if after_node is not None:
                after_node(node, current)
            if self.on_progress is not None:
                self.on_progress(next(done), total)
            bar.update()

        try:
            return self.cand_engine.capture(feed, on_node=on_node)
        finally:
            bar.close()

    # -- compare as you go (memory budget) ------------------------------------------------------
    def _candidate_pass(self, feed: Values) -> Values:
        budget = self.options.memory_budget_mb
        label = f"candidate ({self.precision.label})"
        if budget is None:
            return self._capture(feed, label)
        remaining = {}
        for node in self.cand_index.nodes:
            for name in set(node_reads(node)):
                remaining[name] = remaining.get(name, 0) + 1
        keep = set(self.cand_index.output_names) | set(feed)
        kept_bytes = 0  # bytes of released-eligible tensors kept within the budget

        def release(name: str, values: Values) -> None:
            nonlocal kept_bytes
            if remaining.get(name, 0) > 0 or name in keep or name not in values or name not in self.alignment:
                return
            if self.cand_index.is_constant(name):
                return
            if kept_bytes + values[name].nbytes <= budget * 2**20:
                kept_bytes += values[name].nbytes  # within the budget: kept for the inspector
                return
            self._released[name] = (values[name].dtype, values[name].shape)
            del values[name]

        def compare_then_release(node: onnx.NodeProto, values: Values) -> None:
            self._early_diffs[node.name] = self._diffs(node, values)
            for name in set(node_reads(node)):
                remaining[name] -= 1
                release(name, values)
            for name in node.output:
                if name:
                    release(name, values)  # read by no node: done with already

        return self._capture(feed, label, compare_then_release)

    def _diffs(self, node: onnx.NodeProto, values: Values) -> dict[str, TensorDiff]:
        return {
            name: tensor_diff(self.ref_values[self.alignment[name]], values[name], self.tol)
            for name in node.output
            if name in self.alignment and self.alignment[name] in self.ref_values and name in values
        }

    def _ref_value(self, ref_name: str) -> np.ndarray:
        if ref_name not in self.ref_values:
            self.ref_values[ref_name] = self.ref_index.initializer_array(ref_name)
        return self.ref_values[ref_name]

    def _cand_value(self, name: str) -> np.ndarray:
        if name not in self.cand_values:
            self.cand_values[name] = self.cand_index.initializer_array(name)
        return self.cand_values[name]

    def _output_diffs(self, cand_outputs: Values) -> dict[str, TensorDiff]:
        diffs = {}
        for name in self.ref_index.output_names:
            if name not in cand_outputs:
                raise WorkbenchError(f"the candidate has no output '{name}'; both models must have the same outputs.")
            # issue 12: each Concat-built slice is judged against its own scale
            diffs[name] = tensor_diff(self.ref_values[name], cand_outputs[name], self.tol, slice_axes(self.ref_index, name, self.ref_values))
        return diffs

    # -- per node -----------------------------------------------------------------------------
    def _compare_nodes(self) -> tuple[list[NodeComparison], list[tuple[NodeEvidence, str]]]:
        """Every node's diffs, and the suspects (nodes with a fault of their own) with their kind.

        Evidence (input copies, local outputs) is kept for suspects only, and for the node with
        the worst local error (the fallback explanation): holding it for every victim of a NaN
        cascade would double the memory of the run.

        A node fed NaN or inf from upstream is not run again on the reference's inputs: its
        output is lost in this run whatever it does itself, and a fault of its own shows when
        the fix upstream is verified (auto_fix diagnoses again). On a NaN cascade through
        BERT-base that skips about 390 node runs.
        """
        comparisons, suspects = [], []
        poisoned: set[str] = set()  # candidate tensors non-finite where the reference is finite
        for node in self.cand_index.nodes:
            if self.cand_index.produces_constants(node):
                continue  # a weight's Transpose or Cast: its faults show where it is read
            diffs = self._early_diffs.pop(node.name) if node.name in self._early_diffs else self._diffs(node, self.cand_values)
            poisoned.update(name for name, d in diffs.items() if d.nonfinite)
            local = None
            reads_lossy_constant = self._reads_lossy_constant(node)
            rerun = reads_lossy_constant or (not all(d.ok for d in diffs.values()) and not poisoned.intersection(node.input))
            if rerun and not self._reads_non_tensor(node):
                item, local_outputs = self._evidence(node)
                if item is not None:
                    local = item.local_diff
                    kind = explain.classify(item)
                    if kind is not None:
                        suspects.append((item, kind))
                        self._local_outputs[node.name] = local_outputs
                    if self._worst_local is None or local.rel_l2 > self._worst_local.local_diff.rel_l2:
                        self._worst_local = item
            comparisons.append(NodeComparison(node.name, node.op_type, diffs, local))
        return comparisons, suspects

    def _reads_non_tensor(self, node: onnx.NodeProto) -> bool:
        """A node reading a sequence cannot run alone on captured values: only tensors are captured."""
        return any(name in self.cand_index.non_tensor_values for name in node_reads(node))

    def _reads_lossy_constant(self, node: onnx.NodeProto) -> bool:
        return any(self._constant_is_lossy(name) for name in node.input if name and self.cand_index.is_constant(name))

    def _constant_is_lossy(self, name: str) -> bool:
        """Whether a constant's reference value survives the candidate's type; worked out once per constant."""
        if name not in self._lossy_constants:
            self._lossy_constants[name] = self._input_evidence(name).lossy
        return self._lossy_constants[name]

    def _input_evidence(self, name: str) -> InputEvidence:
        """A candidate input's reference value, and that value cast to the candidate's type."""
        if name in self._released:  # compared and dropped already: its type is all that is needed
            dtype, _ = self._released[name]
            ref = self._ref_value(self.alignment[name])
            return InputEvidence(self.alignment[name], False, ref, self._stored_as_candidate(name, ref, dtype), self.precision)
        cand = self._cand_value(name)
        ref = self._ref_value(self.alignment[name]) if name in self.alignment else cand
        if self.cand_index.is_constant(name) or ref.shape != cand.shape:
            as_cand = cand  # a constant is the candidate's own: a fix may have rewritten it (-1e4 for -3.4e38)
        else:
            as_cand = self._stored_as_candidate(name, ref, cand.dtype)
        shown = self.alignment.get(name, name)  # the user knows the reference's names
        return InputEvidence(shown, self.cand_index.is_constant(name), ref, as_cand, self.precision)

    def _stored_as_candidate(self, name: str, ref: np.ndarray, dtype: np.dtype) -> np.ndarray:
        """The reference's value as the candidate stores tensor `name` (rounded to BF16/FP8 where it is one)."""
        fmt = BY_ELEM_TYPE.get(self.cand_index.elem_types.get(name))
        if fmt is not None and ref.dtype.kind == "f":
            return fmt.store(ref)
        with np.errstate(over="ignore"):
            return ref.astype(dtype, copy=False)

    def _evidence(self, node: onnx.NodeProto) -> tuple[NodeEvidence | None, dict[str, np.ndarray]]:
        """The node's own error: run in candidate precision on the reference's inputs."""
        inputs: dict[str, InputEvidence] = {}

        def read(name: str) -> np.ndarray:
            if name not in inputs:
                inputs[name] = self._input_evidence(name)
            return inputs[name].as_candidate

        local_outputs = self.cand_engine.run_node(node, read)
        judged = [  # every output the reference has; a node is judged by its worst (Scan, Split, LayerNorm...)
            (tensor_diff(self.ref_values[self.alignment[n]], v, self.tol), n, v)
            for n, v in zip(node.output, local_outputs)
            if n and v is not None and self.alignment.get(n) in self.ref_values
        ]
        if not judged:
            return None, {}
        diff, name, value = max(judged, key=lambda j: (j[0].nonfinite > 0, j[0].rel_l2))  # ties: the first output
        item = NodeEvidence(node, list(inputs.values()), self.ref_values[self.alignment[name]], value, diff, self.precision)
        return item, dict(zip(node.output, local_outputs))

    # -- harm ---------------------------------------------------------------------------------
    def _findings(self, suspects: list[tuple[NodeEvidence, str]]) -> tuple[list[Finding], list[Finding]]:
        roots, warnings = [], []
        iterator = tqdm(suspects, desc="testing suspects", leave=False) if self.options.progress else suspects
        for item, kind in iterator:
            effect, absorbed_by, turns_nonfinite = self._inject(item.node)
            self._forward_passes += 1  # an injection re-runs the part of the FP32 model after the suspect
            harmful = effect > self.tol.rel_l2
            finding = Finding(
                node=item.node.name,
                op_type=item.node.op_type,
                kind=kind,
                explanation=self._sentence(kind, item, harmful, absorbed_by, turns_nonfinite),
                harmful=harmful,
                local=item.local_diff,
                output_effect=effect,
                absorbed_by=absorbed_by,
                fixes=self._proposals(kind, item) if harmful else (),
            )
            if harmful:
                roots.append(finding)
            elif kind in _WARN_WHEN_HARMLESS:
                warnings.append(finding)
        return roots, warnings

    def _proposals(self, kind: str, item: NodeEvidence) -> tuple[fixes.Fix, ...]:
        """Fixes for this root, named in the reference's terms (fixes apply to the FP32 source)."""
        ref_node = self._reference_node(item.node)
        if ref_node is None:
            return ()
        return fixes.propose(kind, ref_node, item, self.ref_index, self.ref_values)

    def _reference_node(self, node: onnx.NodeProto) -> str | None:
        for name in node.output:
            producer = self.ref_index.producer.get(self.alignment.get(name, ""))
            if producer is not None:
                return producer.name
        return None

    def _sentence(self, kind: str, item: NodeEvidence, harmful: bool, absorbed_by: str | None, turns_nonfinite: str | None) -> str:
        text = explain.explain(kind, item)
        if harmful and turns_nonfinite and not item.local_diff.nonfinite:
            op_type = self.ref_index.node_by_name[turns_nonfinite].op_type
            text += f"; on its own this makes {op_type} `{turns_nonfinite}` produce NaN or inf"
        if harmful and item.node.name in self._slice_notes:  # issue 12
            text += f"; put alone into the FP32 run, {self._slice_notes[item.node.name]}"
        if not harmful:
            where = f" after `{absorbed_by}`" if absorbed_by else ""
            text += f"; harmless here: the fault is gone{where} and the outputs stay within tolerance"
        return text

    def _inject(self, node: onnx.NodeProto) -> tuple[float, str | None, str | None]:
        """Put this node's local output alone into the FP32 run.

        Returns the worst output error, the node after which the fault is gone (if it is),
        and the first node it makes non-finite (if any).
        """
        overlay = dict(self.ref_values)
        injected = []
        for name, value in self._local_outputs[node.name].items():
            ref_name = self.alignment.get(name)
            if ref_name and value is not None and ref_name in overlay:
                overlay[ref_name] = value.astype(overlay[ref_name].dtype) if value.dtype.kind == "f" else value
                injected.append(ref_name)
        tainted, absorbed_by, turns_nonfinite = set(injected), None, None
        after = downstream(self.ref_index, injected)
        reads_left = Counter(name for later in after for name in set(node_reads(later)))
        outputs = set(self.ref_index.output_names)

        def track(ref_node: onnx.NodeProto, values: Values) -> None:
            nonlocal absorbed_by, turns_nonfinite
            diffs = {n: tensor_diff(self.ref_values[n], values[n], self.tol) for n in ref_node.output if n}
            changed = [n for n, d in diffs.items() if not d.ok or _zeros_moved(self.ref_values[n], values[n])]
            tainted.update(changed)
            if not changed and absorbed_by is None:
                absorbed_by = ref_node.name
            if turns_nonfinite is None and any(d.nonfinite for d in diffs.values()):
                turns_nonfinite = ref_node.name
            # Hold the injected run's tensors only while they matter: an unchanged one is the
            # reference's own array again, a changed one is dropped after its last reader.
            for name in diffs:
                if name not in changed and name not in outputs:
                    values[name] = self.ref_values[name]
            for name in set(node_reads(ref_node)):
                reads_left[name] -= 1
                if reads_left[name] <= 0 and name not in outputs and name in self.ref_values:
                    values[name] = self.ref_values[name]

        # A fault that flows into a sequence is followed no further: sequences are not captured.
        followed = [n for n in after if not any(name in self.ref_index.non_tensor_values for name in node_reads(n))]
        replay(self.ref_index, self.ref_engine.node_runner, overlay, nodes=_only_tainted(followed, tainted), on_node=track)
        worst = 0.0
        for name in self.ref_index.output_names:
            # issue 12: a fault that destroys one slice (batch row, Concat part) harms the output
            diff = tensor_diff(self.ref_values[name], overlay[name], self.tol, slice_axes(self.ref_index, name, self.ref_values))
            worst = max(worst, diff.effect)
            note = explain.slice_effect(name, diff, self.ref_values[name], overlay[name], self.tol.rel_l2)
            if note is not None and not diff.nonfinite:
                self._slice_notes.setdefault(node.name, note)
        return worst, absorbed_by, turns_nonfinite

    def _demoted(self, root: Finding) -> Finding:
        """A fault that harms the outputs when injected alone, though this candidate's outputs are fine."""
        why = " (ONNX Runtime kept this tensor in FP32 inside its own run)" if self.options.mode == "runtime" else " on this feed"
        text = f"{root.explanation}; it harms the outputs when put alone into the FP32 run, yet this candidate's outputs are within tolerance{why}"
        return replace(root, harmful=False, explanation=text)

    def _accumulated(self, item: NodeEvidence) -> Finding:
        """No single node explains bad outputs: point at the largest local error on the way."""
        return Finding(
            node=item.node.name,
            op_type=item.node.op_type,
            kind=explain.ACCUMULATED_ERROR,
            explanation=explain.explain(explain.ACCUMULATED_ERROR, item),
            harmful=False,
            local=item.local_diff,
            output_effect=0.0,
            fixes=self._proposals(explain.ACCUMULATED_ERROR, item),
        )

    def _first_nonfinite(self, nodes: list[NodeComparison]) -> str | None:
        for comparison in nodes:
            if any(d.nonfinite for d in comparison.outputs.values()):
                return comparison.node
        return None


def _zeros_moved(reference: np.ndarray, value: np.ndarray) -> bool:
    """Whether the zeros of a tensor moved: a fault still present though within tolerance.

    A 1e-6 that became 0 is within any tolerance, yet the Div reading it turns
    0 / 1e-6 = 0 into 0 / 0 = NaN, so the nodes after it must run again.
    """
    if reference.dtype.kind != "f" or reference.shape != value.shape:
        return False
    return bool(np.any((reference == 0) != (value == 0)))


def _tolerance_for(tolerance: Tolerance, fmt: Precision) -> Tolerance:
    """The default tolerance is FP16's; a BF16 or FP8 candidate is judged by its format's (fewer bits)."""
    if tolerance != Tolerance() or fmt is FP16:
        return tolerance
    return Tolerance(rel_l2=fmt.rel_l2, floor=fmt.normal_min if fmt.normal_min > 1e-30 else tolerance.floor)


def _only_tainted(nodes: list[onnx.NodeProto], tainted: set[str]):
    """Yield the downstream nodes lazily, skipping those whose inputs turned out unchanged."""
    for node in nodes:
        if any(name in tainted for name in node_reads(node)):
            yield node
