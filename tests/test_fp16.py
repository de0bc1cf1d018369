import numpy as np
import onnx
import onnxruntime as ort
import pytest
from inline_models import parse_model
from onnx import TensorProto, numpy_helper

import workbench
from workbench.convert.low_precision import Fp16Options, convert_to_fp16
from workbench.errors import WorkbenchError
from workbench.io.model import load_model

MASK = """
g (float[N, 8] mask) => (float[N, 8] y) {
    inv = Sub(one, mask)
    y = Mul(inv, fmin)
}
"""
MASK_INITS = {"one": np.float32(1), "fmin": np.float32(np.finfo(np.float32).min)}


def run(model, feed):
    session = ort.InferenceSession(model.to_proto().SerializeToString(), providers=["CPUExecutionProvider"])
    return session.run(None, feed)


def initializer(model, name):
    return numpy_helper.to_array(next(t for t in model.graph.initializer if t.name == name))


def test_plain_cast_turns_out_of_range_constants_into_inf():
    fp16, _ = convert_to_fp16(load_model(parse_model(MASK, **MASK_INITS)))
    assert initializer(fp16, "fmin").dtype == np.float16
    assert initializer(fp16, "fmin") == -np.inf


def test_clamp_option_keeps_constants_finite_and_says_which():
    fp16, stats = convert_to_fp16(load_model(parse_model(MASK, **MASK_INITS)), Fp16Options(clamp_constants=True))
    assert initializer(fp16, "fmin") == -65504
    assert stats.clamped == ("fmin",)


def test_inputs_and_outputs_stay_fp32_with_casts_at_the_boundary():
    fp16, _ = convert_to_fp16(load_model(parse_model(MASK, **MASK_INITS)))
    assert fp16.graph.input[0].type.tensor_type.elem_type == TensorProto.FLOAT
    assert fp16.graph.output[0].type.tensor_type.elem_type == TensorProto.FLOAT
    (y,) = run(fp16, {"mask": np.ones((2, 8), np.float32)})
    assert y.dtype == np.float32 and np.isnan(y).all()  # 0 * -inf, as an FP16 engine computes it


def test_graph_output_read_inside_the_graph_loads_in_onnxruntime(sample):
    path, feed = sample("clean_mlp")
    fp16, _ = convert_to_fp16(load_model(path))
    probs, logits = run(fp16, feed)
    assert probs.dtype == logits.dtype == np.float32 and np.isfinite(probs).all()


def test_cast_to_float_and_constant_nodes_become_fp16():
    model = load_model(
        parse_model(
            """
            g (int64[N] ids) => (float[N] y) {
                f = Cast <to = 1> (ids)
                c = Constant <value_float = 0.5> ()
                z = ConstantOfShape <value = float[1] {2.0}> (shape)
                s = Mul(f, c)
                y = Mul(s, z)
            }
            """,
            shape=np.array([3], np.int64),
        )
    )
    fp16, _ = convert_to_fp16(model)
    nodes = {n.op_type: n for n in fp16.graph.node if n.input[:1] != ["y__fp16"]}  # not the output boundary Cast
    assert onnx.helper.get_attribute_value(nodes["Cast"].attribute[0]) == TensorProto.FLOAT16
    assert onnx.helper.get_attribute_value(nodes["Constant"].attribute[0]).data_type == TensorProto.FLOAT16
    assert onnx.helper.get_attribute_value(nodes["ConstantOfShape"].attribute[0]).data_type == TensorProto.FLOAT16
    (y,) = run(fp16, {"ids": np.array([1, 2, 3], np.int64)})
    assert np.allclose(y, [1, 2, 3])


def test_kept_nodes_run_in_fp32_between_casts():
    model = load_model(parse_model(MASK, **MASK_INITS))
    mul = next(n.name for n in model.graph.node if n.op_type == "Mul")
    fp16, stats = convert_to_fp16(model, Fp16Options(keep_nodes=frozenset({mul})))
    assert stats.kept_fp32 == (mul,)
    assert initializer(fp16, "fmin").dtype == np.float32  # only an FP32 node reads it
    mask = np.ones((2, 8), np.float32)
    mask[1, 4:] = 0
    (y,) = run(fp16, {"mask": mask})
    assert np.isfinite(y).all()


def test_kept_op_type():
    fp16, stats = convert_to_fp16(load_model(parse_model(MASK, **MASK_INITS)), Fp16Options(keep_op_types=frozenset({"Mul"})))
    assert len(stats.kept_fp32) == 1


def test_unknown_node_to_keep_is_a_clear_error():
    with pytest.raises(WorkbenchError, match="no node named 'nope'"):
        convert_to_fp16(load_model(parse_model(MASK, **MASK_INITS)), Fp16Options(keep_nodes=frozenset({"nope"})))


def test_subgraph_bodies_are_converted_and_the_model_loads():
    model = load_model(
        parse_model(
            """
            g (bool c, float[2] x) => (float[2] y) {
                y = If(c) <
                    then_branch = t () => (float[2] o) { k = Constant <value = float[1] {-1e30}> ()\n o = Mul(x, k) },
                    else_branch = e () => (float[2] o) { o = Abs(x) }
                >
            }
            """
        )
    )
    fp16, _ = convert_to_fp16(model)
    onnx.checker.check_model(fp16.proto)
    (y,) = run(fp16, {"c": np.array(True), "x": np.array([1, -2], np.float32)})
    assert np.array_equal(y, [-np.inf, np.inf])  # -1e30 became -inf inside the branch


def test_the_source_model_is_left_untouched():
    model = load_model(parse_model(MASK, **MASK_INITS))
    before = model.proto.SerializeToString()
    convert_to_fp16(model)
    assert model.proto.SerializeToString() == before


