"""Fixes: small, named changes that make an FP16 variant give the right numbers.

Every fix works on the FP32 source and is followed by the workbench's FP16 conversion, so
fixes compose (apply a list) and undo (apply the list without it). Two families:
- value fixes change a constant so FP16 can hold it (clamp to ±65504, a mask constant to
  -1e4, an eps raised to FP16's smallest normal) or rewrite a mask Mul as a Where;
- precision fixes keep nodes in FP32 (a node, an op type, the region between tensors);
  the conversion puts Casts around them, and their weights stay FP32 too;
- a fold (fold-bn) folds BatchNormalization and constant scalings into the Conv/Gemm/MatMul
  weights before them, in FP32, with ONNX Runtime's basic optimizer, then converts.
The reference stays the original model, and the user's file is never touched.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import ClassVar, Iterable, Sequence

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from workbench.convert.low_precision import (
    ConversionStats,
    Fp16Options,
    convert_to_fp16,
)
from workbench.diagnosis import explain
from workbench.errors import WorkbenchError
from workbench.formats import FP16
from workbench.io.model import Model
from workbench.ir.graph import GraphIndex

# The mask value transformers used before 2022 (then float32.min): finite in FP16, and
# exp(-1e4 - max) is still exactly 0 after Softmax.
MASK_VALUE = -1e4
# Ops that pass a constant on unchanged in value: a fix walks back through them to the stored tensor.
_FORWARDING_OPS = {"Cast", "Identity", "Reshape", "Unsqueeze", "Squeeze", "Expand", "Transpose", "Flatten"}
# How far after a mask Mul a Softmax may come (Add to scores, maybe a Cast or Reshape in between).
_SOFTMAX_SEARCH_DEPTH = 6


class Fix:
    """Base of all fixes. Subclasses are frozen dataclasses; `name` says the kind of fix."""

    name: ClassVar[str] = ""
    rewrites_source: ClassVar[bool] = False  # changes the FP32 graph before conversion

    @property
    def description(self) -> str:
        raise NotImplementedError

    def check(self, index: GraphIndex) -> None:
        """Raise WorkbenchError, one line, when the fix does not apply to this graph."""

    def preview(self, model: Model) -> list[str]:
        """What the fix changes in `model`, one line per change; nothing is modified."""
        return [self.description]

    def rewrite(self, graph: onnx.GraphProto, index: GraphIndex) -> None:
        """Change the FP32 graph in place (value fixes and rewrites only)."""

    def fp32_nodes(self, index: GraphIndex) -> set[str]:
        return set()

    def fp32_op_types(self) -> set[str]:
        return set()

    def constants_changed(self) -> tuple[str, ...]:
        return ()

    def to_dict(self) -> dict:
        return {"name": self.name, "description": self.description}

    def __str__(self) -> str:
        return f"{self.name}: {self.description}"


# ---------------------------------------------------------------- value fixes


class _ConstantFix(Fix):
    """Rewrites the values of stored constants (initializers or Constant nodes) element by element."""

    rewrites_source = True
    tensors: tuple[str, ...]

    def new_values(self, values: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def changed(self, values: np.ndarray) -> np.ndarray:
        """Boolean mask of the elements this fix changes."""
        with np.errstate(invalid="ignore"):
            return self.new_values(values) != values

    def check(self, index: GraphIndex) -> None:
        for name in self.tensors:
            values = _constant_values(index, name)
            if not values.dtype.kind == "f" or not self.changed(values).any():
                raise WorkbenchError(f"{self.name} does not apply to `{name}`: none of its values needs changing.")

    def preview(self, model: Model) -> list[str]:
        index = _index(model)
        lines = []
        for name in self.tensors:
            values = _constant_values(index, name)
            changed = self.changed(values)
            before, after = values[changed], self.new_values(values)[changed]
            sample = ", ".join(f"{_num(b)} -> {_num(a)}" for b, a in list(zip(before.ravel(), after.ravel()))[:3])
            lines.append(f"`{_stored_source(index, name)}`: {int(changed.sum())} of {values.size} values ({sample})")
        return lines

    def rewrite(self, graph: onnx.GraphProto, index: GraphIndex) -> None:
        for name in self.tensors:
            source = _stored_source(index, name)
            values = _constant_values(index, source)
            _store_constant(graph, index, source, self.new_values(values).astype(values.dtype))

    def constants_changed(self) -> tuple[str, ...]:
        return self.tensors


@dataclass(frozen=True)
class ClampConstants(_ConstantFix):
    tensors: tuple[str, ...]
    name: ClassVar[str] = "clamp-constants"

    @property
    def description(self) -> str:
        return f"clamp {_names(self.tensors)} to FP16's largest finite value ±65504 instead of letting it become ±inf"

    def new_values(self, values: np.ndarray) -> np.ndarray:
        with np.errstate(invalid="ignore"):
            out_of_range = np.isfinite(values) & (np.abs(values) > FP16.max)
        return np.where(out_of_range, np.sign(values) * FP16.max, values)


@dataclass(frozen=True)
class MaskConstant(_ConstantFix):
    tensors: tuple[str, ...]
    value: float = MASK_VALUE
    name: ClassVar[str] = "mask-constant"

    @property
    def description(self) -> str:
        return (
            f"set the attention-mask constant {_names(self.tensors)} to {self.value:g} where it is below -65504 "
            "(finite in FP16; Softmax still gives 0 there), as transformers did before 2022"
        )

    def new_values(self, values: np.ndarray) -> np.ndarray:
        with np.errstate(invalid="ignore"):
            return np.where(np.isfinite(values) & (values < -FP16.max), self.value, values)


@dataclass(frozen=True)
class RaiseEps(_ConstantFix):
    tensors: tuple[str, ...]
    value: float = FP16.normal_min
    name: ClassVar[str] = "raise-eps"

    @property
    def description(self) -> str:
        return f"raise the small constant {_names(self.tensors)} to {self.value:.3g}, FP16's smallest normal value, so it is not 0"

    def new_values(self, values: np.ndarray) -> np.ndarray:
        tiny = (values != 0) & (np.abs(values) < self.value)
        return np.where(tiny, np.sign(values) * self.value, values)


@dataclass(frozen=True)
class MaskToWhere(Fix):
    """`mask * C` with mask in {0, 1} becomes `Where(mask, C, 0)`: no 0 × -inf, so no NaN."""

    node: str
    name: ClassVar[str] = "mask-to-where"
    rewrites_source: ClassVar[bool] = True

    @property
    def description(self) -> str:
        return f"compute Mul `{self.node}` as Where(mask != 0, constant, 0): the unmasked positions get an exact 0, never 0 × -inf"

    def check(self, index: GraphIndex) -> None:
        _mask_mul_parts(index, self.node)

    def preview(self, model: Model) -> list[str]:
        mask, constant = _mask_mul_parts(_index(model), self.node)
        return [f"Mul `{self.node}`({mask}, {constant}) -> Cast(`{mask}` to bool) and Where(that, `{constant}`, 0)"]

    def rewrite(self, graph: onnx.GraphProto, index: GraphIndex) -> None:
        mask, constant = _mask_mul_parts(index, self.node)
        position = next(i for i, n in enumerate(graph.node) if n.name == self.node)
        output = graph.node[position].output[0]
        is_set, zero = f"{self.node}__is_set", f"{self.node}__zero"
        graph.initializer.append(numpy_helper.from_array(np.zeros((), np.float32), zero))
        cast = helper.make_node("Cast", [mask], [is_set], to=TensorProto.BOOL, name=is_set)
        where = helper.make_node("Where", [is_set, constant, zero], [output], name=self.node)
        del graph.node[position]
        graph.node.insert(position, where)
        graph.node.insert(position, cast)


# Ops whose constant-scaling of a Conv/Gemm/MatMul output ORT's basic optimizer folds into the weights.
_FOLDABLE = {"BatchNormalization", "Mul", "Add", "Sub", "Div"}
_WEIGHTED = {"Conv", "ConvTranspose", "Gemm", "MatMul"}


@dataclass(frozen=True)
class FoldIntoWeights(Fix):
    """Fold BatchNormalization and constant Mul/Add after a Conv/Gemm/MatMul into its weights, in FP32.

    Done by ONNX Runtime's own optimizer at its basic level (ORT_ENABLE_BASIC, saved with
    `optimized_model_filepath`): Conv+BatchNormalization, Conv+Mul, Conv+Add fusion and constant
    folding, all in FP32 and all standard ONNX ops. It is what ORT (and TensorRT) do to the model
    anyway before running it, and it is their tested algebra, not a copy of it here. onnx-ir's
    passes do constant folding but no Conv+BatchNormalization fusion.

    A fused Conv keeps its node name and takes over the folded node's output tensor, so the
    re-verification, which aligns tensors by name, compares it with the reference's
    BatchNormalization output; the Conv's own output (now gone) is simply not compared.
    """

    nodes: tuple[str, ...]
    name: ClassVar[str] = "fold-bn"
    rewrites_source: ClassVar[bool] = True

    @property
    def description(self) -> str:
        return (
            f"fold {_names(self.nodes)} into the weights of the Conv/Gemm/MatMul before it in FP32 "
            "(ONNX Runtime's basic optimizer folds every such node), then convert: every weight stays FP16"
        )

    def check(self, index: GraphIndex) -> None:
        for name in self.nodes:
            reason = _why_not_foldable(index, name)
            if reason:
                raise WorkbenchError(f"fold-bn does not apply to `{name}`: {reason}.")

    def rewrite(self, graph: onnx.GraphProto, index: GraphIndex) -> None:
        folded = _ort_basic_optimized(graph, index)
        left = sorted(set(self.nodes) & {n.name for n in folded.node})
        if left:
            raise WorkbenchError(f"fold-bn: ONNX Runtime's optimizer did not fold `{left[0]}` into the weights before it.")
        graph.CopyFrom(folded)


def _why_not_foldable(index: GraphIndex, name: str) -> str:
    node = index.node_by_name.get(name)
    if node is None:
        return "no node of that name in the model"
    if node.op_type not in _FOLDABLE:
        return f"it is a {node.op_type}, not a BatchNormalization or a Mul/Add by a constant"
    producer = index.producer.get(node.input[0]) if node.input else None
    if producer is None or producer.op_type not in _WEIGHTED:
        return "its input does not come from a Conv, Gemm or MatMul"
    if node.op_type != "BatchNormalization" and not all(index.is_constant(n) for n in node.input[1:] if n):
        return "its other input is not a constant"
    if len(index.consumers.get(node.input[0], [])) > 1:
        return f"the output of {producer.op_type} `{producer.name}` has other readers"
    return ""


def _ort_basic_optimized(graph: onnx.GraphProto, index: GraphIndex) -> onnx.GraphProto:
    """`graph` as ONNX Runtime's basic-level optimizer saves it (weights read back in)."""
    import tempfile
    from pathlib import Path

    import onnxruntime as ort
    from onnx.external_data_helper import (
        load_external_data_for_model,
        uses_external_data,
    )

    proto = helper.make_model(graph, opset_imports=index.opset_imports)
    proto.ir_version = max(proto.ir_version, 7)
    if index.data_dir is not None and any(uses_external_data(t) for t in proto.graph.initializer):
        load_external_data_for_model(proto, str(index.data_dir))
    with tempfile.TemporaryDirectory(prefix="workbench-fold-") as folder:
        source, target = Path(folder) / "source.onnx", Path(folder) / "folded.onnx"
        onnx.save_model(proto, source, save_as_external_data=proto.ByteSize() > _PROTO_LIMIT, location="source.data")
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
        options.optimized_model_filepath = str(target)
        options.add_session_config_entry("session.optimized_model_external_initializers_file_name", "folded.data")
        options.add_session_config_entry("session.optimized_model_external_initializers_min_size_in_bytes", "1024")
        try:
            ort.InferenceSession(str(source), options, providers=["CPUExecutionProvider"])
        except Exception as exc:  # ORT's own message, on one line
            raise WorkbenchError(f"fold-bn: ONNX Runtime could not optimize the model: {str(exc).splitlines()[0]}") from None
        folded = onnx.load_model(target)  # reads folded.data back in
    return folded.graph


