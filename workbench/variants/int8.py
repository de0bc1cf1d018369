"""INT8 dynamic quantization against FP32: per-tensor SQNR, the nodes that lose most, keep-FP32 fixes.

    report = quantized.analyze_int8("model.onnx", inputs=feed, per_channel=True)   # quantizes it, too
    report.outputs, report.tensors, report.ranked[:5]       # SQNR (dB) and rel-L2 of every aligned tensor
    fixed = quantized.exclude_nodes(report, ["node_MatMul_91"])   # re-quantized with nodes_to_exclude, re-verified
    fixed = quantized.auto_exclude(report)                        # the worst nodes first, until the outputs pass

SQNR = 10·log10(Σ reference² / Σ (candidate − reference)²), in dB; it is rel-L2 on a log scale:
SQNR = −20·log10(rel-L2), so rel-L2 1e-2 is 40 dB and 0.1 is 20 dB. Every bit is worth about 6 dB: a uniform signal that fills the INT8 range comes out at about 50 dB, an activation whose range is
set by a few outliers (BERT's are) far lower, because the outliers spend the 256 levels.

Quantized ops are groups of nodes in the variant (DynamicQuantizeLinear → MatMulInteger → Cast → Mul by
the scales). The group keeps the FP32 MatMul's output name, so it aligns by name like any node. A group's
local error is the group run on the FP32 run's inputs (its own contribution, as workbench.diagnose
measures a node's), and its harm is that local output put alone into the FP32 run.

Tolerance (INT8_TOLERANCE). FP16's 1e-2 rel-L2 per tensor (40 dB) is far too strict here: on MiniLM
every dynamically quantized activation costs 22 to 33 dB on its own, before any accumulation. Outputs pass
at rel-L2 ≤ 0.15 (SQNR ≥ 16.5 dB). The whole tensor counts, padding positions included (noise in FP32
already, and they lose most), so it is a coarse bound: on MiniLM, outputs at 0.13 to 0.14 give pooled
sentence embeddings at cosine 0.985 to 0.99 against FP32. What a user reads is judged by a task check:
`auto_exclude(report, task=SentenceEmbeddingTask())` goes on until that passes too.
"""

from __future__ import annotations

import html
import time
from dataclasses import dataclass, field
from typing import Iterable, Sequence

import numpy as np
import onnx

from workbench.compare.align import align
from workbench.compare.diff import TensorDiff, Tolerance, tensor_diff
from workbench.engines.node_by_node import (
    NodeRunner,
    Values,
    downstream,
    replay,
    run_runtime,
)
from workbench.errors import WorkbenchError
from workbench.io.feeds import Feed, check_feed, generate_feed, load_feed
from workbench.io.model import Model, full_proto, load_model
from workbench.ir.graph import GraphIndex
from workbench.render.json import finite_or_none
from workbench.variants.fused import QUANTIZED_OPS, quantize_int8

# Outputs within rel-L2 0.15 = SQNR 16.5 dB (see the module docstring); the floor as for FP16 (near-zero tensors).
INT8_TOLERANCE = Tolerance(rel_l2=0.15)


def sqnr_db(reference: np.ndarray, candidate: np.ndarray) -> float:
    """Signal-to-quantization-noise ratio in dB over elements finite in both; inf when identical."""
    ref = np.asarray(reference, dtype=np.float64)
    cand = np.asarray(candidate, dtype=np.float64)
    if ref.shape != cand.shape:
        return float("-inf")
    finite = np.isfinite(ref) & np.isfinite(cand)
    signal = float(np.sum(np.square(ref[finite])))
    noise = float(np.sum(np.square(cand[finite] - ref[finite])))
    if noise == 0.0:
        return float("inf")
    if signal == 0.0:
        return float("-inf")
    with np.errstate(divide="ignore"):
        return float(10.0 * np.log10(signal / noise))


