"""Each sample diagnosed right (root node, kind, verdict), with real onnxruntime."""

import json

import numpy as np
import pytest
from inline_models import parse_model

import workbench
from workbench.io.model import file_digest


def diagnose_sample(sample, name, **options):
    path, feed = sample(name)
    return workbench.diagnose(path, inputs=feed, **options)


def roots(report):
    return [(f.node, f.kind) for f in report.roots]


def test_legacy_mask_root_is_the_mask_mul_and_its_constant(sample):
    report = diagnose_sample(sample, "legacy_mask_bert")
    assert report.verdict == "nonfinite"
    assert roots(report) == [("mask_scale", "constant_out_of_range")]
    assert report.first_nonfinite == "mask_scale"
    explanation = report.roots[0].explanation
    assert "-3.4028235e+38 in FP32 and -inf in FP16" in explanation and "0 × -inf = NaN" in explanation


def test_modern_mask_minus_inf_is_a_warning_not_a_root(sample):
    report = diagnose_sample(sample, "modern_mask_bert")
    assert report.verdict == "ok" and report.roots == ()
    assert [w.kind for w in report.warnings] == ["constant_out_of_range"]
    assert report.warnings[0].absorbed_by.startswith("node_Softmax")


def test_layernorm_pow_overflow(sample):
    report = diagnose_sample(sample, "layernorm_pow")
    assert report.verdict == "divergent"
    assert roots(report) == [("ln_pow", "activation_overflow")]
    assert "beyond FP16's ±65504" in report.roots[0].explanation


def test_eps_that_vanishes_is_a_root_though_its_own_output_is_within_tolerance(sample):
    # Regression: the harm test stopped at `ln_sqrt`, whose 0 instead of 1e-6 is within tolerance,
    # and never ran the Div that turns it into 0 / 0 = NaN; the root was reported as harmless.
    report = diagnose_sample(sample, "eps_underflow")
    assert report.verdict == "nonfinite" and report.first_nonfinite == "ln_div"
    assert roots(report) == [("ln_add_eps", "constant_underflow")]
    explanation = report.roots[0].explanation
    assert "`ln_eps` is 1e-12 in FP32 and 0 in FP16" in explanation and "Div `ln_div` produce NaN" in explanation


def test_tanh_saturated_overflow_is_benign(sample):
    report = diagnose_sample(sample, "gelu_tanh_saturation")
    assert report.verdict == "ok" and report.roots == ()
    assert [(w.node, w.kind) for w in report.warnings] == [("gelu_pow", "activation_overflow")]


def test_clean_model_has_no_roots_and_no_warnings(sample):
    report = diagnose_sample(sample, "clean_mlp")
    assert (report.verdict, report.roots, report.warnings) == ("ok", (), ())


def test_cancellation_is_found_in_faithful_mode_only(sample):
    faithful = diagnose_sample(sample, "cancellation")
    assert faithful.verdict == "divergent"
    assert roots(faithful) == [("shift_down", "precision_loss")]
    assert "cancellation" in faithful.roots[0].explanation
    # ORT's CPU provider computes the Add/Sub pair in FP32 and hides it:
    assert diagnose_sample(sample, "cancellation", mode="runtime").verdict == "ok"


def test_independent_faults_are_each_reported(rng):
    model = parse_model(
        """
        g (float[N, 8] x, float[N, 8] m) => (float[N, 8] y, float[N, 8] z) {
            inv = Sub(one, m)
            y = Mul(inv, fmin)
            sq = Pow(x, two)
            z = Add(sq, one)
        }
        """,
        one=np.float32(1), two=np.float32(2), fmin=np.float32(np.finfo(np.float32).min),
    )
    feed = {"x": rng.standard_normal((2, 8)).astype(np.float32) * 400, "m": np.ones((2, 8), np.float32)}
    report = workbench.diagnose(model, inputs=feed)
    assert sorted(kind for _, kind in roots(report)) == ["activation_overflow", "constant_out_of_range"]


def test_user_candidate_is_aligned_by_name_not_position(sample, tmp_path):
    path, feed = sample("legacy_mask_bert")
    fp16, _ = workbench.convert_to_fp16(workbench.load_model(path))
    fp16.proto.graph.node.reverse()  # a different node order must not matter
    report = workbench.diagnose(path, fp16.proto, inputs=feed)
    assert roots(report) == [("mask_scale", "constant_out_of_range")]


def test_clamping_constants_fixes_the_legacy_mask(sample):
    path, feed = sample("legacy_mask_bert")
    report = workbench.diagnose(path, inputs=feed, fp16=workbench.Fp16Options(clamp_constants=True))
    assert report.verdict == "ok"


