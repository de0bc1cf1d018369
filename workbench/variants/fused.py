"""Other variants of an FP32 model: fused (ONNX Runtime's optimizers) and INT8 (dynamic quantization).

    fused = variants.optimize_transformer(model, num_heads=12, hidden_size=384)          # com.microsoft fusions
    fused16 = variants.optimize_transformer(model, num_heads=12, hidden_size=384, float16=True)
    session = variants.session_optimized(model, "extended")     # what an InferenceSession runs
    int8 = variants.quantize_int8(model, per_channel=True, op_types=["MatMul"], exclude=["node_MatMul_91"])
    comparison = variants.compare_fused(model, fused, inputs=feed)
    comparison.first_divergent, comparison.fused_nodes, comparison.to_dict()

Every function returns a workbench Model held in memory. The user's file is only read: ONNX Runtime's
tools work on files, so they get a copy in a temporary folder of the workbench's own, removed afterwards.
The copy carries the workbench's node names (unnamed nodes get `<op>_<index>`), so that a node name in
a report is the one `nodes_to_exclude` and `workbench nodes` use.

Fused nodes keep some names: SkipLayerNormalization writes the tensor the LayerNormalization it replaces
wrote, BiasGelu the Gelu's, FusedMatMul the MatMul's. Tensors align by those surviving names, exactly as an
FP16 variant aligns through its Casts (workbench.compare.align); what a fused node replaced is the part of
the FP32 graph between its inputs and its outputs that the fused graph no longer holds.
"""

from __future__ import annotations

import html
import tempfile
from collections import Counter
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Sequence

import onnx
from onnx import TensorProto, helper

from workbench.compare.diff import TensorDiff, Tolerance
from workbench.diagnosis.result import Diagnosis
from workbench.errors import WorkbenchError
from workbench.io.model import Model, load_model, model_bytes, name_nodes
from workbench.io.save import save_model
from workbench.ir.graph import GraphIndex
from workbench.logs import muted
from workbench.render.json import finite_or_none

MS_DOMAIN = "com.microsoft"
SESSION_LEVELS = ("basic", "extended", "all")
# A fused FP32 graph computes the same function with the float operations in another order: per tensor,
# errors of 1e-7 to 1e-6 (MiniLM: 1e-6 at the output). 1e-4 leaves a factor 100 over that and still
# catches a wrong fusion (a wrong epsilon, a dropped bias, an approximated Gelu at 1e-3). An FP16 fused
# variant is judged as any FP16 variant, at 1e-2.
FUSED_FP32_TOLERANCE = Tolerance(rel_l2=1e-4)
FUSED_FP16_TOLERANCE = Tolerance()


# ---------------------------------------------------------------- making variants


def optimize_transformer(
    model,
    num_heads: int = 0,
    hidden_size: int = 0,
    opt_level: int = 0,
    model_type: str = "bert",
    float16: bool = False,
    keep_io_types: bool = True,
) -> Model:
    """ONNX Runtime's transformer optimizer (onnxruntime.transformers.optimizer.optimize_model).

    `num_heads`/`hidden_size` 0: the optimizer reads them from the graph. `opt_level` 0: the
    optimizer's own Python fusions only; 1, 2, 99: an ONNX Runtime session optimizes first.
    `float16`: then the optimizer's own FP16 conversion (`convert_float_to_float16`), with FP32
    inputs and outputs when `keep_io_types`.
    """
    from onnxruntime.transformers.optimizer import optimize_model

    reference = load_model(model)
    if opt_level not in (0, 1, 2, 99):
        raise WorkbenchError(f"opt_level {opt_level} is not one of 0, 1, 2, 99 (the optimizer's levels).")
    with _workdir() as folder, muted():  # ORT's Python tools log advice at WARNING on the root logger
        source = _write(reference, folder)
        try:
            optimizer = optimize_model(
                str(source), model_type=model_type, num_heads=num_heads, hidden_size=hidden_size,
                opt_level=opt_level, use_gpu=False,
            )
            if float16:
                optimizer.convert_float_to_float16(keep_io_types=keep_io_types)
        except WorkbenchError:
            raise
        except Exception as exc:  # the optimizer asserts and raises on graphs it does not expect
            raise WorkbenchError(f"ONNX Runtime's transformer optimizer failed on {reference.name}: {_detail(exc)}") from None
        proto = optimizer.model
    counts = fused_op_counts(proto, reference.proto)
    label = f"fused (optimizer, opt_level {opt_level}{', float16' if float16 else ''})"
    origin = f"onnxruntime.transformers optimizer: {_counts_text(counts) or 'nothing fused'}"
    return _variant(reference, proto, origin, f"{reference.name} {label}")


