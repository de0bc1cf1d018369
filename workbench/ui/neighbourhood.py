"""A small model around one node, for the focused graph view: its neighbours within a few hops."""

from __future__ import annotations

import numpy as np
import onnx

from workbench.ir.graph import node_reads

# Weights larger than this become typed graph inputs: the view needs their shape, not their bytes.
MAX_KEPT_INITIALIZER_ELEMENTS = 4096
ROOT_NOTE = "ROOT CAUSE (workbench)"
FOCUS_NOTE = "selected in the workbench"
FIXED_NOTE = "changed by the fix (workbench)"


def neighbourhood(model: onnx.ModelProto, center: str, radius: int = 2, notes: dict[str, str] | None = None) -> onnx.ModelProto:
    """The nodes within `radius` tensor hops of `center` (and the Constants they read), as a model of its own.

    `notes` (node name -> text) go into those nodes' doc_string, which Netron shows in the node's properties.
    """
    graph = model.graph
    chosen = _within(graph, center, radius)
    nodes = [node for node in graph.node if node.name in chosen]
    sub = onnx.GraphProto(name=f"{graph.name or 'graph'}: around {center}")
    for node in nodes:
        copy = sub.node.add()
        copy.CopyFrom(node)
        if notes and node.name in notes:
            copy.doc_string = notes[node.name]
    _add_boundary(graph, sub, nodes)
    result = onnx.ModelProto(ir_version=model.ir_version, producer_name="workbench (focused view)")
    result.opset_import.extend(model.opset_import)
    result.graph.CopyFrom(sub)
    return result


def _within(graph: onnx.GraphProto, center: str, radius: int) -> set[str]:
    producer = {out: node for node in graph.node for out in node.output if out}
    consumers: dict[str, list[onnx.NodeProto]] = {}
    for node in graph.node:
        for name in node_reads(node):
            consumers.setdefault(name, []).append(node)
    by_name = {node.name: node for node in graph.node}
    if center not in by_name:
        raise KeyError(f"no node named '{center}'")
    chosen, frontier = {center}, [by_name[center]]
    for _ in range(radius):
        reached = []
        for node in frontier:
            neighbours = [producer[n] for n in node_reads(node) if n in producer]
            neighbours += [c for out in node.output for c in consumers.get(out, [])]
            reached += [n for n in neighbours if n.name not in chosen]
            chosen.update(n.name for n in neighbours)
        frontier = reached
    constants = {producer[n].name for name in list(chosen) for n in node_reads(by_name[name])
                 if n in producer and producer[n].op_type == "Constant"}
    return chosen | constants


def _add_boundary(graph: onnx.GraphProto, sub: onnx.GraphProto, nodes: list[onnx.NodeProto]) -> None:
    """Inputs for what the nodes read from outside, outputs for what they give to the rest of the graph."""
    types = {info.name: info for info in list(graph.input) + list(graph.value_info) + list(graph.output)}
    initializers = {t.name: t for t in graph.initializer}
    produced = {out for node in nodes for out in node.output if out}
    read_inside = {name for node in nodes for name in node_reads(node)}
    for name in dict.fromkeys(n for node in nodes for n in node_reads(node)):
        if name in produced:
            continue
        tensor = initializers.get(name)
        if tensor is not None and int(np.prod(tensor.dims)) <= MAX_KEPT_INITIALIZER_ELEMENTS:
            sub.initializer.append(tensor)
        elif tensor is not None:
            sub.input.append(onnx.helper.make_tensor_value_info(name, tensor.data_type, list(tensor.dims)))
        else:
            sub.input.append(types.get(name) or onnx.ValueInfoProto(name=name))
    graph_outputs = {o.name for o in graph.output}
    for name in dict.fromkeys(out for node in nodes for out in node.output if out):
        if name not in read_inside or name in graph_outputs:
            sub.output.append(types.get(name) or onnx.ValueInfoProto(name=name))
