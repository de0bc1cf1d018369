"""The fix catalogue: each fix's preview, its rewrite, and one-line errors when it does not apply."""

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from inline_models import parse_model

from workbench import explain, fixes
from workbench.errors import WorkbenchError
from workbench.fixes import (ClampConstants, KeepBetween, KeepFp32, KeepOpType, MaskConstant, MaskToWhere, RaiseEps,
                             apply, overflow_region, parse_fix)
from workbench.graph import GraphIndex
from workbench.model import load_model

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