def session_optimized(model, level: str = "extended") -> Model:
    """The graph an ONNX Runtime CPU session runs at `level` (basic, extended, all), as a model."""
    import onnxruntime as ort

    reference = load_model(model)
    levels = {
        "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
        "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
        "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
    }
    if level not in levels:
        raise WorkbenchError(f"unknown session optimization level '{level}'; use one of {', '.join(SESSION_LEVELS)}.")
    with _workdir() as folder:
        source = _write(reference, folder)
        options = ort.SessionOptions()
        options.graph_optimization_level = levels[level]
        options.optimized_model_filepath = str(folder / "optimized.onnx")
        options.log_severity_level = 3
        try:
            ort.InferenceSession(str(source), options, providers=["CPUExecutionProvider"])
        except Exception as exc:
            raise WorkbenchError(f"ONNX Runtime cannot load {reference.name} to optimize it: {_detail(exc)}") from None
        proto = onnx.load(str(folder / "optimized.onnx"))
    counts = fused_op_counts(proto, reference.proto)
    origin = f"onnxruntime session level {level}: {_counts_text(counts) or 'nothing fused'}"
    return _variant(reference, proto, origin, f"{reference.name} fused (session, {level})")


def quantize_int8(
    model,
    per_channel: bool = False,
    op_types: Sequence[str] | None = None,
    exclude: Iterable[str] = (),
    reduce_range: bool = False,
    weight_type: str = "int8",
) -> Model:
    """ONNX Runtime's dynamic INT8 quantization (onnxruntime.quantization.quantize_dynamic).

    Weights become INT8 (per output channel when `per_channel`), activations are quantized to
    UINT8 at run time by DynamicQuantizeLinear. `op_types`: which ops to quantize (default: all it
    can, MatMul, Gather, Attention...); `exclude`: node names kept in FP32 (`nodes_to_exclude`).
    """
    from onnxruntime.quantization import QuantType, quantize_dynamic

    reference = load_model(model)
    exclude = tuple(exclude)
    names = {node.name for node in reference.graph.node}
    unknown = [name for name in exclude if name not in names]
    if unknown:
        raise WorkbenchError(f"no node named '{unknown[0]}' in {reference.name}; `workbench nodes` lists the names.")
    types = {"int8": QuantType.QInt8, "uint8": QuantType.QUInt8}
    if weight_type not in types:
        raise WorkbenchError(f"weight type '{weight_type}' is not int8 or uint8.")
    with _workdir() as folder, muted():  # ORT's Python tools log advice at WARNING on the root logger
        source = _write(reference, folder)
        target = folder / "int8.onnx"
        try:
            quantize_dynamic(
                source, target, op_types_to_quantize=list(op_types) if op_types else None, per_channel=per_channel,
                reduce_range=reduce_range, weight_type=types[weight_type], nodes_to_exclude=list(exclude),
                use_external_data_format=model_bytes(reference) > 2**31 - 1,
            )
        except Exception as exc:
            raise WorkbenchError(f"ONNX Runtime's dynamic quantization failed on {reference.name}: {_detail(exc)}") from None
        proto = onnx.load(str(target))
    quantized = sum(1 for node in proto.graph.node if node.op_type in QUANTIZED_OPS)
    parts = ["per-channel" if per_channel else "per-tensor"]
    if op_types:
        parts.append("ops " + ",".join(op_types))
    if exclude:
        parts.append(f"{len(exclude)} excluded")
    origin = f"onnxruntime quantize_dynamic ({', '.join(parts)}): {quantized} quantized nodes"
    return _variant(reference, proto, origin, f"{reference.name} int8 ({', '.join(parts)})")


