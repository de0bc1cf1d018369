"""Running a graph one node at a time: the ORT-kernels engine, the harm test's partial runs, local errors.

ONNX Runtime's CPU provider computes most FP16 ops in FP32 and removes the Casts
between neighbouring nodes, so a whole-model FP16 session is not an FP16 engine:
`(x + 2048) - 2048` returns x. Running each node in its own tiny session makes every
node boundary a real FP16 tensor, as on a GPU. Sessions are cached by the node's
signature (op, attributes, input types), so a 12-layer model builds about one
layer's worth of sessions; their inputs carry no shapes, so one session serves
every batch size and sequence length.

onnx's reference evaluator also rounds at every node, but is far slower on large
MatMuls; this module is a small piece of hand-written code for that reason.
"""

from __future__ import annotations

from typing import Callable, Iterable

import numpy as np
import onnx
import onnxruntime as ort
from onnx import helper

from workbench.engines.sessions import build_session, failure_detail, session_options
from workbench.errors import WorkbenchError
from workbench.io.model import subgraphs
from workbench.ir.graph import GraphIndex, node_reads, outer_scope_reads

Values = dict[str, np.ndarray]


class NodeRunner:
    """Runs single nodes in cached single-node ONNX Runtime sessions."""

    def __init__(self, opset_imports: Iterable, ir_version: int, providers: list[str] | None = None):
        self.opset_imports = list(opset_imports)
        self.ir_version = ir_version
        self.providers = providers or ["CPUExecutionProvider"]
        self._sessions: dict[bytes, tuple[ort.InferenceSession, list[str]]] = {}
        self.runs = 0

    @property
    def sessions_built(self) -> int:
        return len(self._sessions)

    def run(self, node: onnx.NodeProto, read: Callable[[str], np.ndarray]) -> list[np.ndarray | None]:
        """Outputs of `node` (None for an omitted optional output), reading its inputs with `read(name)`."""
        inputs = [read(name) if name else None for name in node.input]
        outer = {name: read(name) for sub in subgraphs(node) for name in outer_scope_reads(sub)}
        session, feed_names = self._session_for(node, inputs, outer)
        feed = {f"__in{i}": value for i, value in enumerate(inputs) if value is not None}
        feed.update(outer)
        self.runs += 1
        try:
            results = session.run(None, {name: feed[name] for name in feed_names})
        except Exception as exc:  # ORT reports shape errors and missing kernels this way
            raise NodeFailure(node, exc) from None
        if not all(isinstance(value, np.ndarray) for value in results):
            raise WorkbenchError(
                f"node '{node.name}' ({node.op_type}) produces a sequence, map or optional value; "
                "the workbench compares tensors only and cannot diagnose this model."
            )
        produced = iter(results)
        return [next(produced) if name else None for name in node.output]

    def _session_for(self, node, inputs, outer) -> tuple[ort.InferenceSession, list[str]]:
        key = _signature(node, inputs, outer) + self._extra_key(node).encode()
        if key not in self._sessions:
            self._sessions[key] = self._build(node, inputs, outer)
        return self._sessions[key]

    def _extra_key(self, node) -> str:
        return ""

    def _build(self, node, inputs, outer) -> tuple[ort.InferenceSession, list[str]]:
        model = self._single_node_model(node, inputs, outer)
        try:
            session = ort.InferenceSession(model.SerializeToString(), session_options(), providers=self.providers)
        except Exception as exc:
            raise NodeFailure(node, exc) from None
        return session, [i.name for i in model.graph.input]

    def _single_node_model(self, node, inputs, outer) -> onnx.ModelProto:
        """A model of `node` alone, its inputs renamed __in0, __in1, ... and typed from the values."""
        single = onnx.NodeProto()
        single.CopyFrom(node)
        graph_inputs = []
        for i, value in enumerate(inputs):
            if value is not None:
                single.input[i] = f"__in{i}"
                graph_inputs.append(_value_info(f"__in{i}", value))
        graph_inputs.extend(_value_info(name, value) for name, value in outer.items())
        outputs = [helper.make_value_info(name, onnx.TypeProto()) for name in node.output if name]
        graph = helper.make_graph([single], "single_node", graph_inputs, outputs)
        model = helper.make_model(graph, opset_imports=self.opset_imports)
        model.ir_version = self.ir_version
        return model


