import numpy as np
import pytest
from inline_models import parse_model

from workbench.compare.align import align
from workbench.compare.diff import Tolerance, tensor_diff, verdict
from workbench.convert.low_precision import convert_to_fp16
from workbench.io.model import load_model
from workbench.ir.graph import GraphIndex


def test_fp16_rounding_is_within_tolerance(rng):
    x = rng.standard_normal(1000).astype(np.float32)
    assert tensor_diff(x, x.astype(np.float16)).ok


def test_nonfinite_where_the_reference_is_finite_is_counted_and_fails():
    diff = tensor_diff(np.array([1.0, 2.0, 3.0]), np.array([1.0, np.nan, np.inf]))
    assert diff.nonfinite == 2 and not diff.ok


def test_matching_minus_inf_is_not_an_error():
    assert tensor_diff(np.array([-np.inf, 1.0]), np.array([-np.inf, 1.0], np.float16)).ok


def test_all_nan_output_has_unbounded_error():
    diff = tensor_diff(np.ones(4), np.full(4, np.nan))
    assert diff.rel_l2 == float("inf") and diff.nonfinite == 4


def test_near_zero_tensors_are_judged_on_absolute_error():
    reference = np.full(100, 1e-7)
    assert tensor_diff(reference, np.zeros(100)).ok  # 1e-7 is below FP16's normal range: noise
    assert not tensor_diff(reference, np.zeros(100), Tolerance(floor=1e-9)).ok


def test_shape_mismatch_fails():
    assert not tensor_diff(np.ones((2, 3)), np.ones((3, 2))).ok


def test_verdict_prefers_nonfinite_over_divergent():
    ok, bad = tensor_diff(np.ones(2), np.ones(2)), tensor_diff(np.ones(2), np.array([1.0, np.nan]))
    far = tensor_diff(np.ones(2), np.array([1.0, 5.0]))
    assert verdict({"a": ok}) == "ok"
    assert verdict({"a": far}) == "divergent"
    assert verdict({"a": far, "b": bad}) == "nonfinite"


def test_alignment_sees_through_the_casts_conversion_inserts():
    reference = load_model(parse_model("g (float[N] x) => (float[N] y) { a = Neg(x)\n y = Abs(a) }"))
    candidate, _ = convert_to_fp16(reference)
    opsets = list(reference.proto.opset_import)
    mapping = align(GraphIndex(reference.graph, opsets), GraphIndex(candidate.graph, opsets))
    assert mapping["x__to_fp16"] == "x"  # the input Cast's output holds x
    assert mapping["y__fp16"] == "y"  # the renamed FP16 output holds y
    assert mapping["a"] == "a"


def test_alignment_never_matches_unrelated_names():
    reference = load_model(parse_model("g (float[N] x) => (float[N] y) { y = Neg(x) }"))
    other = load_model(parse_model("g (float[N] x) => (float[N] y) { z = Abs(x)\n y = Neg(z) }"))
    assert "z" not in align(GraphIndex(reference.graph, []), GraphIndex(other.graph, []))


def test_huge_finite_values_are_compared_without_overflowing_the_squares():
    # FP16/FP32 tensors are compared in float32; 3.4e38 squared would be inf there (rel-L2 inf/inf = nan).
    reference = np.array([-3.4e38, 1.0], np.float32)
    candidate = np.array([-3.0e38, 1.0], np.float32)
    diff = tensor_diff(reference, candidate)
    assert diff.rel_l2 == pytest.approx(0.4 / 3.4, rel=1e-6) and not diff.ok


# ---------------------------------------------------------------- slices judged against their own scale

import workbench  # noqa: E402
from workbench.compare.slices import SliceAxis, slice_axes  # noqa: E402


def test_a_zeroed_concat_part_beside_a_huge_one_fails_only_when_judged_per_part():
    reference = np.concatenate([np.full((2, 4), 4e26), np.full((2, 4), 0.5)], axis=1).astype(np.float32)
    candidate = reference.copy()
    candidate[:, 4:] = 0
    assert tensor_diff(reference, candidate).ok  # whole tensor: rel-L2 1e-27, the zeros are invisible
    diff = tensor_diff(reference, candidate, slices=(SliceAxis(1, (0, 4, 8), "join", ("big", "small")),))
    assert not diff.ok and diff.rel_l2 < 1e-20
    assert (diff.worst_slice.axis, diff.worst_slice.start, diff.worst_slice.stop) == (1, 4, 8)
    assert diff.worst_slice.rel_l2 == pytest.approx(1.0) and diff.worst_slice.part == "small"


def test_a_broken_small_row_fails_beside_a_large_one():
    reference = np.array([[1e4] * 4, [1.0] * 4], np.float32)
    candidate = reference.copy()
    candidate[1] = 0
    diff = tensor_diff(reference, candidate)  # rows are slices by default: no graph needed
    assert diff.rel_l2 == pytest.approx(1e-4) and not diff.ok
    assert diff.worst_slice.to_dict() == {"axis": 0, "range": [1, 2], "index": 1, "rel_l2": 1.0}