# Ops that hold quantized arithmetic in a dynamically quantized graph.
QUANTIZED_OPS = {
    "DynamicQuantizeLinear", "MatMulInteger", "DynamicQuantizeMatMul", "QuantizeLinear", "DequantizeLinear",
    "QAttention", "QGemm", "ConvInteger", "DynamicQuantizeLSTM", "QEmbedLayerNormalization", "MatMulIntegerToFloat",
}


def _variant(reference: Model, proto: onnx.ModelProto, origin: str, name: str) -> Model:
    _ensure_ms_opset(proto)
    name_nodes(proto.graph)
    return reference.with_proto(proto, origin=origin, name=name)


def _ensure_ms_opset(proto: onnx.ModelProto) -> None:
    """The optimizer's opt_level 0 output uses com.microsoft ops without importing the domain: add it."""
    domains = {opset.domain for opset in proto.opset_import}
    if MS_DOMAIN not in domains and any(node.domain == MS_DOMAIN for node in proto.graph.node):
        proto.opset_import.append(helper.make_opsetid(MS_DOMAIN, 1))


@contextmanager
def _workdir():
    with tempfile.TemporaryDirectory(prefix="workbench-variant-") as folder:
        yield Path(folder)


def _write(model: Model, folder: Path) -> Path:
    """The workbench's copy of the model (its node names) in our own folder, for tools that read files."""
    return save_model(model, folder / "source.onnx")  # weights kept in external files are read in


def _detail(exc: Exception) -> str:
    text = str(exc).strip()
    return (text.splitlines()[-1] if text else type(exc).__name__)[:300]


# ---------------------------------------------------------------- what was fused


def fused_op_counts(fused: onnx.ModelProto, baseline: onnx.ModelProto) -> dict[str, int]:
    """Op types of the variant that the baseline does not have (the fused ops), with their counts."""
    known = {(n.domain or "", n.op_type) for n in baseline.graph.node}
    counts = Counter(n.op_type for n in fused.graph.node if (n.domain or "", n.op_type) not in known and n.op_type != "Cast")
    return dict(sorted(counts.items()))


def _counts_text(counts: dict[str, int]) -> str:
    return ", ".join(f"{count} {op}" for op, count in counts.items())


@dataclass(frozen=True)
class FusedNode:
    """A node of the fused variant that is not in the baseline, and the baseline nodes it stands for."""

    node: str
    op_type: str
    domain: str
    replaced: tuple[tuple[str, str], ...]  # (baseline node name, op type), in graph order
    outputs: dict[str, TensorDiff]  # its aligned outputs against the baseline's tensors
    local: TensorDiff | None = None  # its own error: run on the baseline's inputs (when computed)

    @property
    def worst(self) -> TensorDiff | None:
        return max(self.outputs.values(), key=lambda d: (d.nonfinite, d.rel_l2)) if self.outputs else None

    @property
    def ok(self) -> bool:
        return all(d.ok for d in self.outputs.values())

    def fused_text(self) -> str:
        ops = Counter(op for _, op in self.replaced)
        return " + ".join(f"{n}×{op}" if n > 1 else op for op, n in ops.items()) or "nothing it can name"

    def to_dict(self) -> dict:
        worst = self.worst
        return {
            "node": self.node,
            "op_type": self.op_type,
            "domain": self.domain,
            "replaced": [{"node": n, "op_type": op} for n, op in self.replaced],
            "rel_l2": finite_or_none(worst.rel_l2) if worst else None,
            "nonfinite": worst.nonfinite if worst else 0,
            "local_rel_l2": finite_or_none(self.local.rel_l2) if self.local else None,
            "ok": self.ok,
        }