@dataclass(frozen=True)
class TensorStat:
    """One aligned tensor of the INT8 variant against FP32."""

    tensor: str  # the reference's name
    node: str | None  # the reference node producing it (None for a weight)
    op_type: str
    sqnr_db: float
    diff: TensorDiff

    def to_dict(self) -> dict:
        return {
            "tensor": self.tensor,
            "node": self.node,
            "op_type": self.op_type,
            "sqnr_db": finite_or_none(round(self.sqnr_db, 3)) if np.isfinite(self.sqnr_db) else None,
            "rel_l2": finite_or_none(self.diff.rel_l2),
            "max_abs": finite_or_none(self.diff.max_abs),
        }


@dataclass(frozen=True)
class NodeLoss:
    """A quantized group, named by the FP32 node it replaces: its own error and its harm to the outputs."""

    node: str  # reference node name (what nodes_to_exclude takes)
    op_type: str
    tensor: str
    group: tuple[str, ...]  # the variant's nodes computing it (DynamicQuantizeLinear, MatMulInteger, ...)
    local_sqnr_db: float  # the group run on the FP32 run's inputs
    local: TensorDiff
    output_sqnr_db: float  # worst output SQNR with only this group's error in the FP32 run
    output_rel_l2: float

    def to_dict(self) -> dict:
        return {
            "node": self.node,
            "op_type": self.op_type,
            "tensor": self.tensor,
            "group": list(self.group),
            "local_sqnr_db": _db(self.local_sqnr_db),
            "local_rel_l2": finite_or_none(self.local.rel_l2),
            "output_sqnr_db": _db(self.output_sqnr_db),
            "output_rel_l2": finite_or_none(self.output_rel_l2),
        }


@dataclass(frozen=True)
class Int8Report:
    """An INT8 variant against its FP32 model on one feed."""

    reference: Model = field(repr=False)
    candidate: Model = field(repr=False)
    settings: dict  # how the variant was made: per_channel, op_types, exclude, reduce_range (None: given)
    outputs: dict[str, TensorStat]
    tensors: tuple[TensorStat, ...]  # every aligned computed tensor, in the variant's graph order
    losses: tuple[NodeLoss, ...]  # every quantized group, worst own SQNR first (the ranking)
    tolerance: Tolerance
    feed: dict = field(repr=False, default_factory=dict)
    reference_values: dict = field(repr=False, default_factory=dict)
    candidate_outputs: dict = field(repr=False, default_factory=dict)
    stats: dict = field(repr=False, default_factory=dict)
    reference_index: object = field(repr=False, default=None, compare=False)
    runner: object = field(repr=False, default=None, compare=False)

    @property
    def ok(self) -> bool:
        return all(stat.diff.ok for stat in self.outputs.values())

    @property
    def verdict(self) -> str:
        if any(stat.diff.nonfinite for stat in self.outputs.values()):
            return "nonfinite"
        return "ok" if self.ok else "divergent"

    @property
    def quantized_nodes(self) -> int:
        return int(self.stats.get("quantized_nodes", len(self.losses)))

    def check_task(self, task):
        """A workbench.task.checks check (SentenceEmbeddingTask, MaskedLmTask) of the INT8 outputs against FP32."""
        reference = {name: self.reference_values[name] for name in self.outputs}
        return task.check(self.feed, reference, dict(self.candidate_outputs), label="INT8")

    @property
    def ranked(self) -> tuple[NodeLoss, ...]:
        """The quantized nodes that lose most: lowest own SQNR first."""
        return self.losses

    @property
    def by_harm(self) -> tuple[NodeLoss, ...]:
        """The same nodes, those whose error alone harms the outputs most first."""
        return tuple(sorted(self.losses, key=lambda n: (n.output_sqnr_db, n.local_sqnr_db)))

    def to_dict(self) -> dict:
        return {
            "verdict": self.verdict,
            "ok": self.ok,
            "candidate": self.candidate.name,
            "settings": self.settings,
            "tolerance_rel_l2": self.tolerance.rel_l2,
            "outputs": {name: stat.to_dict() for name, stat in self.outputs.items()},
            "ranked": [loss.to_dict() for loss in self.losses],
            "tensors": [stat.to_dict() for stat in self.tensors],
            "quantized_nodes": self.quantized_nodes,
            "seconds": round(self.stats.get("seconds", 0.0), 3),
        }

    def __repr__(self) -> str:
        return self.summary()

    def summary(self, top: int = 5) -> str:
        lines = [f"{self.candidate.name} against {self.reference.name} (INT8, tolerance rel-L2 {self.tolerance.rel_l2:g}): {self.verdict.upper()}"]
        for name, stat in self.outputs.items():
            lines.append(f"  output {name}: SQNR {stat.sqnr_db:.1f} dB, rel-L2 {stat.diff.rel_l2:.3g}, max |diff| {stat.diff.max_abs:.3g}")
        lines.append(f"  {self.quantized_nodes} quantized nodes; those that lose most (own SQNR, then the outputs' SQNR with only its error):")
        lines += [f"    {_loss_line(loss)}" for loss in self.losses[:top]]
        return "\n".join(lines)

    def _repr_html_(self) -> str:
        rows = "".join(
            f"<tr><td><code>{html.escape(l.node)}</code></td><td>{html.escape(l.op_type)}</td>"
            f"<td>{l.local_sqnr_db:.1f}</td><td>{l.output_sqnr_db:.1f}</td></tr>"
            for l in self.losses[:10]
        )
        return (
            f"<div><pre>{html.escape(self.summary(top=0))}</pre>"
            "<table><tr><th>node</th><th>op</th><th>own SQNR (dB)</th><th>output SQNR alone (dB)</th></tr>"
            f"{rows}</table></div>"
        )