def test_json_contract(sample):
    data = json.loads(json.dumps(diagnose_sample(sample, "legacy_mask_bert").to_dict()))
    # engine and precision: added with issue 10 (keys are only ever added)
    assert set(data) == {"verdict", "roots", "warnings", "first_nonfinite", "outputs", "mode", "engine", "precision"}
    assert set(data["roots"][0]) == {"node", "op_type", "kind", "explanation", "fixes"}  # fixes: added with issue 3
    assert all(set(fix) == {"name", "description"} for fix in data["roots"][0]["fixes"])
    # worst_slice and task: added with issue 12; the older keys keep their meaning
    assert set(data["outputs"]["last_hidden_state"]) == {"rel_l2", "max_abs", "nonfinite", "worst_slice", "task"}
    assert data["outputs"]["last_hidden_state"]["rel_l2"] is None  # all NaN: unbounded, and JSON has no inf
    assert data["mode"] == "faithful" and data["engine"] == "emulate" and data["precision"] == "fp16"


def test_report_renders_as_text_and_html(sample):
    report = diagnose_sample(sample, "legacy_mask_bert")
    assert "NONFINITE" in repr(report) and "mask_scale" in repr(report)
    assert "mask_scale" in report._repr_html_()


def test_generated_inputs_are_used_when_none_are_given(sample):
    path, _ = sample("legacy_mask_bert")
    assert roots(workbench.diagnose(path)) == [("mask_scale", "constant_out_of_range")]


def test_the_users_files_are_never_modified(sample):
    path, _ = sample("legacy_mask_bert")
    before = file_digest(path)
    workbench.diagnose(path, mode="runtime")
    workbench.diagnose(path)
    assert file_digest(path) == before


def test_unknown_option_and_mode():
    model = parse_model("g (float[N] x) => (float[N] y) { y = Neg(x) }")
    with pytest.raises(TypeError, match="unknown option"):
        workbench.diagnose(model, colour="red")
    with pytest.raises(workbench.WorkbenchError, match="unknown mode"):
        workbench.diagnose(model, mode="fast")


def test_control_flow_node_reading_outer_scope_tensors_is_replayed():
    model = parse_model(
        """
        g (bool c, float[4] x) => (float[4] y) {
            s = Mul(x, big)
            y = If(c) <
                then_branch = t () => (float[4] o) { o = Sub(s, s) },
                else_branch = e () => (float[4] o) { o = Abs(s) }
            >
        }
        """,
        big=np.float32(1e5),
    )
    report = workbench.diagnose(model, inputs={"c": np.array(True), "x": np.ones(4, np.float32)})
    # 1e5 overflows FP16 in the Mul; inf - inf = NaN inside the branch
    assert report.verdict == "nonfinite"
    assert [(f.node, f.kind) for f in report.roots] == [("Mul_0", "constant_out_of_range")]


def test_a_fault_the_runtime_hides_is_a_warning_when_the_outputs_are_fine():
    # Regression: runtime mode said OK with a ROOT: the Exp overflow shows in the marked copy's
    # intermediates, but ORT's plain run keeps the tensor in FP32 and its outputs are exact.
    model = parse_model(
        """g (float[3,8] logits) => (float[3,8] probs) {
            exps = Exp(logits)
            total = ReduceSum <keepdims = 1> (exps, axes)
            probs = Div(exps, total)
        }""", axes=np.array([-1], np.int64))
    logits = np.random.default_rng(0).normal(0, 2, (3, 8)).astype(np.float32)
    logits[1, 2] = 12.5  # exp(12.5) = 268337 > 65504
    faithful = workbench.diagnose(model, inputs={"logits": logits})
    assert faithful.verdict == "nonfinite" and [r.kind for r in faithful.roots] == ["activation_overflow"]
    runtime = workbench.diagnose(model, inputs={"logits": logits}, mode="runtime")
    assert runtime.verdict == "ok" and runtime.roots == ()
    assert [w.kind for w in runtime.warnings] == ["activation_overflow"]
    assert "ONNX Runtime kept this tensor in FP32" in runtime.warnings[0].explanation


@pytest.mark.parametrize("name", ["legacy_mask_bert", "layernorm_pow", "eps_underflow", "modern_mask_bert"])
def test_a_memory_budget_drops_candidate_tensors_but_not_the_diagnosis(sample, name):
    full = diagnose_sample(sample, name)
    lean = diagnose_sample(sample, name, memory_budget_mb=0)
    assert lean.stats["candidate_tensors_dropped"] > 0 and full.stats["candidate_tensors_dropped"] == 0
    assert len(lean.candidate_values) < len(full.candidate_values) / 2
    assert {o.name for o in lean.reference.graph.output} <= set(lean.candidate_values)  # outputs are kept
    assert (lean.verdict, roots(lean), [w.kind for w in lean.warnings]) == (full.verdict, roots(full), [w.kind for w in full.warnings])
    assert [(c.node, c.outputs, c.local) for c in lean.nodes] == [(c.node, c.outputs, c.local) for c in full.nodes]