@dataclass(frozen=True)
class FusedComparison:
    """A fused variant against its FP32 baseline: the diagnosis, the fused nodes, the first that diverges."""

    diagnosis: Diagnosis = field(repr=False)
    fused_nodes: tuple[FusedNode, ...]
    unaligned: tuple[str, ...]  # fused nodes none of whose outputs has a name in the baseline
    tolerance: Tolerance
    fp16: bool = False  # the variant's weights are FP16 (the optimizer's float16 path)

    @property
    def first_divergent(self) -> FusedNode | None:
        """The first fused node (graph order) whose output leaves tolerance, or None."""
        return next((f for f in self.fused_nodes if not f.ok), None)

    @property
    def worst(self) -> FusedNode | None:
        scored = [f for f in self.fused_nodes if f.worst is not None]
        return max(scored, key=lambda f: (f.worst.nonfinite, f.worst.rel_l2)) if scored else None

    @property
    def verdict(self) -> str:
        return self.diagnosis.verdict

    @property
    def op_counts(self) -> dict[str, int]:
        return dict(sorted(Counter(f.op_type for f in self.fused_nodes).items()))

    @property
    def roots(self) -> tuple[dict, ...]:
        """The diagnosis' roots, explained as fusion faults when the variant is FP32.

        For an FP32 fused variant, a node whose own output (on the baseline's inputs) is wrong
        computes another function than what it replaced: diagnose's FP16 wording does not apply.
        """
        fused = {f.node: f for f in self.fused_nodes}
        roots = []
        for root in self.diagnosis.roots:
            item = root.to_dict()
            item.pop("fixes", None)  # FP16 fixes apply to an FP16 conversion, not to a fusion
            if not self.fp16:
                what = f" (fuses {fused[root.node].fused_text()})" if root.node in fused else ""
                item["kind"] = "fused_node_error" if root.node in fused else "node_error"
                item["explanation"] = (
                    f"{root.op_type} `{root.node}`{what}: on the baseline's own inputs its output has a relative "
                    f"error of {root.local.rel_l2:.3g} (max {root.local.max_abs:.3g}); the fault is this node, "
                    "not something upstream, and it harms the outputs"
                )
            roots.append(item)
        return tuple(roots)

    def to_dict(self) -> dict:
        first, worst = self.first_divergent, self.worst
        return {
            **self.diagnosis.to_dict(),
            "roots": list(self.roots),
            "candidate": self.diagnosis.candidate.name,
            "tolerance": self.tolerance.rel_l2,
            "fused_ops": self.op_counts,
            "first_divergent": first.to_dict() if first else None,
            "worst_fused": worst.to_dict() if worst else None,
            "fused_nodes": [f.to_dict() for f in self.fused_nodes],
            "unaligned": list(self.unaligned),
        }

    def __repr__(self) -> str:
        return self.summary()

    def summary(self) -> str:
        d = self.diagnosis
        lines = [
            f"{d.candidate.name} against {d.reference.name} ({d.mode}, tolerance {self.tolerance.rel_l2:g}): {d.verdict.upper()}",
            f"  fused: {_counts_text(self.op_counts) or 'no fused nodes'}"
            + (f" ({len(self.unaligned)} without a surviving output name)" if self.unaligned else ""),
        ]
        for name, diff in d.outputs.items():
            lines.append(f"  output {name}: rel-L2 {diff.rel_l2:.3g}, max |diff| {diff.max_abs:.3g}, non-finite {diff.nonfinite}")
        first, worst = self.first_divergent, self.worst
        if first is not None:
            lines.append(f"  FIRST DIVERGENT fused node: {_node_line(first)}")
        elif worst is not None:
            lines.append(f"  no fused node leaves tolerance; the largest error: {_node_line(worst)}")
        lines += [f"  ROOT {f['kind']}: {f['explanation']}" for f in self.roots]
        return "\n".join(lines)

    def _repr_html_(self) -> str:
        rows = "".join(
            f"<tr><td><code>{html.escape(f.node)}</code></td><td>{html.escape(f.op_type)}</td>"
            f"<td>{html.escape(f.fused_text())}</td><td>{f.worst.rel_l2:.3g}</td><td>{'ok' if f.ok else '<b>diverges</b>'}</td></tr>"
            for f in self.fused_nodes
            if f.worst is not None
        )
        return (
            f"<div><pre>{html.escape(self.summary())}</pre>"
            "<table><tr><th>fused node</th><th>op</th><th>replaces</th><th>rel-L2</th><th></th></tr>"
            f"{rows}</table></div>"
        )


