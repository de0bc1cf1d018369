"""Graphs that break naive tools (issue 6, item 2), each diagnosed to the right root with real onnxruntime.

Most models hide one FP16 overflow: `Mul(x, x)` of 300 is 90000, past FP16's 65504.
"""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
from inline_models import parse_model
from onnx import helper

import workbench
from workbench.io.model import file_digest

BIG = {"x": np.full((2, 4), 300.0, np.float32)}  # 300 * 300 = 90000 > 65504


def roots(report):
    return [(f.node, f.kind) for f in report.roots]


def with_opset(text: str, opset: int, ir_version: int = 8) -> onnx.ModelProto:
    model = onnx.parser.parse_model(f'<ir_version: {ir_version}, opset_import: ["" : {opset}]>\n{text}')
    onnx.checker.check_model(model)
    return model


# -- names and types ----------------------------------------------------------------------------


def test_unnamed_nodes_are_reported_by_their_stable_names():
    model = parse_model("g (float[2,4] x) => (float[2,4] y) { a = Relu(x) b = Mul(a, a) y = Add(b, a) }")
    report = workbench.diagnose(model, inputs=BIG)
    assert roots(report) == [("Mul_1", "activation_overflow")]
    assert "Mul_1" in {n.name for n in report.candidate.graph.node} | {n.name for n in report.reference.graph.node}


def test_duplicate_node_names_get_distinct_names_and_the_right_one_is_blamed():
    model = parse_model("g (float[2,4] x) => (float[2,4] y) { a = Relu(x) b = Mul(a, a) y = Add(b, a) }")
    for node in model.graph.node:
        node.name = "same"
    report = workbench.diagnose(model, inputs=BIG)
    assert roots(report) == [("same__2", "activation_overflow")]


def test_tensors_without_type_information_still_diagnose():
    model = parse_model("g (float[2,4] x) => (float[2,4] y) { a = Relu(x) b = Mul(a, a) y = Add(b, a) }")
    del model.graph.value_info[:]
    model.graph.output[0].CopyFrom(helper.make_empty_tensor_value_info("y"))
    report = workbench.diagnose(model, inputs=BIG)
    assert report.verdict == "nonfinite" and roots(report) == [("Mul_1", "activation_overflow")]


def test_an_input_without_type_cannot_be_converted_and_says_so():
    model = parse_model("g (float[2,4] x) => (float[2,4] y) { a = Relu(x) b = Mul(a, a) y = Add(b, a) }")
    model.graph.input[0].CopyFrom(helper.make_empty_tensor_value_info("x"))
    with pytest.raises(workbench.WorkbenchError, match="input 'x' of g has no type"):
        workbench.diagnose(model, inputs=BIG)


# -- control flow -------------------------------------------------------------------------------


def test_overflow_inside_an_if_branch_blames_the_if_node():
    model = parse_model("""g (float[2,4] x, bool c) => (float[2,4] y) {
        y = If(c) <then_branch = t () => (float[2,4] a) { a = Mul(x, x) },
                   else_branch = e () => (float[2,4] b) { b = Add(x, x) }>
    }""")
    assert roots(workbench.diagnose(model, inputs={**BIG, "c": np.array(True)})) == [("If_0", "activation_overflow")]
    assert workbench.diagnose(model, inputs={**BIG, "c": np.array(False)}).verdict == "ok"


LOOP = """g (float[2,4] x) => (float[2,4] y) {
    n = Constant <value = int64 {3}> ()
    c = Constant <value = bool {1}> ()
    y = Loop(n, c, x) <body = b (int64 i, bool cin, float[2,4] v) => (bool cout, float[2,4] w) {
        cout = Identity(cin)
        w = Add(v, v)
    }>
}"""


def test_overflow_inside_a_loop_body_blames_the_loop_node():
    report = workbench.diagnose(parse_model(LOOP), inputs={"x": np.full((2, 4), 10000.0, np.float32)})  # 8 x 10000
    assert report.verdict == "nonfinite" and roots(report) == [("Loop_2", "activation_overflow")]
    assert workbench.diagnose(parse_model(LOOP), inputs={"x": np.ones((2, 4), np.float32)}).verdict == "ok"


def scan_model(overflowing_output: str) -> onnx.ModelProto:
    """A Scan whose first (running sum) or second (squares) output overflows."""
    square = "Mul(v, v)" if overflowing_output == "squares" else "Identity(v)"
    acc = "Mul(acc, v)" if overflowing_output == "running" else "Add(acc, v)"
    return parse_model(f"""g (float[3,4] x) => (float[4] s, float[3,4] y) {{
        z = Constant <value = float[4] {{1, 1, 1, 1}}> ()
        s, y = Scan <num_scan_inputs = 1,
                     body = b (float[4] acc, float[4] v) => (float[4] acc2, float[4] o) {{ acc2 = {acc} o = {square} }}> (z, x)
    }}""")


def test_overflow_in_a_scan_body_first_output_blames_the_scan_node():
    report = workbench.diagnose(scan_model("running"), inputs={"x": np.full((3, 4), 300.0, np.float32)})  # 300^3
    assert report.verdict == "nonfinite" and roots(report) == [("Scan_1", "activation_overflow")]


def test_overflow_in_a_scan_body_second_output_blames_the_scan_node():
    report = workbench.diagnose(scan_model("squares"), inputs={"x": np.full((3, 4), 300.0, np.float32)})
    assert report.verdict == "nonfinite" and roots(report) == [("Scan_1", "activation_overflow")]


# -- constants and optional outputs -------------------------------------------------------------


