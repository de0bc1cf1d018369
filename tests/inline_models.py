"""Tiny models written inline as ONNX text, for tests (a module of its own: tests/ui has its own conftest)."""

import numpy as np
import onnx
from onnx import numpy_helper


def parse_model(text: str, **initializers: np.ndarray) -> onnx.ModelProto:
    """A model from ONNX text (`onnx.parser`), plus initializers given as arrays."""
    header = '<ir_version: 8, opset_import: ["" : 17]>\n'
    model = onnx.parser.parse_model(header + text)
    for name, value in initializers.items():
        model.graph.initializer.append(numpy_helper.from_array(np.asarray(value), name))
    onnx.checker.check_model(model)
    return model