# ORT's LayerNormFusion binds the FP32 input in front of the boundary Cast to an FP16 LayerNormalization.
ORT_REJECTS_WHEN_OPTIMIZED = {"layernorm_pow"}


@pytest.mark.parametrize("name", ["legacy_mask_bert", "modern_mask_bert", "layernorm_pow", "clean_mlp", "gelu_tanh_saturation", "cancellation"])
def test_every_sample_converts_to_a_standard_model_onnxruntime_runs(sample, name):
    path, feed = sample(name)
    fp16, _ = convert_to_fp16(load_model(path))
    onnx.checker.check_model(fp16.proto)
    assert {d.domain for d in fp16.proto.opset_import} <= {"", "ai.onnx"}
    options = ort.SessionOptions()
    if name in ORT_REJECTS_WHEN_OPTIMIZED:
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    ort.InferenceSession(fp16.proto.SerializeToString(), options, providers=["CPUExecutionProvider"]).run(None, feed)


def test_onnxruntime_own_fp16_converter_hits_the_same_layernorm_fusion_bug(sample):
    """Documents an ORT bug, not ours: if this starts passing, drop ORT_REJECTS_WHEN_OPTIMIZED."""
    from onnxruntime.transformers.float16 import convert_float_to_float16

    path, _ = sample("layernorm_pow")
    theirs = convert_float_to_float16(onnx.load(path), keep_io_types=True)
    with pytest.raises(Exception, match="LayerNormalization"):
        ort.InferenceSession(theirs.SerializeToString(), providers=["CPUExecutionProvider"])


@pytest.mark.parametrize("text, message", [
    ("g (int64[4] x) => (int64[4] y) { y = Add(x, x) }", "no floating-point tensors"),
    ("g (float16[4] x) => (float16[4] y) { y = Exp(x) }", "already in FP16"),
    ("g (bfloat16[4] x) => (bfloat16[4] y) { y = Exp(x) }", "its floats are bfloat16"),
])
def test_a_model_without_fp32_tensors_is_a_clear_error(text, message):
    with pytest.raises(WorkbenchError, match=message):
        convert_to_fp16(load_model(parse_model(text)))


def test_a_float64_model_is_converted_and_keeps_float64_at_its_boundary():
    model = load_model(parse_model("g (double[4] x) => (double[4] y) { a = Mul(x, c) y = Exp(a) }", c=np.array(2.0)))
    converted, stats = convert_to_fp16(model)
    assert stats.converted_initializers == 1
    casts = {n.output[0]: n.attribute[0].i for n in converted.graph.node if n.op_type == "Cast"}
    assert casts == {"x__to_fp16": TensorProto.FLOAT16, "y": TensorProto.DOUBLE}
    report = workbench.diagnose(model, inputs={"x": np.full(4, 6.0)})  # exp(12) > 65504
    assert report.verdict == "nonfinite" and report.roots[0].op_type == "Exp"


def test_an_untyped_input_is_a_clear_error_not_a_silent_no_op():
    proto = parse_model("g (float[4] x) => (float[4] y) { y = Exp(x) }")
    proto.graph.input[0].CopyFrom(onnx.helper.make_empty_tensor_value_info("x"))
    with pytest.raises(WorkbenchError, match="input 'x' of g has no type"):
        convert_to_fp16(load_model(proto))


def test_weights_cast_through_ort_match_numpy_bit_for_bit():
    from workbench.convert.low_precision import cast_to_fp16

    rng = np.random.default_rng(0)
    specials = np.array([65504, 65519, 65520, 1e6, -3.4028235e38, np.inf, -np.inf, np.nan, 6e-8, 2.9e-8, 3e-8,
                         1e-8, -0.0, 2.0**-14, 2049, 2051, 1 + 2.0**-11], np.float32)
    spread = (rng.standard_normal(1 << 17) * 10.0 ** rng.integers(-9, 7, 1 << 17)).astype(np.float32)
    values = np.concatenate([specials, spread, -spread])  # large enough to go through ORT
    with np.errstate(over="ignore"):
        expected = values.astype(np.float16)
    got = cast_to_fp16(values)
    assert got.shape == values.shape and got.dtype == np.float16
    np.testing.assert_array_equal(got.view(np.uint16), expected.view(np.uint16))


def test_large_conversions_keep_their_fp16_weights_in_a_work_file_not_twice_in_memory(monkeypatch):
    import gc

    import onnxruntime as ort

    from workbench.convert import low_precision as fp16
    from workbench.io.model import full_proto, load_model
    from workbench.ir.graph import GraphIndex

    monkeypatch.setattr(fp16, "SPILL_BYTES", 0)  # this tiny model counts as large
    weights = np.random.default_rng(0).standard_normal((8, 8)).astype(np.float32)
    model = load_model(parse_model("g (float[2,8] x) => (float[2,8] y) { y = MatMul(x, w) }", w=weights))
    converted, _ = convert_to_fp16(model)
    tensor = converted.graph.initializer[0]
    assert tensor.data_location == onnx.TensorProto.EXTERNAL and converted.data_dir.is_dir()
    mapped = GraphIndex.of(converted).initializer_array("w")
    assert isinstance(mapped, np.memmap) and np.array_equal(mapped, weights.astype(np.float16))
    x = np.ones((2, 8), np.float32)
    session = ort.InferenceSession(full_proto(converted).SerializeToString(), providers=["CPUExecutionProvider"])
    np.testing.assert_allclose(session.run(None, {"x": x})[0], x @ weights, rtol=1e-2)
    folder = converted.data_dir
    del converted, mapped
    gc.collect()
    assert not folder.exists()  # the work file goes with the model