_PROTO_LIMIT = 1 << 30  # above this, the model goes to ORT with its weights in a file beside it (protobuf's 2 GB)


# ---------------------------------------------------------------- precision fixes


@dataclass(frozen=True)
class KeepFp32(Fix):
    nodes: tuple[str, ...]
    reason: str = ""
    lost_at: tuple[str, ...] = ()  # tensors whose value FP16 storage loses, where the region starts
    name: ClassVar[str] = "keep-fp32"

    @property
    def description(self) -> str:
        because = f" ({self.reason})" if self.reason else ""
        return f"keep {_names(self.nodes)} in FP32 with Casts around {'it' if len(self.nodes) == 1 else 'them'}{because}"

    def to_dict(self) -> dict:
        result = super().to_dict()
        if self.lost_at:
            result["lost_at"] = list(self.lost_at)
        return result

    def check(self, index: GraphIndex) -> None:
        for name in self.nodes:
            if name not in index.node_by_name:
                raise WorkbenchError(f"no node named '{name}' in the model; node names are listed by `workbench nodes`.")

    def fp32_nodes(self, index: GraphIndex) -> set[str]:
        return set(self.nodes)


@dataclass(frozen=True)
class KeepOpType(Fix):
    op_type: str
    name: ClassVar[str] = "keep-op-type"

    @property
    def description(self) -> str:
        return f"keep every {self.op_type} node in FP32 with Casts around them"

    def check(self, index: GraphIndex) -> None:
        if not any(node.op_type == self.op_type for node in index.nodes):
            present = sorted({node.op_type for node in index.nodes})
            raise WorkbenchError(f"the model has no {self.op_type} node; its op types are {', '.join(present)}.")

    def preview(self, model: Model) -> list[str]:
        nodes = [n.name for n in _index(model).nodes if n.op_type == self.op_type]
        return [f"{len(nodes)} {self.op_type} nodes stay FP32: {_names(tuple(nodes))}"]

    def fp32_op_types(self) -> set[str]:
        return {self.op_type}


