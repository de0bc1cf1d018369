"""Formats beyond FP16: BF16 (FP32's range, 8 bits) and FP8 (E4M3 saturating at 448, E5M2 at 57344)."""

import numpy as np
import pytest
from inline_models import parse_model

import workbench
from workbench.errors import WorkbenchError
from workbench.fixes.catalogue import parse_fix
from workbench.formats import PRECISIONS, precision


def test_rounding_in_each_format():
    x = np.array([1e30, 1000.0, 257.0, 1.0], np.float32)
    assert PRECISIONS["fp16"].store(x).tolist() == [np.inf, 1000.0, 257.0, 1.0]
    assert PRECISIONS["bf16"].store(x).tolist() == [pytest.approx(1.0002e30, rel=1e-3), 1000.0, 256.0, 1.0]
    assert PRECISIONS["fp8-e4m3"].store(x).tolist() == [448.0, 448.0, 256.0, 1.0]  # saturates, no inf
    assert PRECISIONS["fp8-e5m2"].store(x).tolist() == [57344.0, 1024.0, 256.0, 1.0]
    with pytest.raises(WorkbenchError, match="unknown precision 'fp4'"):
        precision("fp4")


def test_bf16_precision_loss_is_a_cancellation_root_in_bf16_terms():
    """BF16 spacing at 300 is 2: (x + 300) - 300 keeps no digit of x in [0.5, 1.5]."""
    model = parse_model("g (float[8] x) => (float[8] y) { a = Add(x, c) y = Sub(a, c) }", c=np.array(300.0, np.float32))
    report = workbench.diagnose(model, inputs={"x": np.linspace(0.5, 1.5, 8).astype(np.float32)},
                                fp16=workbench.Fp16Options(precision="bf16"))
    assert report.precision == "bf16" and report.verdict == "divergent"
    (root,) = report.roots
    assert (root.node, root.kind) == ("Sub_1", "precision_loss")
    assert "BF16 spacing 2 there" in root.explanation and "FP16" not in root.explanation


def test_bf16_does_not_overflow_where_fp16_does():
    model = parse_model("g (float[4] x) => (float[4] y) { y = Exp(x) }")
    feed = {"x": np.full(4, 20.0, np.float32)}  # e^20 = 4.9e8
    assert workbench.diagnose(model, inputs=feed).verdict == "nonfinite"
    assert workbench.diagnose(model, inputs=feed, fp16=workbench.Fp16Options(precision="bf16")).verdict == "ok"


def test_fp8_e4m3_overflow_above_448_saturates_and_is_the_root():
    model = parse_model("g (float[8] x) => (float[8] y) { a = Mul(x, c) y = Div(a, c) }", c=np.array(100.0, np.float32))
    report = workbench.diagnose(model, inputs={"x": np.linspace(1, 8, 8).astype(np.float32)},
                                fp16=workbench.Fp16Options(precision="fp8-e4m3"))
    assert report.precision == "fp8-e4m3" and report.verdict == "divergent"
    (root,) = report.roots
    assert (root.node, root.kind) == ("Mul_0", "activation_overflow")
    assert "beyond FP8 E4M3's ±448, and saturates to 448" in root.explanation


def test_fp8_overflow_is_fixed_by_a_region_until_values_fit_e4m3_again():
    model = parse_model("g (float[8] x) => (float[8] y) { a = Mul(x, c) y = Div(a, c) }", c=np.array(100.0, np.float32))
    report = workbench.diagnose(model, inputs={"x": np.linspace(1, 8, 8).astype(np.float32)},
                                fp16=workbench.Fp16Options(precision="fp8-e4m3"))
    assert report.roots[0].fixes[0].nodes == ("Mul_0", "Div_1")  # 800 is beyond 448 until the Div
    fixed = workbench.auto_fix(report)
    assert fixed.ok and "(fp8-e4m3, fixed)" in fixed.model.name


def test_fp8_keep_fp32_fix_verifies():
    model = parse_model("g (float[8] x) => (float[8] y) { a = Mul(x, c) y = Div(a, c) }", c=np.array(100.0, np.float32))
    report = workbench.diagnose(model, inputs={"x": np.linspace(1, 8, 8).astype(np.float32)},
                                fp16=workbench.Fp16Options(precision="fp8-e4m3"))
    fixed = workbench.apply_fixes(report, [parse_fix("keep-fp32=Mul_0,Div_1")])  # until the value fits E4M3 again
    assert fixed.ok and fixed.after.precision == "fp8-e4m3"


def test_fp8_conversion_brings_an_older_model_to_opset_19():
    model = parse_model("g (float[4] x) => (float[4] y) { y = Relu(x) }")
    converted, _ = workbench.convert_to_fp16(workbench.load_model(model), workbench.Fp16Options(precision="fp8-e4m3"))
    assert converted.opset == 19
