"""Old opsets: brought to one ONNX Runtime runs, so an opset-6 export gets a verdict instead of NOT_IMPLEMENTED."""

import numpy as np
import onnx

import workbench
from workbench.convert.opset import runnable
from workbench.io.model import load_model

OLD_PRELU = '''<ir_version: 3, opset_import: ["" : 6]>
g (float[1,4,3] x, float[4,1] slope, float big) => (float[1,4,3] y) { z = Mul(x, big) y = PRelu(z, slope) }'''


def old_model():
    model = onnx.parser.parse_model(OLD_PRELU)
    model.graph.initializer.append(onnx.numpy_helper.from_array(np.full((4, 1), 0.25, np.float32), "slope"))
    model.graph.initializer.append(onnx.numpy_helper.from_array(np.array(1e5, np.float32), "big"))
    return model


def test_an_opset_6_model_is_converted_and_keeps_its_node_names():
    converted, note = runnable(load_model(old_model()))
    assert converted.opset == 11 and "opset 6 converted to 11" in note
    assert [n.op_type for n in converted.graph.node] == ["Mul", "PRelu"]


def test_an_opset_6_prelu_with_no_ort_kernel_gets_a_verdict_and_a_root():
    """PRelu(6), Mul(6): ORT has no kernel at all; after conversion the constant 1e5 (inf in FP16) is the root."""
    report = workbench.diagnose(old_model(), inputs={"x": np.ones((1, 4, 3), np.float32)})
    assert report.verdict == "nonfinite"
    assert report.roots[0].kind == "constant_out_of_range" and "1e+05" in report.roots[0].explanation.replace("100000", "1e+05")
    assert any("opset 6 converted" in note for note in report.notes) and "note: opset 6" in report.summary()