@dataclass(frozen=True)
class KeepBetween(Fix):
    """Keep the subgraph from tensors `start` to tensors `end` in FP32: every node downstream
    of a start tensor and upstream of (or producing) an end tensor."""

    start: tuple[str, ...]
    end: tuple[str, ...]
    name: ClassVar[str] = "keep-between"

    @property
    def description(self) -> str:
        return f"keep the nodes from {_names(self.start)} to {_names(self.end)} in FP32"

    def check(self, index: GraphIndex) -> None:
        known = set(index.producer) | set(index.input_names) | set(index.initializers)
        for name in self.start + self.end:
            if name not in known:
                raise WorkbenchError(f"no tensor named '{name}' in the model; `workbench nodes` lists each node's tensors.")
        if not self.fp32_nodes(index):
            raise WorkbenchError(f"no node lies between {_names(self.start)} and {_names(self.end)}; is the order reversed?")

    def preview(self, model: Model) -> list[str]:
        return [f"stay FP32: {_names(tuple(sorted(self.fp32_nodes(_index(model)))))}"]

    def fp32_nodes(self, index: GraphIndex) -> set[str]:
        after = _downstream_nodes(index, self.start)
        before = _upstream_nodes(index, self.end)
        return {node.name for node in index.nodes if node.name in after and node.name in before}


