"""The fix catalogue: each fix's preview, its rewrite, and one-line errors when it does not apply."""

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from inline_models import parse_model

from workbench.diagnosis import explain
from workbench.errors import WorkbenchError
from workbench.fixes import catalogue as fixes
from workbench.fixes.catalogue import (
    ClampConstants,
    FoldIntoWeights,
    KeepBetween,
    KeepFp32,
    KeepOpType,
    MaskConstant,
    MaskToWhere,
    RaiseEps,
    apply,
    overflow_region,
    parse_fix,
    stored_loss,
)
from workbench.io.model import load_model
from workbench.ir.graph import GraphIndex

FMIN = float(np.finfo(np.float32).min)


def named(proto):
    """Nodes named after their first output, as the sample models are."""
    for node in proto.graph.node:
        node.name = node.output[0]
    return load_model(proto)


def mask_model():
    """scores + (1 - mask) * float32.min, then Softmax: the legacy attention mask in three nodes."""
    return named(parse_model(
        """g (float[2,4] scores, float[2,4] mask) => (float[2,4] probs) {
            inverted = Sub(one, mask)
            masked = Mul(inverted, fmin)
            biased = Add(scores, masked)
            probs = Softmax(biased)
        }""", one=np.float32(1), fmin=np.float32(FMIN)))


def mask_feed():
    mask = np.array([[1, 1, 1, 0], [1, 1, 0, 0]], np.float32)
    return {"scores": np.random.default_rng(0).normal(size=(2, 4)).astype(np.float32), "mask": mask}


def run(model, feed):
    session = ort.InferenceSession(model.to_proto().SerializeToString(), providers=["CPUExecutionProvider"])
    return session.run(None, feed)[0]


def initializer(model, name):
    return onnx.numpy_helper.to_array(next(t for t in model.graph.initializer if t.name == name))


def index(model):
    return GraphIndex(model.graph, list(model.proto.opset_import))


def test_plain_fp16_of_the_mask_model_is_nan_and_each_value_fix_repairs_it():
    model, feed = mask_model(), mask_feed()
    expected = run(model, feed)
    plain, _ = apply(model, [])
    assert np.isnan(run(plain, feed)).any()
    for fix in (MaskConstant(("fmin",)), ClampConstants(("fmin",)), MaskToWhere("masked")):
        fixed, _ = apply(model, [fix])
        np.testing.assert_allclose(run(fixed, feed), expected, atol=2e-3, err_msg=fix.name)


def test_value_fixes_write_the_new_constant_in_fp16_and_leave_the_reference_alone():
    model = mask_model()
    before = model.proto.SerializeToString()
    fixed, _ = apply(model, [MaskConstant(("fmin",))])
    assert initializer(fixed, "fmin").dtype == np.float16 and float(initializer(fixed, "fmin")) == -1e4
    clamped, _ = apply(model, [ClampConstants(("fmin",))])
    assert float(initializer(clamped, "fmin")) == -65504
    assert model.proto.SerializeToString() == before


def test_preview_names_the_values_it_changes():
    model = mask_model()
    assert MaskConstant(("fmin",)).preview(model) == ["`fmin`: 1 of 1 values (-3.4028235e+38 -> -10000)"]
    assert "Where" in MaskToWhere("masked").preview(model)[0]
    assert KeepOpType("Softmax").preview(model) == ["1 Softmax nodes stay FP32: `probs`"]


def test_a_constant_behind_a_cast_or_constant_node_is_rewritten_at_its_source():
    model = load_model(parse_model(
        """g (float[3] x) => (float[3] y) {
            c = Constant <value = float[1] {-3.4e38}> ()
            r = Reshape(c, shape)
            y = Mul(x, r)
        }""", shape=np.array([1], np.int64)))
    fixed, _ = apply(model, [ClampConstants(("r",))])
    constant = next(n for n in fixed.graph.node if n.op_type == "Constant")
    assert float(onnx.numpy_helper.to_array(constant.attribute[0].t)[0]) == -65504


def test_mask_to_where_keeps_the_node_name_and_gives_no_nan_even_with_minus_inf():
    model, feed = mask_model(), mask_feed()
    fixed, _ = apply(model, [MaskToWhere("masked")])
    where = next(n for n in fixed.graph.node if n.name == "masked")
    assert where.op_type == "Where"
    assert float(initializer(fixed, "fmin")) == -np.inf  # still -inf in FP16: Where never multiplies it by 0
    assert np.isfinite(run(fixed, feed)).all()


def test_raise_eps_lifts_only_the_tiny_values():
    model = load_model(parse_model("g (float[3] x) => (float[3] y) { y = Add(x, eps) }", eps=np.array([1e-12, 0, 1], np.float32)))
    fixed, _ = apply(model, [RaiseEps(("eps",))])
    np.testing.assert_array_equal(initializer(fixed, "eps"), np.array([2**-14, 0, 1], np.float16))


def test_keep_fixes_leave_the_named_nodes_in_fp32():
    model = mask_model()
    fixed, stats = apply(model, [KeepFp32(("masked",)), KeepOpType("Softmax")])
    assert set(stats.kept_fp32) == {"masked", "probs"}
    assert initializer(fixed, "fmin").dtype == np.float32  # read only by an FP32 node


