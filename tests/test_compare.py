import numpy as np
import pytest

from inline_models import parse_model
from workbench.compare import Tolerance, align, tensor_diff, verdict
from workbench.fp16 import convert_to_fp16
from workbench.graph import GraphIndex
from workbench.model import load_model


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