# ---------------------------------------------------------------- applying fixes


def apply(reference: Model, fixes: Sequence[Fix], base: Fp16Options = Fp16Options()) -> tuple[Model, ConversionStats]:
    """The FP16 variant of `reference` with `fixes` applied, in order; `reference` is not modified."""
    index = _index(reference)
    for fix in fixes:
        fix.check(index)
    source = reference
    rewriting = [fix for fix in fixes if fix.rewrites_source]
    if rewriting:
        proto = onnx.ModelProto()
        proto.CopyFrom(reference.proto)
        for fix in rewriting:
            fix.rewrite(proto.graph, GraphIndex(proto.graph, list(proto.opset_import), data_dir=reference.data_dir))
        source = reference.with_proto(proto, origin="fixed FP32 source")
    # A node a rewrite removed (a BatchNormalization folded into its Conv) has nothing left to keep.
    present = set(_index(source).node_by_name)
    keep = frozenset().union(*(fix.fp32_nodes(index) for fix in fixes)) & present
    options = replace(
        base,
        keep_nodes=frozenset(base.keep_nodes) | keep,
        keep_op_types=frozenset(base.keep_op_types).union(*(fix.fp32_op_types() for fix in fixes)),
    )
    candidate, stats = convert_to_fp16(source, options)
    return candidate.with_proto(candidate.proto, origin=f"fixed {base.precision}", name=f"{reference.name} ({base.precision}, fixed)"), stats