class NodeFailure(WorkbenchError):
    """A node that ONNX Runtime cannot build or run on the values it was given."""

    def __init__(self, node: onnx.NodeProto, exc: Exception):
        detail = failure_detail(exc)
        super().__init__(f"node '{node.name}' ({node.op_type}) failed in ONNX Runtime: {detail}; {_hint(detail)}")
        self.node_name = node.name


def _hint(detail: str) -> str:
    if "Could not find an implementation" in detail:  # e.g. Add-6: ORT implements opset 7 and later only
        return ("ONNX Runtime has no kernel for this op at this opset and these types: for an old (before 7) "
                "or very new opset, convert the model with onnx.version_converter (e.g. to 17); for FP16 types, "
                "keep the op in FP32 (--keep-op-type).")
    return "check that the inputs' shapes and types match what the model expects."


def _signature(node, inputs, outer) -> bytes:
    types = [("-" if v is None else f"{v.dtype.str}:{v.ndim}") for v in inputs]
    types += [f"{k}={v.dtype.str}:{v.ndim}" for k, v in outer.items()]
    types.append("".join("1" if name else "0" for name in node.output))  # which optional outputs exist
    stripped = onnx.NodeProto()
    stripped.CopyFrom(node)
    stripped.name = ""
    del stripped.input[:]
    del stripped.output[:]
    return stripped.SerializeToString(deterministic=True) + "|".join(types).encode()


def _value_info(name: str, value: np.ndarray) -> onnx.ValueInfoProto:
    elem_type = helper.np_dtype_to_tensor_dtype(value.dtype)
    return helper.make_tensor_value_info(name, elem_type, [None] * value.ndim)


def replay(
    index: GraphIndex,
    runner: NodeRunner,
    values: Values,
    nodes: Iterable[onnx.NodeProto] | None = None,
    on_node: Callable[[onnx.NodeProto, Values], None] | None = None,
) -> Values:
    """Run `nodes` (default: the whole graph, in order) one at a time; `values` holds inputs and grows.

    Initializers are read from the graph as they are needed. `on_node(node, values)` is
    called after each node, for progress and for comparing as we go.
    """

    def read(name: str) -> np.ndarray:
        if name not in values:
            if name not in index.initializers:
                raise WorkbenchError(f"tensor '{name}' is read before anything produces it; the graph is broken.")
            values[name] = index.initializer_array(name)
        return values[name]

    for node in index.nodes if nodes is None else nodes:
        for name, value in zip(node.output, runner.run(node, read)):
            if name and value is not None:
                values[name] = value
        if on_node is not None:
            on_node(node, values)
    return values


def downstream(index: GraphIndex, tensors: Iterable[str]) -> list[onnx.NodeProto]:
    """Nodes that (transitively) read any of `tensors`, in graph order."""
    tainted = set(tensors)
    result = []
    for node in index.nodes:
        if any(name in tainted for name in node_reads(node)):
            result.append(node)
            tainted.update(node.output)
    return result


def run_runtime(model_proto: onnx.ModelProto, index: GraphIndex, feed: Values, providers: list[str]) -> tuple[Values, Values]:
    """Run as ONNX Runtime does: (the unmodified model's outputs, every intermediate from a marked copy).

    Marking every tensor as an output blocks some of ORT's fusions, so the final
    outputs come from the unmodified model and only the intermediates from the copy.
    """
    plain = _whole_model_session(model_proto, providers)
    outputs = dict(zip([o.name for o in plain.get_outputs()], plain.run(None, feed)))
    marked = onnx.ModelProto()
    marked.CopyFrom(model_proto)
    present = {o.name for o in marked.graph.output}
    for node in index.nodes:
        for name in node.output:
            if name and name not in present:
                marked.graph.output.append(helper.make_value_info(name, onnx.TypeProto()))
                present.add(name)
    session = _whole_model_session(marked, providers)
    names = [o.name for o in session.get_outputs()]
    intermediates = dict(zip(names, session.run(None, feed)))
    return outputs, intermediates


def _whole_model_session(proto: onnx.ModelProto, providers: list[str]) -> ort.InferenceSession:
    try:
        return build_session(proto.SerializeToString(), providers, what="the candidate as a whole")
    except WorkbenchError as exc:  # ORT's own optimizer can break on a valid model
        raise WorkbenchError(f"{exc}; that is itself a finding: use --engine emulate to diagnose it as an FP16 engine would.") from None
