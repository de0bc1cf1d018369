"""Which nodes a fix changed: the fixed candidate's nodes that are new, rewired, or read a changed constant."""

from __future__ import annotations

import hashlib

import onnx

from workbench.ir.graph import node_reads


def fix_changes(before, verification) -> tuple[str, ...]:
    """The fixed candidate's nodes a fix changed, in graph order: rewritten ones, and those kept in FP32
    (a kept node's proto can be unchanged: only the types of the tensors around it differ)."""
    changed = set(changed_nodes(before.candidate.proto, verification.model.proto)) | set(verification.kept_fp32)
    return tuple(node.name for node in verification.model.graph.node if node.name in changed)


def changed_nodes(before: onnx.ModelProto, after: onnx.ModelProto) -> tuple[str, ...]:
    """Names of `after`'s nodes (graph order) absent from `before`, different from their namesake, or
    reading an initializer or Constant whose value differs. Node doc strings are ignored (notes only)."""
    old_nodes = {node.name: _signature(node) for node in before.graph.node}
    old_values = _constant_values(before.graph)
    new_values = _constant_values(after.graph)
    changed = []
    for node in after.graph.node:
        if node.op_type == "Constant":
            continue  # its readers are marked instead: a Constant node is not the computation that changed
        if old_nodes.get(node.name) != _signature(node) or any(
                new_values.get(name) != old_values.get(name) for name in node_reads(node) if name in new_values):
            changed.append(node.name)
    return tuple(changed)


def _signature(node: onnx.NodeProto) -> bytes:
    copy = onnx.NodeProto()
    copy.CopyFrom(node)
    copy.doc_string = ""
    return copy.SerializeToString(deterministic=True)


def _constant_values(graph: onnx.GraphProto) -> dict[str, bytes]:
    """Tensor name -> digest of its value, for initializers and Constant nodes' outputs (digests: weights
    can be large, and only equality matters)."""
    values = {}
    for tensor in graph.initializer:
        values[tensor.name] = hashlib.sha1(tensor.SerializeToString(deterministic=True)).digest()
    for node in graph.node:
        if node.op_type == "Constant" and node.output:
            attributes = b"".join(a.SerializeToString(deterministic=True) for a in node.attribute)
            values[node.output[0]] = hashlib.sha1(attributes).digest()
    return values