# ---------------------------------------------------------------- fixes named on the command line

_SPEC_HELP = (
    "clamp-constants=T1,T2 | mask-constant=T | raise-eps=T | mask-to-where=NODE | keep-fp32=N1,N2 | "
    "keep-op-type=OP | keep-between=START1,START2:END1,END2 | fold-bn=N1,N2"
)


def parse_fix(spec: str) -> Fix:
    """A fix from its command-line form NAME=TARGETS, e.g. `mask-constant=val_32`, `keep-fp32=ln_pow,ln_var`."""
    name, _, target = spec.partition("=")
    parts = tuple(t for t in target.split(",") if t)
    if not parts:
        raise WorkbenchError(f"fix '{spec}' names no target; write NAME=TARGETS, one of: {_SPEC_HELP}.")
    if name == "keep-between":
        start, _, end = target.partition(":")
        if not start or not end:
            raise WorkbenchError(f"keep-between needs START:END tensors, e.g. keep-between=x:y (got '{target}').")
        return KeepBetween(tuple(start.split(",")), tuple(end.split(",")))
    builders = {
        "clamp-constants": lambda: ClampConstants(parts),
        "mask-constant": lambda: MaskConstant(parts),
        "raise-eps": lambda: RaiseEps(parts),
        "keep-fp32": lambda: KeepFp32(parts),
        "fold-bn": lambda: FoldIntoWeights(parts),
        "mask-to-where": lambda: MaskToWhere(_single(name, parts)),
        "keep-op-type": lambda: KeepOpType(_single(name, parts)),
    }
    if name not in builders:
        raise WorkbenchError(f"unknown fix '{name}'; known fixes: {_SPEC_HELP}.")
    return builders[name]()


def _single(name: str, parts: tuple[str, ...]) -> str:
    if len(parts) != 1:
        raise WorkbenchError(f"{name} takes one target, not {len(parts)}.")
    return parts[0]


# ---------------------------------------------------------------- proposals


def propose(kind: str, node: str, evidence: explain.NodeEvidence, index: GraphIndex, values: dict) -> tuple[Fix, ...]:
    """Fixes that address a root of this kind at reference node `node`, the least FP32 first.

    `index` and `values` are the reference graph and its captured tensors (FP32).
    """
    at_node = propose_at_node(kind, node, evidence, index, values)
    from_loss = _stored_loss_fix(kind, node, index, values)
    if from_loss is None:
        return at_node
    return (from_loss,) + tuple(f for f in at_node if f != from_loss)


