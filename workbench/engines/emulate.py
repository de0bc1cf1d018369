"""The emulating engine: compute in FP32, store every low-precision tensor in its own format.

A GPU FP16 engine accumulates GEMMs, convolutions and reductions in FP32 and stores the
tensors between nodes in FP16; for one elementwise op, FP32 arithmetic rounded once gives the
correctly rounded FP16 result. So the candidate graph is *lifted*: every tensor it declares in a
low-precision type (FP16, BF16, FP8) becomes FP32, and where a node produces one, a Cast to
that type and back rounds it. The lifted graph runs as one ONNX Runtime session with graph
optimisations off, so no Cast pair is removed, with every tensor marked as an output.

ORT's CPU provider then runs FP32 kernels only: no op is missing an FP16 kernel, and BF16 and
FP8 (which it cannot compute at all) are emulated the same way. The rounding Cast is ORT's own,
round to nearest even, ±inf beyond FP16's range, saturating for FP8 (Cast's default).

Written over protobuf, not with onnx-ir: the lift is a renaming of outputs plus two Casts
per tensor, and a whole BERT-base lifts in milliseconds this way.
"""

from __future__ import annotations

import re
from typing import Callable

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from workbench.engines.node_by_node import NodeRunner, Values, replay
from workbench.engines.sessions import build_session, failure_detail
from workbench.errors import WorkbenchError
from workbench.formats import LOW_TYPES
from workbench.io.model import Model, subgraphs
from workbench.ir.graph import GraphIndex, decode_tensor, node_reads, outer_scope_reads

F32 = TensorProto.FLOAT
# Ops whose `dtype` attribute picks the output type.
_DTYPE_ATTR_OPS = {"RandomNormal", "RandomUniform", "RandomNormalLike", "RandomUniformLike", "EyeLike", "Bernoulli"}
# Weights above this many elements are fed to the session as inputs instead of serialised into it.
_FEED_ELEMENTS = 64
_RAW = "__wb_raw"
_STORED = "__wb_stored"  # the rounding Cast's output: the tensor in its own format
_WEIGHT = "__wb_weight"  # an FP16 weight as fed, before the Cast to FP32 that the graph does itself


class EmulatingEngine:
    """Runs one model as a low-precision engine would; FP32 tensors are computed as they are."""

    name = "emulate"

    def __init__(self, model: Model, index: GraphIndex | None = None, providers=("CPUExecutionProvider",),
                 intra_op_threads: int = 0):
        self.model = model
        self.intra_op_threads = intra_op_threads  # of its whole-graph sessions; 0: a thread per core
        self.index = index or GraphIndex.of(model)
        self.providers = tuple(providers)
        # capture (every tensor marked) or not -> (session, its output names, the weights it is fed)
        self._sessions: dict[bool, tuple[object, list[str], dict[str, np.ndarray]]] = {}
        self._node_runner = LiftedNodeRunner(self.index, model.proto.opset_import, model.proto.ir_version, providers)
        self.whole_runs = 0

    @property
    def runs(self) -> int:
        return self.whole_runs + self._node_runner.runs

    @property
    def sessions_built(self) -> int:
        return len(self._sessions) + self._node_runner.sessions_built

    def capture(self, feed: Values, on_node: Callable | None = None) -> Values:
        """Every tensor of the model on `feed`, in the model's names, low-precision ones as the format holds them.

        With `on_node(node, values)` the graph runs node by node instead (same arithmetic), so that
        the caller can compare and drop tensors as they are computed (the memory budget).
        """
        if on_node is not None:
            return replay(self.index, self._node_runner, dict(feed), on_node=on_node)
        session, names, weights = self._whole(capture=True)
        values = dict(feed)
        for name, value in zip(names, self._run(session, names, feed, weights)):
            if isinstance(value, np.ndarray):
                name = name.removesuffix(_STORED)  # an FP16 tensor as the Cast stored it: float16 already
                values[name] = self._stored(name, value)
        return values

    def outputs(self, feed: Values) -> Values:
        """The graph outputs alone (a sweep's many inputs): a second session, nothing else marked."""
        session, _, weights = self._whole(capture=False)
        names = self.index.output_names
        return {name: self._stored(name, value) for name, value in zip(names, self._run(session, names, feed, weights))}

    def _run(self, session, names: list[str], feed: Values, weights: dict[str, np.ndarray]) -> list:
        """One run of a lifted session: low-precision inputs fed as float32, the weights fed beside them."""
        run_feed = {name: _as_float32(value) if name in self._lifted_inputs else value for name, value in feed.items()}
        self.whole_runs += 1
        try:
            return session.run(names, {**run_feed, **weights})
        except Exception as exc:  # noqa: BLE001 - a shape error on this feed, reported in one line
            raise WorkbenchError(_run_failure(self.model.name, self.index, exc)) from None

    def run_node(self, node: onnx.NodeProto, read: Callable[[str], np.ndarray]) -> list[np.ndarray | None]:
        return self._node_runner.run(node, read)

    @property
    def node_runner(self) -> "LiftedNodeRunner":
        return self._node_runner

    def _stored(self, name: str, value: np.ndarray) -> np.ndarray:
        """A lifted tensor back in the representation the format has in numpy (float16 for FP16)."""
        if self.index.elem_types.get(name) == TensorProto.FLOAT16 and value.dtype == np.float32:
            return value.astype(np.float16)  # exact: the value was rounded to FP16 in the graph
        return value

    @property
    def _lifted_inputs(self) -> set[str]:
        return {name for name in self.index.input_names if self.index.elem_types.get(name) in LOW_TYPES}

    def _whole(self, capture: bool):
        """The lifted session. Capturing (once per diagnosis) feeds FP16 weights as stored; the outputs
        session runs once per input of a sweep, so it holds FP32 copies instead of casting every weight
        in every run."""
        if capture not in self._sessions:
            lifted, weights = lift_model(self.model, self.index, capture=capture, fp16_weights_as_stored=capture)
            session = build_session(lifted.SerializeToString(), self.providers, optimize=False, what=self.model.name,
                                    intra_op_threads=self.intra_op_threads)
            self._sessions[capture] = (session, [o.name for o in lifted.graph.output], weights)
        return self._sessions[capture]