def test_fp16_rounding_is_within_tolerance_in_every_row(rng):
    x = rng.standard_normal((4, 16, 32)).astype(np.float32) * np.array([1e3, 1, 1e-2, 1e-4])[:, None, None]
    diff = tensor_diff(x, x.astype(np.float16))
    assert diff.ok and diff.worst_slice.rel_l2 < 1e-3


def test_a_vector_is_not_cut_into_elements():
    assert tensor_diff(np.array([1e4, 1.0]), np.array([1e4, 0.0])).worst_slice is None


def test_elementwise_mismatches_are_counted_beside_rel_l2():
    reference = np.ones(10000, np.float32)
    candidate = reference.copy()
    candidate[3] = 1.5
    diff = tensor_diff(reference, candidate)
    assert diff.ok and diff.mismatched == 1  # one element off by 50%: shown, yet within the rel-L2 budget


def _concat_of_two_scales():
    # `big`: exp(61) = 3e26, inf in FP16. `small`: unit vectors of values ~200, whose sum of squares
    # (160,000) overflows FP16: sqrt(inf) = inf and v / inf = 0, the whole part becomes zeros.
    return parse_model(
        """
        g (float[2, 4] a, float[2, 4] v) => (float[2, 8] y) {
            big = Exp(a)
            sumsq = ReduceSumSquare <keepdims = 1, axes = [1]> (v)
            norm = Sqrt(sumsq)
            small = Div(v, norm)
            joined = Concat <axis = 1> (big, small)
            y = Identity(joined)
        }
        """
    )


def _concat_feed(rng):
    return {"a": np.full((2, 4), 61.0, np.float32) + rng.uniform(0, 0.1, (2, 4)).astype(np.float32),
            "v": rng.uniform(190, 210, (2, 4)).astype(np.float32)}


def test_slice_axes_follow_a_concat_through_elementwise_ops(rng):
    model = load_model(_concat_of_two_scales())
    index = GraphIndex.of(model)
    feed = _concat_feed(rng)
    values = {**feed, "big": np.exp(feed["a"]), "small": feed["v"], "joined": np.ones((2, 8)), "y": np.ones((2, 8))}
    assert slice_axes(index, "y", values) == (SliceAxis(1, (0, 4, 8), _concat_name(index), ("big", "small")),)
    assert slice_axes(index, "big", values) == ()


def _concat_name(index):
    return next(node.name for node in index.nodes if node.op_type == "Concat")


def test_a_concat_of_a_huge_branch_and_a_broken_small_one_gives_two_roots(rng):
    report = workbench.diagnose(_concat_of_two_scales(), inputs=_concat_feed(rng))
    assert report.verdict == "nonfinite"
    assert sorted(f.kind for f in report.roots) == ["activation_overflow", "activation_overflow"]
    assert {f.op_type for f in report.roots} == {"Exp", "ReduceSumSquare"}
    assert report.outputs["y"].worst_slice.part == "small"
    sentence = next(f.explanation for f in report.roots if f.op_type == "ReduceSumSquare")
    assert f"columns 4–7 of `y` (the second input of Concat `{_concat_name(GraphIndex.of(report.reference))}`, " \
           "`small`) become all zeros" in sentence


def test_a_batch_with_a_broken_small_row_beside_a_large_row_gives_a_root(rng):
    # Row 0: values ~1 scaled by a gain of 1e4. Row 1: values ~200 whose sum of squares overflows FP16,
    # so its unit vector becomes zeros; whole-tensor rel-L2 is 1e-4, yet row 1 is destroyed.
    model = parse_model(
        """
        g (float[2, 4] v, float[2, 1] gain) => (float[2, 4] y) {
            sumsq = ReduceSumSquare <keepdims = 1, axes = [1]> (v)
            norm = Sqrt(sumsq)
            unit = Div(v, norm)
            y = Mul(unit, gain)
        }
        """
    )
    v = np.stack([rng.uniform(0.5, 1.5, 4), rng.uniform(190, 210, 4)]).astype(np.float32)
    report = workbench.diagnose(model, inputs={"v": v, "gain": np.array([[1e4], [1.0]], np.float32)})
    assert report.verdict == "divergent" and report.outputs["y"].rel_l2 < 1e-3
    assert [(f.op_type, f.kind) for f in report.roots] == [("ReduceSumSquare", "activation_overflow")]
    assert report.outputs["y"].worst_slice.start == 1
    assert "put alone into the FP32 run, row 1 of `y` becomes all zeros (the whole of `y` is off by only" \
        in report.roots[0].explanation
    assert "worst: row 1 of `y` at rel-L2 1" in report.summary()


def test_slices_are_named_as_a_user_reads_them():
    from workbench.compare.slices import WorstSlice
    from workbench.diagnosis.explain import name_slice

    assert name_slice("y", WorstSlice(0, 4, 8, 1.0)) == "rows 4–7 of `y`"
    assert name_slice("y", WorstSlice(1, 4, 8, 1.0, "join", "b", 1), rank=2) == \
        "columns 4–7 of `y` (the second input of Concat `join`, `b`)"
    assert name_slice("y", WorstSlice(2, 3, 4, 1.0), rank=4) == "index 3 on axis 2 of `y`"