def _loss_line(loss: NodeLoss) -> str:
    return (
        f"{loss.op_type} `{loss.node}`: own SQNR {loss.local_sqnr_db:.1f} dB (rel-L2 {loss.local.rel_l2:.3g}), "
        f"outputs alone {loss.output_sqnr_db:.1f} dB"
    )


def _db(value: float):
    return round(float(value), 3) if np.isfinite(value) else None


def analyze_int8(
    model,
    candidate=None,
    inputs: "Feed | str | None" = None,
    per_channel: bool = False,
    op_types: Sequence[str] | None = None,
    exclude: Iterable[str] = (),
    reduce_range: bool = False,
    tolerance: Tolerance = INT8_TOLERANCE,
    rank: bool = True,
) -> Int8Report:
    """Measure an INT8 variant (default: quantize_dynamic of `model` with these settings) against `model`.

    `rank`: also measure each quantized node's own error and its harm (one partial FP32 run per
    quantized node); without it, only the tensors and outputs.
    """
    start = time.perf_counter()
    reference = load_model(model)
    settings: dict = {"per_channel": per_channel, "op_types": list(op_types) if op_types else None,
                      "exclude": list(exclude), "reduce_range": reduce_range}
    if candidate is None:
        candidate_model = quantize_int8(reference, per_channel=per_channel, op_types=op_types, exclude=exclude, reduce_range=reduce_range)
    else:
        candidate_model = load_model(candidate)
        settings = {"given": True}
    ref_index = GraphIndex.of(reference)
    feed = _resolve_feed(ref_index, inputs, reference.name)
    runner = NodeRunner(reference.proto.opset_import, reference.proto.ir_version)
    ref_values = replay(ref_index, runner, dict(feed))
    return _measure(reference, candidate_model, settings, feed, ref_index, runner, ref_values, tolerance, start, rank)


def _resolve_feed(index: GraphIndex, inputs, name: str) -> Feed:
    if inputs is None:
        feed = generate_feed(index)
    elif isinstance(inputs, (str,)) or hasattr(inputs, "suffix"):
        feed = load_feed(inputs)
    else:
        feed = dict(inputs)
    return check_feed(index, feed, name)