class LiftedNodeRunner(NodeRunner):
    """Single-node sessions over lifted nodes: inputs and outputs rounded to the candidate's formats."""

    def __init__(self, index: GraphIndex, opset_imports, ir_version, providers=("CPUExecutionProvider",)):
        super().__init__(opset_imports, ir_version, list(providers))
        self.index = index

    def run(self, node, read):
        types = self.index.elem_types
        low = {name for name in node_reads(node) if types.get(name) in LOW_TYPES}
        outputs = super().run(node, lambda name: _as_float32(read(name)) if name in low else read(name))
        return [
            value.astype(np.float16) if value is not None and types.get(name) == TensorProto.FLOAT16 else value
            for name, value in zip(node.output, outputs)
        ]

    def _extra_key(self, node) -> str:
        """Which of the node's tensors are stored in which format: part of the session's signature."""
        return ",".join(str(self.index.elem_types.get(name, 0)) for name in list(node.input) + list(node.output))

    def _single_node_model(self, node, inputs, outer) -> onnx.ModelProto:
        model = super()._single_node_model(node, inputs, outer)
        types = dict(self.index.elem_types)
        for i, name in enumerate(node.input):  # the single-node graph calls its inputs __in0, __in1, ...
            if name and name in types:
                types[f"__in{i}"] = types[name]
        # Outer-scope reads keep their names and are fed as float32 like the inputs.
        graph = model.graph
        rounded_inputs = [info.name for info in graph.input if types.get(info.name) in LOW_TYPES]
        for info in graph.input:  # declared from the float32 values fed; the rounding restores the format
            if info.name in rounded_inputs:
                info.type.tensor_type.elem_type = F32
        lifted = _lift_graph(graph, types, self.index.opset_imports, round_inputs=rounded_inputs)
        model.graph.CopyFrom(lifted)
        return model