def test_constant_node_out_of_fp16_range_is_the_root():
    model = parse_model("""g (float[2,4] x) => (float[2,4] y) {
        k = Constant <value = float {100000.0}> ()
        y = Mul(x, k)
    }""")
    report = workbench.diagnose(model, inputs={"x": np.full((2, 4), 0.001, np.float32)})
    assert report.verdict == "divergent" or report.verdict == "nonfinite"
    assert roots(report) == [("Mul_1", "constant_out_of_range")]


def test_a_constant_that_is_a_graph_output_is_compared_too():
    model = parse_model("""g (float[2,4] x) => (float[2,4] y, float[4] c) {
        c = Constant <value = float[4] {1, 2, 3, 100000}> ()
        y = Add(x, x)
    }""")
    report = workbench.diagnose(model, inputs=BIG)
    assert report.verdict == "nonfinite" and report.outputs["c"].nonfinite == 1 and report.outputs["y"].ok


def test_omitted_optional_outputs_layernorm_and_dropout():
    model = parse_model("""g (float[2,4] x) => (float[2,4] y) {
        n, , = LayerNormalization <axis = -1> (x, scale, bias)
        d, = Dropout(n)
        y = Mul(d, big)
    }""", scale=np.ones(4, np.float32), bias=np.zeros(4, np.float32), big=np.float32(60000.0))
    x = np.array([[1, 2, 3, 4], [4, 3, 2, 1]], np.float32)  # normalized values up to 1.34: 1.34 * 60000 > 65504
    report = workbench.diagnose(model, inputs={"x": x})
    assert report.verdict == "nonfinite" and roots(report) == [("Mul_2", "activation_overflow")]


# -- what there is to convert -------------------------------------------------------------------


def test_integer_only_model_is_a_clear_error():
    model = parse_model("g (int64[4] x) => (int64[4] y) { y = Add(x, x) }")
    with pytest.raises(workbench.WorkbenchError, match="no floating-point tensors"):
        workbench.diagnose(model, inputs={"x": np.arange(4)})


def test_float64_only_model_is_converted_and_gets_a_verdict():
    model = parse_model("g (double[4] x) => (double[4] y) { y = Exp(x) }")
    assert workbench.diagnose(model).verdict in ("ok", "nonfinite", "divergent")


def test_model_already_in_fp16_is_a_clear_error_and_diagnoses_as_a_candidate():
    full = parse_model("g (float[2,4] x) => (float[2,4] y) { a = Relu(x) b = Mul(a, a) y = Add(b, a) }")
    half, _ = workbench.convert_to_fp16(workbench.load_model(full))
    with pytest.raises(workbench.WorkbenchError, match="already in FP16"):
        workbench.diagnose(parse_model("g (float16[4] x) => (float16[4] y) { y = Exp(x) }"))
    report = workbench.diagnose(full, candidate=half.proto, inputs=BIG)
    assert roots(report) == [("Mul_1", "activation_overflow")]


# -- files --------------------------------------------------------------------------------------


def test_external_data_model_diagnoses_like_the_inline_one_and_stays_untouched(tmp_path):
    weights = np.full((4, 4), 100.0, np.float32)
    model = parse_model("g (float[2,4] x) => (float[2,4] y) { a = MatMul(x, w) y = Mul(a, a) }", w=weights)
    path = tmp_path / "m.onnx"
    onnx.save_model(onnx.ModelProto.FromString(model.SerializeToString()), str(path), save_as_external_data=True, location="m.data", size_threshold=0)
    before = (file_digest(path), file_digest(tmp_path / "m.data"))
    feed = {"x": np.ones((2, 4), np.float32)}
    from_file, in_memory = workbench.diagnose(path, inputs=feed), workbench.diagnose(model, inputs=feed)
    assert roots(from_file) == roots(in_memory) == [("Mul_1", "activation_overflow")]
    assert json.dumps(from_file.to_dict()["outputs"]) == json.dumps(in_memory.to_dict()["outputs"])
    assert (file_digest(path), file_digest(tmp_path / "m.data")) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.data", "m.onnx"]


# -- opsets -------------------------------------------------------------------------------------

# ReduceMean's axes moved from attribute to input at opset 18 and Softmax's semantics changed at 13:
# the same text means the current definition at each opset. onnx 1.23 knows opsets up to 28 and
# onnxruntime 1.32 runs 7 and later (older ops such as Add-6 have no kernel: a clear error, see
# tests/test_bad_input.py).
SOFTMAX_OF_SQUARES = """g (float[2,4] x) => (float[2,4] y) {
    m = ReduceMean <keepdims = 1> (x)
    d = Sub(x, m)
    p = Mul(d, d)
    e = Exp(p)
    y = Softmax <axis = -1> (e)
}"""


@pytest.mark.parametrize("opset", range(11, 22))
def test_same_model_at_every_opset_from_11_to_21(opset):
    feed = {"x": np.array([[1, 2, 3, 4], [0, 0, 0, 9]], np.float32)}  # (9 - 2.25)^2 = 45.6, exp(45.6) > 65504
    report = workbench.diagnose(with_opset(SOFTMAX_OF_SQUARES, opset), inputs=feed)
    assert report.verdict == "nonfinite" and roots(report) == [("Exp_3", "activation_overflow")]


def test_a_model_proto_whose_weights_are_still_in_an_external_file_is_a_clear_error(tmp_path):
    model = parse_model("g (float[2,4] x) => (float[2,4] y) { y = MatMul(x, w) }", w=np.ones((4, 4), np.float32))
    onnx.save_model(model, str(tmp_path / "m.onnx"), save_as_external_data=True, location="m.data", size_threshold=0)
    unloaded = onnx.load(str(tmp_path / "m.onnx"), load_external_data=False)
    with pytest.raises(workbench.WorkbenchError, match="keeps its data in an external file"):
        workbench.diagnose(unloaded)