def _measure(reference, candidate, settings, feed, ref_index, runner, ref_values, tolerance, start,
             losses_too: bool = True, outputs_only: bool = False) -> Int8Report:
    """The INT8 variant's tensors against the FP32 run; `outputs_only`: one plain session, outputs alone."""
    cand_index = GraphIndex.of(candidate)
    cand_feed = check_feed(cand_index, feed, candidate.name)
    if outputs_only:
        outputs, intermediates, losses_too = _run_plain(candidate, cand_feed), {}, False
    else:
        outputs, intermediates = run_runtime(full_proto(candidate), cand_index, cand_feed, ["CPUExecutionProvider"])
    cand_values = {**cand_feed, **intermediates, **outputs}
    alignment = align(ref_index, cand_index)

    def ref_value(name: str) -> np.ndarray:
        if name not in ref_values:
            ref_values[name] = ref_index.initializer_array(name)
        return ref_values[name]

    output_stats = {}
    for name in ref_index.output_names:
        if name not in outputs:
            raise WorkbenchError(f"the INT8 variant has no output '{name}'; both models must have the same outputs.")
        output_stats[name] = _stat(name, ref_index, ref_value(name), outputs[name], tolerance)

    tensors, losses, quantized_groups = [], [], 0
    local_runner = NodeRunner(candidate.proto.opset_import, candidate.proto.ir_version)
    for node in cand_index.nodes:
        for out in node.output:
            ref_name = alignment.get(out)
            if not out or ref_name is None or ref_name in ref_index.input_names:
                continue
            if outputs_only:
                group = _group(cand_index, out, alignment)
                quantized_groups += any(n.op_type in QUANTIZED_OPS for n in group) and ref_name in ref_index.producer
                continue
            if out not in cand_values:
                continue
            if not cand_index.is_float(out) and cand_values[out].dtype.kind != "f":
                continue
            if ref_name not in ref_values and ref_name not in ref_index.initializers:
                continue
            tensors.append(_stat(ref_name, ref_index, ref_value(ref_name), cand_values[out], tolerance))
            group = _group(cand_index, out, alignment)
            quantized_groups += any(n.op_type in QUANTIZED_OPS for n in group) and ref_name in ref_index.producer
            if losses_too and ref_name in ref_index.producer and any(n.op_type in QUANTIZED_OPS for n in group):
                losses.append(_loss(ref_name, out, group, ref_index, cand_index, alignment, ref_value, local_runner, runner, ref_values, tolerance))
    losses.sort(key=lambda l: (l.local_sqnr_db, l.output_sqnr_db))
    return Int8Report(
        reference=reference, candidate=candidate, settings=settings, outputs=output_stats, tensors=tuple(tensors),
        losses=tuple(losses), tolerance=tolerance, feed=feed, reference_values=ref_values, candidate_outputs=outputs,
        stats={"seconds": time.perf_counter() - start, "quantized_nodes": quantized_groups}, reference_index=ref_index, runner=runner,
    )


def _run_plain(candidate: Model, feed: Feed) -> Values:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3
    try:
        session = ort.InferenceSession(full_proto(candidate).SerializeToString(), options, providers=["CPUExecutionProvider"])
    except Exception as exc:
        text = str(exc).strip()
        raise WorkbenchError(f"ONNX Runtime cannot load the INT8 variant: {(text.splitlines()[-1] if text else type(exc).__name__)[:300]}") from None
    return dict(zip([o.name for o in session.get_outputs()], session.run(None, feed)))


def _stat(ref_name: str, index: GraphIndex, reference: np.ndarray, candidate: np.ndarray, tolerance: Tolerance) -> TensorStat:
    producer = index.producer.get(ref_name)
    cand = candidate.astype(reference.dtype) if candidate.dtype != reference.dtype and candidate.dtype.kind == "f" else candidate
    return TensorStat(
        tensor=ref_name,
        node=producer.name if producer is not None else None,
        op_type=producer.op_type if producer is not None else "weight",
        sqnr_db=sqnr_db(reference, cand),
        diff=tensor_diff(reference, cand, tolerance),
    )


def _group(index: GraphIndex, tensor: str, alignment: dict[str, str]) -> list[onnx.NodeProto]:
    """The variant's nodes that compute `tensor` from tensors the FP32 graph also has (or weights)."""
    found: dict[str, onnx.NodeProto] = {}
    stack = [tensor]
    first = True
    while stack:
        name = stack.pop()
        if not first and (name in alignment or name in index.initializers):
            continue
        first = False
        producer = index.producer.get(name)
        if producer is None or producer.name in found:
            continue
        found[producer.name] = producer
        stack.extend(n for n in producer.input if n)
    order = {node.name: i for i, node in enumerate(index.nodes)}
    return sorted(found.values(), key=lambda n: order[n.name])