def _node_line(f: FusedNode) -> str:
    local = f", own error {f.local.rel_l2:.3g}" if f.local is not None else ""
    return f"{f.op_type} `{f.node}` (fuses {f.fused_text()}): rel-L2 {f.worst.rel_l2:.3g}{local}"


def compare_fused(model, fused, inputs=None, mode: str = "faithful", tolerance: Tolerance | None = None) -> FusedComparison:
    """Compare a fused variant with the FP32 baseline, tensor by tensor where names survive the fusions.

    Runs workbench.diagnose (faithful mode runs every node, com.microsoft ones included, in its own
    ONNX Runtime session; runtime mode runs the variant whole). `tolerance` default: 1e-4 for an FP32
    variant (FUSED_FP32_TOLERANCE), 1e-2 when its weights are FP16.
    """
    from workbench.diagnosis.search import diagnose

    reference, candidate = load_model(model), load_model(fused)
    fp16 = _has_fp16_weights(candidate)
    if tolerance is None:
        tolerance = FUSED_FP16_TOLERANCE if fp16 else FUSED_FP32_TOLERANCE
    report = diagnose(reference, candidate=candidate, inputs=inputs, mode=mode, tolerance=tolerance)
    ref_index, cand_index = report.reference_index, GraphIndex.of(candidate)
    baseline = {(n.name, n.op_type, tuple(n.output)) for n in ref_index.nodes}
    comparisons = {c.node: c for c in report.nodes}
    present = set(cand_index.producer) | set(cand_index.initializers) | set(cand_index.input_names)
    nodes, unaligned = [], []
    for node in cand_index.nodes:
        if (node.name, node.op_type, tuple(node.output)) in baseline or node.op_type == "Cast" or cand_index.produces_constants(node):
            continue
        if (node.domain or "") != MS_DOMAIN and any(n.op_type == node.op_type for n in ref_index.nodes):
            continue  # a rewired standard node (a reshaped MatMul, a renamed Add): not a fusion
        comparison = comparisons.get(node.name)
        outputs = dict(comparison.outputs) if comparison else {}
        if not outputs:
            unaligned.append(node.name)
        ref_outputs = [report.alignment[name] for name in node.output if name in report.alignment]
        replaced = _replaced(ref_index, ref_outputs, present)
        local = comparison.local if comparison else None
        nodes.append(FusedNode(node.name, node.op_type, node.domain or "", replaced, outputs, local))
    return FusedComparison(report, tuple(nodes), tuple(unaligned), tolerance, fp16)


def _replaced(index: GraphIndex, outputs: list[str], present: set[str]) -> tuple[tuple[str, str], ...]:
    """Baseline nodes between `outputs` and the tensors the fused graph still holds, walking back."""
    found: dict[str, onnx.NodeProto] = {}
    stack = list(outputs)
    seen: set[str] = set()
    while stack:
        name = stack.pop()
        if name in seen:
            continue
        seen.add(name)
        producer = index.producer.get(name)
        if producer is None or producer.name in found:
            continue
        found[producer.name] = producer
        stack.extend(n for n in producer.input if n and n not in present)
    order = {node.name: i for i, node in enumerate(index.nodes)}
    return tuple((n.name, n.op_type) for n in sorted(found.values(), key=lambda n: order[n.name]) if not index.produces_constants(n))


def _has_fp16_weights(model: Model) -> bool:
    return any(t.data_type == TensorProto.FLOAT16 for t in model.graph.initializer)


__all__ = [
    "FUSED_FP16_TOLERANCE",
    "FUSED_FP32_TOLERANCE",
    "FusedComparison",
    "FusedNode",
    "compare_fused",
    "fused_op_counts",
    "optimize_transformer",
    "quantize_int8",
    "session_optimized",
]