def propose_at_node(kind: str, node: str, evidence: explain.NodeEvidence, index: GraphIndex, values: dict) -> tuple[Fix, ...]:
    """Fixes for a root of this kind at `node` itself (see `propose`)."""
    constants = [i.name for i in evidence.lossy_constants]
    if kind == explain.CONSTANT_OUT_OF_RANGE:
        overflowing = tuple(i.name for i in evidence.lossy_constants if i.overflows)
        if _is_normalisation_statistic(index, node, overflowing):
            # Clamping is wrong here: a variance of 65504 instead of 9.79e7 scales the channel 38x.
            folding = (FoldIntoWeights((node,)),) if not _why_not_foldable(index, node) else ()
            return folding + (KeepFp32((node,)),)
        fixes: list[Fix] = []
        if _is_mask_constant(index, node, overflowing):
            fixes.append(MaskConstant(overflowing))
            if _is_mask_mul(index, node, values):
                fixes.append(MaskToWhere(node))
        fixes.append(ClampConstants(overflowing))
        return tuple(fixes) + (KeepFp32((node,)),)
    if kind == explain.CONSTANT_UNDERFLOW:
        return (RaiseEps(tuple(constants)), KeepFp32((node,)))
    if kind in (explain.ACTIVATION_OVERFLOW, explain.INF_ARITHMETIC):
        region = overflow_region(index, node, values, evidence.fmt.max)
        reason = f"its values exceed {evidence.fmt.range_text} until they are back in range" if len(region) > 1 else ""
        return (KeepFp32(region, reason),)
    if kind == explain.PRECISION_LOSS:
        producers = _float_input_producers(index, node)
        fixes = [KeepFp32(producers + (node,), "the rounding happens where its inputs are stored")] if producers else []
        return tuple(fixes) + (KeepFp32((node,)),)
    if kind == explain.OUTPUT_UNDERFLOW:
        readers = tuple(dict.fromkeys(r.name for out in index.node_by_name[node].output for r in index.consumers.get(out, [])))
        return (KeepFp32((node,) + readers, "its outputs are below FP16's range"),)
    return (KeepFp32((node,)),)


# Ops for which an input that becomes 0 is a different result altogether (log 0, 1/0).
_ZERO_SENSITIVE = {"Log", "Div", "Reciprocal", "Pow", "Sqrt"}
# Integers above this lose precision in FP16 (its spacing is 2 from 2048 to 4096).
FP16_EXACT_INTEGERS = 2048
_MAX_BACKWARD_STEPS = 8


def _stored_loss_fix(kind: str, node: str, index: GraphIndex, values: dict) -> "KeepFp32 | None":
    """Keep the region that starts where a value is lost when stored in FP16, if the root reads such a value.

    Keeping only the node that shows the fault is not enough when its input is already lost
    in the FP16 tensor it reads (a softmax output of 1e-13 stored as 0 before a Log; a
    position of 3001 stored as 3000 before Cos): the region starts at the producer of that
    tensor, grows backward while the stored inputs are still lost, and forward while the
    values are beyond FP16's range.
    """
    if kind in (explain.CONSTANT_OUT_OF_RANGE, explain.CONSTANT_UNDERFLOW):
        return None
    zeros_matter = kind == explain.INF_ARITHMETIC or index.node_by_name[node].op_type in _ZERO_SENSITIVE
    inputs = _computed_float_inputs(index, node)
    if kind == explain.PRECISION_LOSS:
        start = inputs  # the rounding happens where its inputs are stored
    else:
        start = [t for t in inputs if stored_loss(values.get(t), zeros_matter)]
    if not start:
        return None
    region, lost_at, upstream = [node], list(start), list(start)
    for _ in range(_MAX_BACKWARD_STEPS):
        frontier = [index.producer[t].name for t in upstream]
        frontier = [n for n in dict.fromkeys(frontier) if n not in region]
        if not frontier:
            break
        region += frontier
        upstream = [t for n in frontier for t in _computed_float_inputs(index, n) if stored_loss(values.get(t), True)]
        lost_at += upstream
    if kind == explain.PRECISION_LOSS and lost_at == start:
        return None  # no stored loss further up: `propose_at_node` keeps the producers already
    region += [n for n in overflow_region(index, node, values) if n not in region]
    order = {n.name: i for i, n in enumerate(index.nodes)}
    tensors = tuple(reversed(dict.fromkeys(lost_at)))  # upstream first: where the loss begins
    how = next((text for text in (stored_loss(values.get(t), True) for t in tensors) if text), "rounded")
    verb = "is" if len(tensors) == 1 else "are"
    reason = f"the value is lost where {_names(tensors)} {verb} stored in FP16 ({how}); the region starts at its producer"
    return KeepFp32(tuple(sorted(region, key=order.__getitem__)), reason, tensors)