def _loss(ref_name, out, group, ref_index, cand_index, alignment, ref_value, local_runner, runner, ref_values, tolerance) -> NodeLoss:
    produced = {name for node in group for name in node.output}
    values: Values = {}
    for node in group:
        for name in node.input:
            if name and name not in produced and name not in cand_index.initializers and name not in values:
                reference = ref_value(alignment[name])
                declared = cand_index.elem_types.get(name)
                wanted = onnx.helper.tensor_dtype_to_np_dtype(declared) if declared else reference.dtype
                values[name] = reference.astype(wanted) if reference.dtype != wanted else reference
    replay(cand_index, local_runner, values, nodes=group)
    reference = ref_values[ref_name]
    local = values[out].astype(reference.dtype) if values[out].dtype != reference.dtype else values[out]
    output_sqnr, output_rel = _inject(ref_index, runner, ref_values, ref_name, local, tolerance)
    producer = ref_index.producer[ref_name]
    return NodeLoss(
        node=producer.name, op_type=producer.op_type, tensor=ref_name, group=tuple(n.name for n in group),
        local_sqnr_db=sqnr_db(reference, local), local=tensor_diff(reference, local, tolerance),
        output_sqnr_db=output_sqnr, output_rel_l2=output_rel,
    )


def _inject(index: GraphIndex, runner: NodeRunner, ref_values: Values, name: str, value: np.ndarray, tolerance: Tolerance) -> tuple[float, float]:
    """Worst output SQNR and rel-L2 when only `name` takes `value` in the FP32 run."""
    overlay = dict(ref_values)
    overlay[name] = value
    replay(index, runner, overlay, nodes=downstream(index, [name]))
    worst_sqnr, worst_rel = float("inf"), 0.0
    for output in index.output_names:
        worst_sqnr = min(worst_sqnr, sqnr_db(ref_values[output], overlay[output]))
        worst_rel = max(worst_rel, tensor_diff(ref_values[output], overlay[output], tolerance).rel_l2)
    return worst_sqnr, worst_rel


# ---------------------------------------------------------------- keep-FP32 fixes, re-verified


@dataclass(frozen=True)
class Int8Verification:
    """An INT8 variant re-quantized with nodes kept in FP32, measured again against the same FP32 run."""

    before: Int8Report
    after: Int8Report
    excluded: tuple[str, ...]
    attempts: tuple[tuple[tuple[str, ...], float], ...] = ()  # (excluded so far, worst output SQNR)
    task: object | None = None  # a workbench.task.checks TaskResult on the final variant, when a task was given

    @property
    def ok(self) -> bool:
        return self.after.ok and (self.task is None or bool(self.task.ok))

    @property
    def model(self) -> Model:
        return self.after.candidate

    @property
    def quantized_fraction(self) -> float:
        """Share of the originally quantized nodes still quantized."""
        total = self.before.quantized_nodes
        return self.after.quantized_nodes / total if total else 1.0

    def save(self, path) -> "object":
        from pathlib import Path

        from workbench.io.save import save_model

        return save_model(self.model, Path(path), protect=self.before.reference.source_files)

    def to_dict(self) -> dict:
        after = self.after.to_dict()
        return {
            "ok": self.ok,
            "verdict": after["verdict"],
            "excluded": list(self.excluded),
            "outputs": after["outputs"],
            "before": {"verdict": self.before.verdict, "outputs": self.before.to_dict()["outputs"]},
            "quantized_nodes": {"before": self.before.quantized_nodes, "after": self.after.quantized_nodes},
            "attempts": [{"excluded": list(ex), "worst_output_sqnr_db": _db(db)} for ex, db in self.attempts],
            "ranked": after["ranked"],
            "task": self.task.to_dict() if self.task is not None else None,
        }

    def __repr__(self) -> str:
        return self.summary()

    def summary(self) -> str:
        status = "OK" if self.ok else "NOT FIXED"
        lines = [f"{self.model.name}: {status} with {len(self.excluded)} node(s) kept in FP32"]
        if self.excluded:
            lines.append(f"  kept FP32 (nodes_to_exclude): {', '.join(self.excluded)}")
        for name, after in self.after.outputs.items():
            before = self.before.outputs[name]
            lines.append(f"  output {name}: SQNR {before.sqnr_db:.1f} -> {after.sqnr_db:.1f} dB, rel-L2 {before.diff.rel_l2:.3g} -> {after.diff.rel_l2:.3g}")
        lines.append(f"  {self.after.quantized_nodes} of {self.before.quantized_nodes} quantized nodes still INT8")
        if self.task is not None:
            lines += ["  " + line for line in self.task.summary().splitlines()]
        return "\n".join(lines)

    def _repr_html_(self) -> str:
        return f"<pre>{html.escape(self.summary())}</pre>"


