"""Read-only views of a graph: who produces and reads each tensor, which tensors are constants, their types."""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, numpy_helper

from workbench.errors import WorkbenchError
from workbench.io.model import subgraphs

log = logging.getLogger(__name__)

FLOAT_TYPES = {
    TensorProto.FLOAT, TensorProto.FLOAT16, TensorProto.DOUBLE, TensorProto.BFLOAT16,
    TensorProto.FLOAT8E4M3FN, TensorProto.FLOAT8E4M3FNUZ, TensorProto.FLOAT8E5M2, TensorProto.FLOAT8E5M2FNUZ,
}
# Initializers at most this big keep their values in the skeleton used for shape inference,
# so that shape constants (Reshape targets, axes) still propagate.
_SMALL_INITIALIZER_ELEMENTS = 64
_RAW_DTYPES = {
    TensorProto.FLOAT: np.dtype("<f4"),
    TensorProto.FLOAT16: np.dtype("<f2"),
    TensorProto.DOUBLE: np.dtype("<f8"),
    TensorProto.INT64: np.dtype("<i8"),
    TensorProto.INT32: np.dtype("<i4"),
    TensorProto.INT8: np.dtype("i1"),
    TensorProto.UINT8: np.dtype("u1"),
    TensorProto.BOOL: np.dtype("?"),
}
_HELD_AS_FLOAT32 = {
    TensorProto.BFLOAT16, TensorProto.FLOAT8E4M3FN, TensorProto.FLOAT8E4M3FNUZ, TensorProto.FLOAT8E5M2, TensorProto.FLOAT8E5M2FNUZ,
}
# Ops whose outputs are sequences or optionals, never tensors.
_NON_TENSOR_OPS = {
    "SequenceConstruct", "SequenceEmpty", "SequenceInsert", "SequenceErase", "SplitToSequence", "SequenceMap",
    "Optional", "ZipMap", "CastMap", "DictVectorizer",
}
# Ops that pass a constant on unchanged in value (up to type or layout): their output is still "the constant".
_VALUE_FORWARDING_OPS = {"Cast", "Identity", "Reshape", "Unsqueeze", "Squeeze", "Expand", "Transpose", "Flatten"}