def test_keep_between_takes_the_nodes_on_the_paths_between_two_tensors():
    model = mask_model()
    assert KeepBetween(("inverted",), ("biased",)).fp32_nodes(index(model)) == {"masked", "biased"}
    with pytest.raises(WorkbenchError, match="no node lies between"):
        KeepBetween(("probs",), ("inverted",)).check(index(model))


def test_fixes_compose_and_undo_is_applying_the_list_without_one():
    model = mask_model()
    both, _ = apply(model, [MaskConstant(("fmin",)), KeepOpType("Softmax")])
    undone, _ = apply(model, [MaskConstant(("fmin",))])
    alone, _ = apply(model, [MaskConstant(("fmin",))])
    assert undone.proto.SerializeToString() == alone.proto.SerializeToString()
    assert both.proto.SerializeToString() != alone.proto.SerializeToString()


@pytest.mark.parametrize("fix, message", [
    (KeepFp32(("nope",)), "no node named 'nope'"),
    (KeepOpType("Conv"), "the model has no Conv node; its op types are"),
    (MaskConstant(("one",)), "does not apply to `one`: none of its values needs changing"),
    (ClampConstants(("masked",)), "`masked` is not a constant"),
    (MaskToWhere("probs"), "`probs` is a Softmax"),
    (KeepBetween(("x",), ("probs",)), "no tensor named 'x'"),
])
def test_a_fix_that_does_not_apply_is_a_one_line_error(fix, message):
    with pytest.raises(WorkbenchError, match=message) as error:
        apply(mask_model(), [fix])
    assert "\n" not in str(error.value)


@pytest.mark.parametrize("spec, expected", [
    ("mask-constant=val_32", MaskConstant(("val_32",))),
    ("keep-fp32=a,b", KeepFp32(("a", "b"))),
    ("keep-op-type=Pow", KeepOpType("Pow")),
    ("keep-between=a,b:c", KeepBetween(("a", "b"), ("c",))),
    ("mask-to-where=m", MaskToWhere("m")),
    ("raise-eps=e", RaiseEps(("e",))),
    ("clamp-constants=c", ClampConstants(("c",))),
    ("fold-bn=bn", FoldIntoWeights(("bn",))),
])
def test_parse_fix(spec, expected):
    assert parse_fix(spec) == expected


@pytest.mark.parametrize("spec, message", [
    ("frobnicate=x", "unknown fix 'frobnicate'"),
    ("keep-fp32", "names no target"),
    ("keep-op-type=A,B", "takes one target"),
    ("keep-between=a", "needs START:END"),
])
def test_parse_fix_errors(spec, message):
    with pytest.raises(WorkbenchError, match=message):
        parse_fix(spec)


def test_overflow_region_ends_where_values_fit_fp16_again(sample):
    import workbench

    path, feed = sample("layernorm_pow")
    report = workbench.diagnose(path, inputs=feed)
    region = overflow_region(report.reference_index, "ln_pow", report.reference_values)
    assert region == ("ln_pow", "ln_var", "ln_add_eps", "ln_sqrt")


def test_proposals_for_the_legacy_mask_put_the_source_story_fix_first(sample):
    import workbench

    path, feed = sample("legacy_mask_bert")
    root = workbench.diagnose(path, inputs=feed).roots[0]
    assert [fix.name for fix in root.fixes] == ["mask-constant", "mask-to-where", "clamp-constants", "keep-fp32"]
    assert root.fixes[0] == MaskConstant(("val_32",))


def test_proposals_by_kind_without_a_mask():
    model = load_model(parse_model("g (float[3] x) => (float[3] y) { y = Mul(x, big) }", big=np.float32(1e6)))
    item = explain.NodeEvidence(model.graph.node[0], [explain.InputEvidence("big", True, np.float32(1e6), np.float16(np.inf))],
                                np.ones(3, np.float32), np.ones(3, np.float16), None)
    proposed = fixes.propose(explain.CONSTANT_OUT_OF_RANGE, "Mul_0", item, index(model), {})
    assert [f.name for f in proposed] == ["clamp-constants", "keep-fp32"]  # no Softmax after it: not a mask


# ---------------------------------------------------------------- issue 11: fixes that hold on real models
import fp16_fault_models as faults  # noqa: E402

import workbench  # noqa: E402
from workbench.convert.low_precision import Fp16Options, convert_to_fp16  # noqa: E402


def test_a_node_kept_in_fp32_reads_its_constant_weights_in_fp32():
    model = faults.conv_bn()
    kept, _ = convert_to_fp16(model, Fp16Options(keep_nodes=frozenset({"bn"})))
    var = next(n for n in kept.graph.node if n.output[0] == "var")
    assert onnx.numpy_helper.to_array(var.attribute[0].t).dtype == np.float32  # not an FP16 inf cast back
    assert float(onnx.numpy_helper.to_array(var.attribute[0].t)[1]) == np.float32(faults.BN_VARIANCE)
    weights = next(n for n in kept.graph.node if n.output[0] == "w")
    assert weights.attribute[0].t.data_type == onnx.TensorProto.FLOAT16  # the Conv's weights are still FP16