def lift_model(model: Model, index: GraphIndex, capture: bool,
               fp16_weights_as_stored: bool = True) -> tuple[onnx.ModelProto, dict[str, np.ndarray]]:
    """The lifted model, and the weights to feed it (large ones are inputs, not serialised).

    `capture`: mark every tensor as an output, under the candidate's own names.
    `fp16_weights_as_stored`: feed large FP16 weights as they are and cast them in the graph (no FP32
    copy held; each run casts them again), else feed FP32 copies.
    """
    graph = index.graph
    lifted_graph = _lift_graph(graph, index.elem_types, index.opset_imports, round_inputs=[], initializers=False)
    weights, declared, weight_casts = {}, {i.name for i in lifted_graph.input}, []
    for tensor in graph.initializer:
        elements = int(np.prod(tensor.dims))
        if elements > _FEED_ELEMENTS or tensor.data_location == TensorProto.EXTERNAL:
            array = index.initializer_array(tensor.name)
            if fp16_weights_as_stored and tensor.data_type == TensorProto.FLOAT16 and tensor.name not in declared:
                # Fed as stored and cast to FP32 inside the run: no FP32 copy of every weight is held
                # (BERT-base: 415 MB and 0.3 s less), and each Cast's output is freed after its reader.
                weights[tensor.name + _WEIGHT] = np.ascontiguousarray(array)
                lifted_graph.input.append(helper.make_tensor_value_info(tensor.name + _WEIGHT, tensor.data_type, list(tensor.dims)))
                weight_casts.append(helper.make_node("Cast", [tensor.name + _WEIGHT], [tensor.name], to=F32, name=tensor.name + _WEIGHT))
                continue
            low = tensor.data_type in LOW_TYPES
            weights[tensor.name] = _as_float32(array) if low else np.ascontiguousarray(array)
            if tensor.name not in declared:
                elem = F32 if low else tensor.data_type
                lifted_graph.input.append(helper.make_tensor_value_info(tensor.name, elem, list(tensor.dims)))
        else:
            lifted_graph.initializer.append(_lifted_tensor(tensor))
            if tensor.name in declared:  # IR < 4: initializers are listed as inputs too
                _set_input_type(lifted_graph, tensor.name, F32 if tensor.data_type in LOW_TYPES else tensor.data_type)
    if weight_casts:
        nodes = list(lifted_graph.node)
        del lifted_graph.node[:]
        lifted_graph.node.extend(weight_casts + nodes)
    if capture:
        _mark_every_tensor(lifted_graph, index)
    proto = onnx.ModelProto()
    proto.ir_version = max(model.proto.ir_version, 4)  # IR 4: initializers need not be graph inputs
    proto.opset_import.extend(model.proto.opset_import)
    proto.functions.extend(model.proto.functions)
    proto.graph.CopyFrom(lifted_graph)
    return proto, weights


def _lift_graph(graph: onnx.GraphProto, types: dict[str, int], opsets, round_inputs, initializers: bool = True) -> onnx.GraphProto:
    """`graph` with every low-precision tensor in FP32, rounded where produced (and after `round_inputs`)."""
    new = onnx.GraphProto()
    new.name = graph.name
    new.input.extend(_lifted_info(info) for info in graph.input)
    rounded = {name: f"{name}__wb_rounded" for name in round_inputs}
    for name, target in rounded.items():
        new.node.extend(_rounding(name, target, types[name]))
    for node in graph.node:
        for lifted in _lift_node(node, types, opsets):
            for i, name in enumerate(lifted.input):
                if name in rounded:
                    lifted.input[i] = rounded[name]
            new.node.append(lifted)
    new.output.extend(_lifted_info(info) for info in graph.output)
    if initializers:
        new.initializer.extend(_lifted_tensor(t) for t in graph.initializer)
    new.sparse_initializer.extend(graph.sparse_initializer)
    return new


def _lift_node(node: onnx.NodeProto, types: dict[str, int], opsets) -> list[onnx.NodeProto]:
    lifted = onnx.NodeProto()
    lifted.CopyFrom(node)
    _lift_attributes(lifted)
    for sub in subgraphs(lifted):  # the node's own GraphProtos: lifted in place
        sub.CopyFrom(_lift_graph(sub, _subgraph_types(sub, types, opsets), opsets, round_inputs=[]))
    rounding = []
    for i, name in enumerate(node.output):
        if name and types.get(name) in LOW_TYPES:
            lifted.output[i] = f"{name}{_RAW}"
            rounding.extend(_rounding(lifted.output[i], name, types[name]))
    return [lifted, *rounding]


def _rounding(source: str, target: str, elem_type: int) -> list[onnx.NodeProto]:
    """FP32 -> the format -> FP32: the value as the format stores it."""
    low = f"{target}{_STORED}"
    return [
        helper.make_node("Cast", [source], [low], to=elem_type, name=f"{target}__wb_round"),
        helper.make_node("Cast", [low], [target], to=F32, name=f"{target}__wb_back"),
    ]