def exclude_nodes(report: Int8Report, nodes: Iterable[str], task=None) -> Int8Verification:
    """Re-quantize `report`'s FP32 model with these nodes (and those already excluded) kept in FP32, re-verify."""
    if report.settings.get("given"):
        raise WorkbenchError("this INT8 variant was given, not made here; quantize it here (analyze_int8 without a candidate) to re-quantize with exclusions.")
    nodes = tuple(dict.fromkeys(list(report.settings["exclude"]) + list(nodes)))
    after = _requantize(report, nodes)
    result = after.check_task(task) if task is not None else None
    return Int8Verification(report, after, nodes, ((nodes, _worst_sqnr(after)),), result)


def _requantize(report: Int8Report, exclude: tuple[str, ...], losses_too: bool = True, outputs_only: bool = False) -> Int8Report:
    start = time.perf_counter()
    s = report.settings
    candidate = quantize_int8(report.reference, per_channel=s["per_channel"], op_types=s["op_types"], exclude=exclude, reduce_range=s["reduce_range"])
    settings = {**s, "exclude": list(exclude)}
    return _measure(report.reference, candidate, settings, report.feed, report.reference_index, report.runner,
                    report.reference_values, report.tolerance, start, losses_too, outputs_only)


def auto_exclude(report: Int8Report, max_nodes: int = 8, task=None) -> Int8Verification:
    """Keep nodes in FP32, the one whose error alone harms the outputs most first, until the outputs pass.

    Each step re-quantizes from the FP32 model and measures the outputs again (about one
    quantization and one INT8 run); the order is `report.by_harm`, measured once. The result's
    `after` holds the full per-node measurement of the last variant.
    """
    if report.settings.get("given"):
        raise WorkbenchError("this INT8 variant was given, not made here; quantize it here to search for nodes to keep in FP32.")
    if report.quantized_nodes and not report.losses:  # measured with rank=False: rank now
        report = _measure(report.reference, report.candidate, report.settings, report.feed, report.reference_index,
                          report.runner, report.reference_values, report.tolerance, time.perf_counter())
    already = tuple(report.settings["exclude"])
    order = [loss.node for loss in report.by_harm if loss.node not in already][:max_nodes]
    excluded, current, attempts = already, report, []
    passes = lambda r: r.ok and (task is None or r.check_task(task).ok)  # noqa: E731
    for node in order:
        if passes(current):
            break
        excluded = excluded + (node,)
        current = _requantize(report, excluded, outputs_only=True)
        attempts.append((excluded, _worst_sqnr(current)))
    if current is not report:  # the per-node measurement of the last variant, without quantizing again
        current = _measure(report.reference, current.candidate, current.settings, report.feed, report.reference_index,
                           report.runner, report.reference_values, report.tolerance, time.perf_counter())
    result = current.check_task(task) if task is not None else None
    return Int8Verification(report, current, excluded, tuple(attempts), result)


def _worst_sqnr(report: Int8Report) -> float:
    return min(stat.sqnr_db for stat in report.outputs.values())


__all__ = [
    "INT8_TOLERANCE",
    "Int8Report",
    "Int8Verification",
    "NodeLoss",
    "TensorStat",
    "analyze_int8",
    "auto_exclude",
    "exclude_nodes",
    "sqnr_db",
]