@dataclass
class GraphIndex:
    """Producers, consumers, constants and element types of one (main) graph."""

    graph: onnx.GraphProto
    opset_imports: list
    arrays: dict = field(default_factory=dict)  # decoded initializers, shared with the Model (see Model.arrays)
    data_dir: Path | None = None  # where external-data weights live (see Model.data_dir)

    @classmethod
    def of(cls, model) -> "GraphIndex":
        """The index of a workbench Model's main graph, sharing its decoded initializers."""
        return cls(model.graph, list(model.proto.opset_import), model.arrays, model.data_dir)

    @cached_property
    def nodes(self) -> list[onnx.NodeProto]:
        return topological_order(self.graph)

    @cached_property
    def node_by_name(self) -> dict[str, onnx.NodeProto]:
        return {node.name: node for node in self.nodes}

    @cached_property
    def producer(self) -> dict[str, onnx.NodeProto]:
        return {out: node for node in self.nodes for out in node.output if out}

    @cached_property
    def consumers(self) -> dict[str, list[onnx.NodeProto]]:
        result: dict[str, list[onnx.NodeProto]] = {}
        for node in self.nodes:
            for name in set(node_reads(node)):
                result.setdefault(name, []).append(node)
        return result

    @cached_property
    def initializers(self) -> dict[str, TensorProto]:
        return {t.name: t for t in self.graph.initializer}

    @cached_property
    def input_names(self) -> list[str]:
        return [i.name for i in self.graph.input if i.name not in self.initializers]

    @cached_property
    def output_names(self) -> list[str]:
        return [o.name for o in self.graph.output]

    def is_constant(self, name: str) -> bool:
        """A value fixed in the file: an initializer, a Constant's output, or a reshaped/cast copy of one."""
        return name in self.constants

    @cached_property
    def constants(self) -> set[str]:
        found = set(self.initializers)
        for node in self.nodes:
            if node.op_type == "Constant" or (
                node.op_type in _VALUE_FORWARDING_OPS and node.input and all(n in found for n in node.input if n)
            ):
                found.update(node.output)
        return found

    def produces_constants(self, node: onnx.NodeProto) -> bool:
        return all(name in self.constants for name in node.output if name)

    @cached_property
    def elem_types(self) -> dict[str, int]:
        """Element type of every tensor whose type onnx's shape inference can tell."""
        return infer_elem_types(self.graph, self.opset_imports)

    @cached_property
    def non_tensor_values(self) -> set[str]:
        """Sequences, maps and optionals: made by the ops that make them, or passed on by Identity or a Loop."""
        found: set[str] = set()
        for node in self.nodes:
            passes_on = node.op_type in ("Identity", "Loop") and any(name in found for name in node.input if name)
            if node.op_type in _NON_TENSOR_OPS or passes_on:
                found.update(name for name in node.output if name)
        return found

    def is_float(self, name: str) -> bool:
        return self.elem_types.get(name) in FLOAT_TYPES

    def initializer_array(self, name: str) -> np.ndarray:
        """The initializer's values; a read-only view of its bytes where possible (weights are large)."""
        if name not in self.arrays:
            self.arrays[name] = decode_tensor(self.initializers[name], self.data_dir)
        return self.arrays[name]

    def prefetch_initializers(self) -> threading.Thread:
        """Decode the initializers, in the order nodes read them, on a background thread.

        Copying weights out of protobuf holds the GIL, ONNX Runtime's runs do not: while the
        replay runs one node, the next nodes' weights are being decoded (BERT-base: 0.4 s of
        copying mostly hidden). A name the replay needs first is decoded there, as before.
        """
        order = list(dict.fromkeys(n for node in self.nodes for n in node.input if n in self.initializers))

        def decode_all() -> None:
            try:
                for name in order:
                    if name not in self.arrays:
                        self.initializer_array(name)
            except Exception:  # noqa: BLE001 - the replay meets the same error and reports it in one line
                return

        thread = threading.Thread(target=decode_all, name="workbench-prefetch", daemon=True)
        thread.start()
        return thread


def decode_tensor(tensor: TensorProto, data_dir: Path | None = None) -> np.ndarray:
    """A tensor's values: a view of its raw bytes where it has them, a memory map where they are external."""
    if tensor.data_location == TensorProto.EXTERNAL:
        return _external_array(tensor, data_dir)
    dtype = _RAW_DTYPES.get(tensor.data_type)
    if dtype is not None and tensor.raw_data and not tensor.external_data:
        return np.frombuffer(tensor.raw_data, dtype=dtype).reshape(tuple(tensor.dims))
    values = numpy_helper.to_array(tensor)
    if tensor.data_type in _HELD_AS_FLOAT32:  # BF16 and FP8 are held as float32 (workbench.formats)
        return values.astype(np.float32)
    return values


def _external_array(tensor: TensorProto, data_dir: Path | None) -> np.ndarray:
    """A read-only memory map of an external-data weight: the file's pages, not a copy."""
    info = {entry.key: entry.value for entry in tensor.external_data}
    dtype = _RAW_DTYPES.get(tensor.data_type)
    shape = tuple(tensor.dims)
    if data_dir is None:
        raise WorkbenchError(f"tensor '{tensor.name}' keeps its data in an external file, and the model's folder is unknown.")
    if dtype is None or not shape or 0 in shape:  # rare types and empty or scalar tensors: read them whole
        from onnx.external_data_helper import load_external_data_for_tensor

        loaded = TensorProto()
        loaded.CopyFrom(tensor)
        load_external_data_for_tensor(loaded, str(data_dir))
        return numpy_helper.to_array(loaded)
    from workbench.io.model import external_data_path

    file = external_data_path(data_dir, info.get("location", ""), tensor.name)
    return np.memmap(file, dtype=dtype, mode="r", offset=int(info.get("offset", 0)), shape=shape)