def _lift_attributes(node: onnx.NodeProto) -> None:
    for attr in list(node.attribute):
        if node.op_type == "Cast" and attr.name == "to" and attr.i in LOW_TYPES:
            attr.i = F32  # the output is rounded to the old `to` type after the node
        elif node.op_type == "Cast" and attr.name == "saturate":
            node.attribute.remove(attr)  # for FP8 targets only; the rounding Cast keeps the default (saturate)
        elif node.op_type in _DTYPE_ATTR_OPS and attr.name == "dtype" and attr.i in LOW_TYPES:
            attr.i = F32
        elif attr.type == onnx.AttributeProto.TENSOR and attr.t.data_type in LOW_TYPES:
            attr.t.CopyFrom(_lifted_tensor(attr.t))


def _lifted_tensor(tensor: TensorProto) -> TensorProto:
    if tensor.data_type not in LOW_TYPES:
        return tensor
    return numpy_helper.from_array(_as_float32(decode_tensor(tensor)), tensor.name)


def _lifted_info(info: onnx.ValueInfoProto) -> onnx.ValueInfoProto:
    new = onnx.ValueInfoProto()
    new.CopyFrom(info)
    if new.type.HasField("tensor_type") and new.type.tensor_type.elem_type in LOW_TYPES:
        new.type.tensor_type.elem_type = F32
    return new


def _set_input_type(graph: onnx.GraphProto, name: str, elem_type: int) -> None:
    for info in graph.input:
        if info.name == name and info.type.HasField("tensor_type"):
            info.type.tensor_type.elem_type = elem_type


def _mark_every_tensor(graph: onnx.GraphProto, index: GraphIndex) -> None:
    present = {o.name for o in graph.output}
    for node in index.nodes:
        for name in node.output:
            if name and name not in present and _is_tensor(index, name):
                # FP16 tensors come out of their rounding Cast as float16: what the caller holds anyway
                stored = index.elem_types.get(name) == TensorProto.FLOAT16
                graph.output.append(helper.make_value_info(name + _STORED if stored else name, onnx.TypeProto()))
                present.add(name)


def _is_tensor(index: GraphIndex, name: str) -> bool:
    """Sequences and maps cannot be compared; a tensor of unknown type (a custom op's) is marked anyway."""
    return name in index.elem_types or name not in index.non_tensor_values


def _subgraph_types(sub: onnx.GraphProto, outer: dict[str, int], opsets) -> dict[str, int]:
    """Element types inside an If/Loop/Scan body: onnx's inference on the body, outer-scope reads as inputs."""
    types = dict(outer)
    probe = onnx.GraphProto()
    probe.CopyFrom(sub)
    defined = {i.name for i in probe.input}
    for name in outer_scope_reads(sub):
        if name in outer and name not in defined:
            probe.input.append(helper.make_tensor_value_info(name, outer[name], None))
    del probe.initializer[:]
    for tensor in sub.initializer:
        probe.input.append(helper.make_tensor_value_info(tensor.name, tensor.data_type, list(tensor.dims)))
    try:
        inferred = onnx.shape_inference.infer_shapes(helper.make_model(probe, opset_imports=opsets), strict_mode=False).graph
    except Exception:  # noqa: BLE001 - best effort, as for the main graph
        inferred = probe
    for info in list(inferred.input) + list(inferred.value_info) + list(inferred.output):
        if info.type.HasField("tensor_type") and info.type.tensor_type.elem_type:
            types.setdefault(info.name, info.type.tensor_type.elem_type)
    for tensor in sub.initializer:
        types[tensor.name] = tensor.data_type
    return types


def _as_float32(array: np.ndarray) -> np.ndarray:
    array = np.asarray(array)
    if array.dtype == np.float32:
        return np.ascontiguousarray(array)
    if array.dtype.kind == "f" or array.dtype.kind == "V":  # float16, or an ml_dtypes BF16/FP8 array
        return array.astype(np.float32)
    return array


def _run_failure(model_name: str, index: GraphIndex, exc: Exception) -> str:
    """ORT's run error in one line, naming the model's node (not a rounding Cast the lift added)."""
    text = " ".join(str(exc).split())
    found = re.search(r"running (\w+) node\. Name:'([^']*)' Status Message: (.*)", text)
    if not found:
        return f"{model_name} failed on this feed in ONNX Runtime: {failure_detail(exc)}"
    op_type, node, message = found.groups()
    node = node.split("__wb_")[0]
    if node not in index.node_by_name and node in index.producer:
        node = index.producer[node].name  # a rounding Cast: the node that produced its tensor
    message = re.sub(r"^/\S+:\d+ ", "", message)[:240]
    return (f"node '{node}' ({op_type}) failed on this feed in ONNX Runtime: {message}; "
            "check the inputs' shapes against what the model expects.")