def stored_loss(value, zeros_matter: bool) -> str:
    """How storing this FP32 tensor in FP16 loses its value, in words ('' when it does not).

    Overflow to ±inf, non-zero values that become 0 (when `zeros_matter`), integers above
    2048 that FP16 cannot hold exactly (positions, counts).
    """
    if value is None or value.dtype.kind != "f" or not value.size:
        return ""
    with np.errstate(over="ignore", invalid="ignore"):
        half = value.astype(np.float16).astype(value.dtype)
        finite = np.isfinite(value)
        overflow = finite & ~np.isfinite(half)
        if overflow.any():
            return f"{int(overflow.sum())} of {value.size} values beyond ±65504 become ±inf"
        vanish = (value != 0) & (half == 0)
        if zeros_matter and vanish.any():
            smallest = float(np.min(np.abs(value[vanish])))
            return f"{int(vanish.sum())} of {value.size} values as small as {smallest:.3g} become 0"
        integral = finite & (np.abs(value) > FP16_EXACT_INTEGERS) & (value == np.round(value)) & (half != value)
        if integral.any() and bool(np.all(value[finite] == np.round(value[finite]))):
            return f"{int(integral.sum())} of {value.size} integers above {FP16_EXACT_INTEGERS} are rounded (FP16's spacing is 2 there)"
    return ""


def _computed_float_inputs(index: GraphIndex, node: str) -> list[str]:
    """The node's float inputs that another node computes (not constants, not model inputs)."""
    found = index.node_by_name[node]
    return [
        name for name in dict.fromkeys(found.input)
        if name and name in index.producer and not index.is_constant(name) and index.is_float(name)
    ]


def _is_normalisation_statistic(index: GraphIndex, node: str, constants: tuple[str, ...]) -> bool:
    """The out-of-range constants are a BatchNormalization's scale, bias, mean or variance."""
    found = index.node_by_name[node]
    return found.op_type == "BatchNormalization" and bool(constants) and set(constants) <= set(found.input[1:])


def overflow_region(index: GraphIndex, node: str, values: dict, limit: float = FP16.max) -> tuple[str, ...]:
    """`node` and every node after it that reads a tensor beyond ±limit (the format's range) in the reference.

    Keeping only the first overflowing node in FP32 moves the overflow to the Cast after
    it; the region ends where the values are back within FP16's range (a Sqrt, a Div).
    """
    region = [node]
    pending = list(index.node_by_name[node].output)
    seen = set(pending)
    while pending:
        tensor = pending.pop(0)
        if not _beyond_fp16(values.get(tensor), limit):
            continue
        for reader in index.consumers.get(tensor, []):
            if reader.name not in region:
                region.append(reader.name)
            for out in reader.output:
                if out and out not in seen:
                    seen.add(out)
                    pending.append(out)
    order = {n.name: i for i, n in enumerate(index.nodes)}
    return tuple(sorted(region, key=order.__getitem__))


def _beyond_fp16(value, limit: float = FP16.max) -> bool:
    if value is None or value.dtype.kind != "f" or not value.size:
        return False
    with np.errstate(invalid="ignore"):
        return bool(np.any(np.isfinite(value) & (np.abs(value) > limit)))


def _is_mask_constant(index: GraphIndex, node: str, constants: tuple[str, ...]) -> bool:
    """Large negative constants whose node feeds a Softmax a few steps later: an attention mask."""
    if not constants:
        return False
    negative = all(np.all(_constant_values(index, c)[np.abs(_constant_values(index, c)) > FP16.max] < 0) for c in constants)
    return negative and _softmax_follows(index, node)


def _softmax_follows(index: GraphIndex, node: str) -> bool:
    frontier = {node}
    for _ in range(_SOFTMAX_SEARCH_DEPTH):
        readers = {r.name for n in frontier for out in index.node_by_name[n].output for r in index.consumers.get(out, [])}
        if any(index.node_by_name[r].op_type == "Softmax" for r in readers):
            return True
        frontier = readers
    return False


