"""Bringing a model to an opset ONNX Runtime runs, before any engine sees it.

ONNX Runtime implements most ops from opset 7 on: an export at opset 6 or older (PyTorch's
first exporters, many of onnx's own test models) fails with "Could not find an implementation
for Add(6)". onnx's version converter rewrites the graph at a newer opset; node names are kept,
the few nodes it adds (Clip's min and max become Constant inputs) get stable names.
"""

from __future__ import annotations

import onnx
from onnx import version_converter

from workbench.errors import WorkbenchError
from workbench.io.model import Model, full_proto, name_nodes

ORT_MIN_OPSET = 7
TARGET_OPSET = 11  # far enough past 7 that every adapter onnx has for these ops applies


def runnable(model: Model) -> tuple[Model, str | None]:
    """`model`, or its conversion to TARGET_OPSET when ORT cannot run its opset; and a note saying so."""
    if model.opset >= ORT_MIN_OPSET:
        return model, None
    try:
        converted = version_converter.convert_version(full_proto(model), TARGET_OPSET)
    except Exception as exc:  # noqa: BLE001 - onnx raises several types; the message is what matters
        detail = str(exc).strip().splitlines()[-1][:200] if str(exc).strip() else type(exc).__name__
        raise WorkbenchError(
            f"{model.name} uses opset {model.opset}, older than ONNX Runtime runs (7), and onnx.version_converter "
            f"cannot convert it ({detail}); re-export the model at opset 13 or newer."
        ) from None
    _prelu_slopes_on_channels(converted)
    name_nodes(converted.graph)
    note = f"opset {model.opset} converted to {TARGET_OPSET} with onnx.version_converter (ONNX Runtime runs opset 7 and newer)"
    return Model(converted, model.name, f"{model.origin}, {note}", model.path), note


def _prelu_slopes_on_channels(proto: onnx.ModelProto) -> None:
    """PRelu before opset 7 applies a 1-D slope per channel (axis 1); from 7 on it broadcasts from the right.

    onnx's converter leaves the slope as it was, so [C] would meet [N, C, H, W] on the last axis:
    reshape it to [C, 1, 1] as PyTorch's later exports write it.
    """
    ranks = _ranks(proto)
    slopes = {t.name: t for t in proto.graph.initializer}
    for node in proto.graph.node:
        if node.op_type != "PRelu" or node.input[1] not in slopes:
            continue
        slope, rank = slopes[node.input[1]], ranks.get(node.input[0], 0)
        if len(slope.dims) == 1 and slope.dims[0] > 1 and rank > 2:
            shape = [slope.dims[0]] + [1] * (rank - 2)
            slope.dims[:] = shape
            for info in proto.graph.input:  # IR 3 lists initializers as inputs, with their shape
                if info.name == slope.name:
                    info.type.tensor_type.ClearField("shape")
                    info.type.tensor_type.shape.dim.extend(onnx.TensorShapeProto.Dimension(dim_value=d) for d in shape)


def _ranks(proto: onnx.ModelProto) -> dict[str, int]:
    try:
        inferred = onnx.shape_inference.infer_shapes(proto, strict_mode=False).graph
    except Exception:  # noqa: BLE001 - best effort: without ranks the slope stays as it was
        inferred = proto.graph
    return {
        info.name: len(info.type.tensor_type.shape.dim)
        for info in list(inferred.input) + list(inferred.value_info)
        if info.type.HasField("tensor_type") and info.type.tensor_type.HasField("shape")
    }
