"""The emulating engine: FP32 arithmetic, every low-precision tensor rounded where it is stored, one session."""

import numpy as np
import pytest
from inline_models import parse_model
from onnx import TensorProto, helper

import workbench
from workbench.convert.low_precision import Fp16Options, convert_to_fp16
from workbench.engines import make_engine
from workbench.engines.emulate import EmulatingEngine, lift_model
from workbench.errors import WorkbenchError
from workbench.io.model import load_model
from workbench.ir.graph import GraphIndex

SHIFT = "g (float[3] x) => (float[3] y) { a = Add(x, c) y = Sub(a, c) }"


def shifted(precision="fp16"):
    model = load_model(parse_model(SHIFT, c=np.array(2048.0, np.float32)))
    return convert_to_fp16(model, Fp16Options(precision=precision))[0]


def test_rounding_at_every_stored_tensor_loses_x_in_x_plus_2048_minus_2048():
    """FP16's spacing at 2048 is 2: the stored sum loses x, as on a GPU (ORT's whole FP16 session keeps it)."""
    values = EmulatingEngine(shifted()).capture({"x": np.array([1, 2, 3], np.float32)})
    assert values["a"].dtype == np.float16
    assert values["a"].tolist() == [2048, 2050, 2052]  # ties to even: 2049 -> 2048, 2051 -> 2052
    assert values["y"].tolist() == [0, 2, 4]


def test_one_session_for_the_whole_graph_and_the_same_result_node_by_node():
    engine = EmulatingEngine(shifted())
    feed = {"x": np.array([1, 2, 3], np.float32)}
    whole = engine.capture(feed)
    assert engine.sessions_built == 1 and engine.runs == 1
    stepwise = engine.capture(feed, on_node=lambda node, values: None)
    assert all(np.array_equal(whole[name], stepwise[name]) for name in whole)


def test_run_node_rounds_its_inputs_to_the_stored_format():
    """A node run alone on FP32 values (the local error of a suspect) sees them as the candidate stores them."""
    model = shifted("bf16")
    engine = EmulatingEngine(model)
    sub = GraphIndex.of(model).node_by_name["Sub_1"]
    a = np.array([2049.0, 2051.0, 2052.0], np.float32)  # BF16 spacing at 2048 is 16
    (out,) = engine.run_node(sub, lambda name: a if name == "a" else GraphIndex.of(model).initializer_array(name))
    assert out.tolist() == [0.0, 0.0, 0.0]


def test_the_lifted_graph_has_no_low_precision_compute_and_rounds_each_stored_tensor():
    model = shifted()
    lifted, weights = lift_model(model, GraphIndex.of(model), capture=False)
    casts_to_fp16 = [n for n in lifted.graph.node if n.op_type == "Cast" and n.attribute[0].i == TensorProto.FLOAT16]
    stored = {"x__to_fp16", "a", "y__fp16"}
    assert {n.output[0].removesuffix("__wb_stored") for n in casts_to_fp16} == stored
    assert all(t.data_type != TensorProto.FLOAT16 for t in lifted.graph.initializer)


def test_large_weights_are_fed_not_serialised():
    w = np.random.default_rng(0).standard_normal((64, 64)).astype(np.float32)
    model = convert_to_fp16(load_model(parse_model("g (float[2,64] x) => (float[2,64] y) { y = MatMul(x, w) }", w=w)))[0]
    lifted, weights = lift_model(model, GraphIndex.of(model), capture=True)
    assert not lifted.graph.initializer and lifted.ByteSize() < 2000
    # an FP16 weight is fed as stored and cast to FP32 in the graph: no FP32 copy is held
    assert weights["w__wb_weight"].dtype == np.float16
    assert [n.op_type for n in lifted.graph.node if "w" in n.output] == ["Cast"]



def test_control_flow_bodies_are_lifted_too():
    then = helper.make_graph([helper.make_node("Add", ["x", "c"], ["t"]), helper.make_node("Sub", ["t", "c"], ["u"])], "then", [],
                             [helper.make_tensor_value_info("u", TensorProto.FLOAT, None)])
    other = helper.make_graph([helper.make_node("Identity", ["x"], ["e"])], "else", [], [helper.make_tensor_value_info("e", TensorProto.FLOAT, None)])
    graph = helper.make_graph(
        [helper.make_node("If", ["flag"], ["y"], then_branch=then, else_branch=other)], "g",
        [helper.make_tensor_value_info("flag", TensorProto.BOOL, []), helper.make_tensor_value_info("x", TensorProto.FLOAT, [3])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [3])], [helper.make_tensor("c", TensorProto.FLOAT, [], [2048.0])],
    )
    model = load_model(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]))
    report = workbench.diagnose(model, inputs={"flag": np.array(True), "x": np.array([1, 2, 3], np.float32)})
    assert report.outputs["y"].max_abs == 1.0  # 1 -> 0, 2 -> 2, 3 -> 4: the body's stored sum was rounded


def test_sequences_pass_through_and_are_not_compared():
    model = parse_model("g (float[4] x) => (float[4] y) { s = SequenceConstruct(x, x) z = SequenceAt(s, i) y = Exp(z) }",
                        i=np.array(0, np.int64))
    report = workbench.diagnose(model, inputs={"x": np.full(4, 12.0, np.float32)})  # exp(12) > 65504
    assert report.verdict == "nonfinite"
    assert [r.op_type for r in report.roots] == ["Exp"]


def test_a_shape_error_on_the_feed_is_one_line():
    engine = EmulatingEngine(shifted())
    with pytest.raises(WorkbenchError, match="failed on this feed"):
        engine.capture({"x": np.ones((2, 2), np.float32)})


def test_engines_by_name():
    model = shifted()
    assert {make_engine(name, model).name for name in ("emulate", "ort-kernels", "runtime")} == {"emulate", "ort-kernels", "runtime"}
    with pytest.raises(WorkbenchError, match="unknown engine"):
        make_engine("tensorrt", model)


def test_outputs_alone_equal_the_captured_outputs():
    engine = EmulatingEngine(shifted())
    feed = {"x": np.array([1, 2, 3], np.float32)}
    assert engine.outputs(feed)["y"].tolist() == engine.capture(feed)["y"].tolist() == [0, 2, 4]