def _is_mask_mul(index: GraphIndex, node: str, values: dict) -> bool:
    try:
        mask, _ = _mask_mul_parts(index, node)
    except WorkbenchError:
        return False
    observed = values.get(mask)
    return observed is not None and bool(np.isin(observed, (0, 1)).all())


def _mask_mul_parts(index: GraphIndex, node: str) -> tuple[str, str]:
    """(the computed 0/1 input, the constant input) of a Mul, or a one-line error."""
    found = index.node_by_name.get(node)
    if found is None:
        raise WorkbenchError(f"no node named '{node}' in the model; node names are listed by `workbench nodes`.")
    if found.op_type != "Mul" or len(found.input) != 2:
        raise WorkbenchError(f"mask-to-where applies to a Mul of a mask and a constant; `{node}` is a {found.op_type}.")
    constant = [name for name in found.input if index.is_constant(name)]
    if len(constant) != 1:
        raise WorkbenchError(f"mask-to-where needs exactly one constant input to Mul `{node}`; it has {len(constant)}.")
    mask = next(name for name in found.input if name != constant[0])
    return mask, constant[0]


def _float_input_producers(index: GraphIndex, node: str) -> tuple[str, ...]:
    found = index.node_by_name[node]
    names = []
    for name in found.input:
        producer = index.producer.get(name)
        if producer is not None and not index.is_constant(name) and index.is_float(name):
            names.append(producer.name)
    return tuple(dict.fromkeys(names))


# ---------------------------------------------------------------- graph helpers


def _index(model: Model) -> GraphIndex:
    return GraphIndex.of(model)


def _stored_source(index: GraphIndex, name: str) -> str:
    """The initializer or Constant output a constant tensor is a (reshaped, cast) copy of."""
    while name not in index.initializers:
        producer = index.producer.get(name)
        if producer is None or not index.is_constant(name):
            raise WorkbenchError(f"`{name}` is not a constant of the model; only constants can be rewritten.")
        if producer.op_type == "Constant":
            return name
        if producer.op_type not in _FORWARDING_OPS:
            raise WorkbenchError(f"constant `{name}` is computed by {producer.op_type} `{producer.name}`; rewrite its inputs instead.")
        name = producer.input[0]
    return name


def _constant_values(index: GraphIndex, name: str) -> np.ndarray:
    source = _stored_source(index, name)
    if source in index.initializers:
        return np.asarray(index.initializer_array(source))
    producer = index.producer[source]
    for attr in producer.attribute:
        if attr.name == "value":
            return numpy_helper.to_array(attr.t)
        if attr.name in ("value_float", "value_floats"):
            return np.array(attr.f if attr.name == "value_float" else list(attr.floats), np.float32)
    raise WorkbenchError(f"constant `{name}` has no value this fix can rewrite ({producer.name}).")


def _store_constant(graph: onnx.GraphProto, index: GraphIndex, source: str, values: np.ndarray) -> None:
    if source in index.initializers:
        tensor = next(t for t in graph.initializer if t.name == source)
        tensor.CopyFrom(numpy_helper.from_array(values, source))
        return
    node = next(n for n in graph.node if source in n.output)
    for attr in list(node.attribute):
        if attr.name in ("value", "value_float", "value_floats"):
            node.attribute.remove(attr)
    node.attribute.append(helper.make_attribute("value", numpy_helper.from_array(values)))


def _downstream_nodes(index: GraphIndex, tensors: Iterable[str]) -> set[str]:
    tainted, found = set(tensors), set()
    for node in index.nodes:
        if any(name in tainted for name in node.input):
            found.add(node.name)
            tainted.update(node.output)
    return found


def _upstream_nodes(index: GraphIndex, tensors: Iterable[str]) -> set[str]:
    wanted, found = set(tensors), set()
    for node in reversed(index.nodes):
        if any(name in wanted for name in node.output):
            found.add(node.name)
            wanted.update(node.input)
    return found


def _names(names: tuple[str, ...], limit: int = 4) -> str:
    shown = ", ".join(f"`{n}`" for n in names[:limit])
    return shown + (f" and {len(names) - limit} more" if len(names) > limit else "")


def _num(value) -> str:
    return f"{float(value):.8g}"