def node_reads(node: onnx.NodeProto) -> list[str]:
    """Every tensor a node reads: its inputs, and outer-scope names its subgraphs use."""
    names = [name for name in node.input if name]
    for sub in subgraphs(node):
        names.extend(outer_scope_reads(sub))
    return names


def outer_scope_reads(graph: onnx.GraphProto) -> list[str]:
    """Names a subgraph reads that it does not define itself (captured from the enclosing graph)."""
    defined = {i.name for i in graph.input} | {t.name for t in graph.initializer}
    reads: list[str] = []
    for node in graph.node:
        for name in node_reads(node):
            if name not in defined and name not in reads:
                reads.append(name)
        defined.update(node.output)
    return reads


def topological_order(graph: onnx.GraphProto) -> list[onnx.NodeProto]:
    """Nodes in an order where every tensor is produced before it is read.

    ONNX requires files to be sorted already; some exporters get it wrong, and a wrong
    order would make the replay read tensors that do not exist yet.
    """
    available = {i.name for i in graph.input} | {t.name for t in graph.initializer} | {""}
    produced_by_graph = {out for node in graph.node for out in node.output}
    pending = list(graph.node)
    ordered: list[onnx.NodeProto] = []
    while pending:
        still_pending = []
        for node in pending:
            reads = [n for n in node_reads(node) if n in produced_by_graph]
            if all(name in available for name in reads):
                ordered.append(node)
                available.update(node.output)
            else:
                still_pending.append(node)
        if len(still_pending) == len(pending):
            raise WorkbenchError(
                f"the graph has a cycle through node '{still_pending[0].name}' ({still_pending[0].op_type}); "
                "ONNX graphs must be acyclic: re-export the model."
            )
        pending = still_pending
    return ordered


def infer_elem_types(graph: onnx.GraphProto, opset_imports) -> dict[str, int]:
    """Element types by onnx shape inference, run on a copy without the weights' bytes."""
    types = {t.name: t.data_type for t in graph.initializer}
    for info in list(graph.input) + list(graph.output) + list(graph.value_info):
        if info.type.HasField("tensor_type") and info.type.tensor_type.elem_type:
            types[info.name] = info.type.tensor_type.elem_type
    try:
        inferred = onnx.shape_inference.infer_shapes(_skeleton(graph, opset_imports), strict_mode=False)
    except Exception as exc:  # shape inference is best effort: unknown custom ops and the like
        log.info("shape inference failed (%s); types come from the file alone", exc)
        return types
    for info in list(inferred.graph.value_info) + list(inferred.graph.output):
        if info.type.HasField("tensor_type") and info.type.tensor_type.elem_type:
            types.setdefault(info.name, info.type.tensor_type.elem_type)
    return types


def _skeleton(graph: onnx.GraphProto, opset_imports) -> onnx.ModelProto:
    """The graph with large weights replaced by typed inputs: cheap to serialize for shape inference."""
    skeleton = onnx.GraphProto()
    skeleton.name = graph.name
    skeleton.node.extend(graph.node)
    skeleton.input.extend(graph.input)
    skeleton.output.extend(graph.output)
    skeleton.value_info.extend(graph.value_info)
    declared = {i.name for i in graph.input}
    for tensor in graph.initializer:
        if int(np.prod(tensor.dims)) <= _SMALL_INITIALIZER_ELEMENTS and not tensor.external_data:
            skeleton.initializer.append(tensor)
        elif tensor.name not in declared:
            skeleton.input.append(onnx.helper.make_tensor_value_info(tensor.name, tensor.data_type, tensor.dims))
    model = onnx.helper.make_model(skeleton, opset_imports=opset_imports)
    return model