def test_keep_fp32_on_a_batchnorm_with_an_out_of_range_variance_gives_the_right_outputs():
    model, feed = faults.conv_bn(), faults.conv_bn_feed()
    expected = run(model, feed)
    before = workbench.diagnose(model, inputs=feed)
    assert before.verdict != "ok"
    fixed = workbench.apply_fixes(before, [KeepFp32(("bn",))])
    assert fixed.ok, fixed.summary()
    assert fixed.with_second_engine().verified_by["ort-kernels"].verdict == "ok"
    assert fixed.kept_fp32 == ("bn",)  # the Constants feeding it are not counted as nodes
    np.testing.assert_allclose(run(fixed.model, feed), expected, rtol=2e-3, atol=2e-2)


def test_fold_bn_folds_with_onnx_runtime_and_keeps_every_weight_fp16():
    model, feed = faults.conv_bn(), faults.conv_bn_feed()
    before = workbench.diagnose(model, inputs=feed)
    fixed = workbench.apply_fixes(before, [FoldIntoWeights(("bn",))])
    assert fixed.ok, fixed.summary()
    assert [n.op_type for n in fixed.model.graph.node if n.op_type in ("Conv", "BatchNormalization")] == ["Conv"]
    conv = next(n for n in fixed.model.graph.node if n.op_type == "Conv")
    assert conv.name == "conv" and list(conv.output) == ["bn"]  # re-verification aligns it with the reference's `bn`
    assert fixed.kept_fp32 == () and fixed.fp16_weight_fraction == 1.0
    assert "bn" in fixed.after.candidate_values


def test_clamping_the_variance_is_wrong_and_is_not_proposed():
    model, feed = faults.conv_bn(), faults.conv_bn_feed()
    before = workbench.diagnose(model, inputs=feed)
    assert [f.name for f in before.roots[0].fixes] == ["fold-bn", "keep-fp32"]
    clamped = workbench.apply_fixes(before, [ClampConstants(("var",))])
    assert not clamped.ok  # 65504 instead of 9.79e7 scales the channel 38x


def test_fold_bn_does_not_apply_to_a_batchnorm_after_an_add():
    model = load_model(parse_model(
        """g (float[1,2,4,4] x) => (float[1,2,4,4] y) {
            s = Add(x, x)
            y = BatchNormalization(s, scale, bias, mean, var)
        }""", scale=np.ones(2, np.float32), bias=np.zeros(2, np.float32), mean=np.zeros(2, np.float32),
        var=np.ones(2, np.float32)))
    model.graph.node[1].name = "bn"
    with pytest.raises(WorkbenchError, match="does not come from a Conv, Gemm or MatMul"):
        apply(model, [FoldIntoWeights(("bn",))])


@pytest.mark.parametrize("values, zeros_matter, expected", [
    (np.array([1e5, 1.0], np.float32), False, "beyond ±65504 become ±inf"),
    (np.array([1e-13, 0.5], np.float32), True, "as small as 1e-13 become 0"),
    (np.array([1e-13, 0.5], np.float32), False, ""),
    (np.array([3001.0, 5.0], np.float32), False, "integers above 2048 are rounded"),
    (np.array([3001.5, 5.0], np.float32), False, ""),  # not integers: a plain rounding
    (np.array([2047.0, 5.0], np.float32), False, ""),
])
def test_stored_loss_says_how_fp16_storage_loses_a_value(values, zeros_matter, expected):
    said = stored_loss(values, zeros_matter)
    assert (expected in said) if expected else said == ""


def test_an_underflow_stored_before_a_log_keeps_the_region_from_the_softmax():
    model, feed = faults.softmax_log(), faults.softmax_log_feed()
    before = workbench.diagnose(model, inputs=feed)
    root = before.roots[0]
    assert root.node == "y" and root.op_type == "Log"
    first = root.fixes[0]
    assert first.nodes == ("probs", "moved", "back", "y") and first.lost_at[0] == "probs"
    assert "`probs`" in first.description and "become 0" in first.description
    assert first.to_dict()["lost_at"] == ["probs", "moved", "back"]
    assert not workbench.apply_fixes(before, [KeepFp32(("y",))]).ok  # the old fix: its input is already 0
    assert workbench.apply_fixes(before, [first]).ok


def test_rotary_angles_at_large_positions_keep_the_position_cast_and_the_frequency_mul():
    model, feed = faults.rotary(), faults.rotary_feed()
    before = workbench.diagnose(model, inputs=feed)
    assert {r.node for r in before.roots} == {"cos", "sin"}
    firsts = [root.fixes[0] for root in before.roots]
    assert {f.nodes for f in firsts} == {("pos_f", "angles", "cos"), ("pos_f", "angles", "sin")}
    assert all(f.lost_at[0] == "pos_f" and "integers above 2048" in f.description for f in firsts)
    assert workbench.apply_fixes(before, firsts).ok
    assert not workbench.apply_fixes(before, [KeepFp32(("angles", "cos", "sin"))]).ok  # the positions are lost already
