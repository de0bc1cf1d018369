"""Applying fixes and re-verifying in faithful FP16, against the reference captured once."""

import numpy as np
import onnx
import onnxruntime as ort
import pytest

import workbench
from workbench.errors import WorkbenchError
from workbench.fixes.catalogue import KeepFp32, MaskConstant
from workbench.fixes.verify import apply_fixes, fp16_weight_fraction
from workbench.io.model import file_digest

# Each sample with a harmful root, and the fix it is proposed first.
FIRST_FIX = {
    "legacy_mask_bert": "mask-constant",
    "layernorm_pow": "keep-fp32",
    "cancellation": "keep-fp32",
    "eps_underflow": "raise-eps",
}


@pytest.mark.parametrize("name", sorted(FIRST_FIX))
def test_the_first_proposed_fix_of_each_sample_verifies(sample, name):
    path, feed = sample(name)
    before = workbench.diagnose(path, inputs=feed)
    assert before.verdict != "ok" and len(before.roots) == 1
    fix = before.roots[0].fixes[0]
    assert fix.name == FIRST_FIX[name]
    result = apply_fixes(before, [fix])
    assert result.ok and result.after.verdict == "ok" and result.after.roots == ()
    for diff in result.after.outputs.values():
        assert diff.nonfinite == 0 and diff.rel_l2 < 1e-2
    assert result.fp16_weight_fraction > 0.9  # most weights still FP16


def test_reverification_reuses_the_reference_capture(sample):
    path, feed = sample("legacy_mask_bert")
    before = workbench.diagnose(path, inputs=feed)
    result = apply_fixes(before, [MaskConstant(("val_32",))])
    assert result.after.reference_values is before.reference_values
    assert before.stats["forward_passes"] >= 2  # reference + candidate (+ one per suspect)
    assert result.runs == before.stats["forward_passes"] + result.after.stats["forward_passes"]
    assert result.after.stats["sessions_built"] <= before.stats["sessions_built"] + 5  # node sessions cached


def test_before_and_after_figures_are_in_the_summary_and_json(sample):
    path, feed = sample("legacy_mask_bert")
    result = apply_fixes(workbench.diagnose(path, inputs=feed), [MaskConstant(("val_32",))])
    assert "non-finite 512 -> 0" in result.summary()
    data = result.to_dict()
    assert data["ok"] is True and data["clamped"] == ["val_32"] and data["kept_fp32"] == []
    assert data["before"]["verdict"] == "nonfinite" and data["outputs"]["last_hidden_state"]["nonfinite"] == 0
    assert "OK" in result._repr_html_()


def test_a_fix_that_does_not_help_is_reported_not_ok_with_the_remaining_root(sample):
    path, feed = sample("layernorm_pow")
    result = apply_fixes(workbench.diagnose(path, inputs=feed), [KeepFp32(("ln_pow",))])
    assert not result.ok
    assert result.after.roots[0].kind == "activation_overflow"  # the overflow moved to the Cast after ln_pow


def test_the_saved_model_loads_in_ort_uses_standard_ops_and_the_source_is_untouched(sample, tmp_path):
    path, feed = sample("legacy_mask_bert")
    digest = file_digest(path)
    result = apply_fixes(workbench.diagnose(path, inputs=feed), [MaskConstant(("val_32",))])
    saved = result.save(tmp_path / "fixed.onnx")
    model = onnx.load(saved)
    onnx.checker.check_model(model, full_check=True)
    assert {n.domain for n in model.graph.node} <= {"", "ai.onnx"}
    output = ort.InferenceSession(str(saved), providers=["CPUExecutionProvider"]).run(None, feed)[0]
    assert np.isfinite(output).all()
    assert file_digest(path) == digest
    with pytest.raises(WorkbenchError, match="refusing to overwrite"):
        result.save(path)


def test_apply_rejects_what_is_not_a_fix(sample):
    path, feed = sample("clean_mlp")
    with pytest.raises(WorkbenchError, match="is not a fix"):
        apply_fixes(workbench.diagnose(path, inputs=feed), ["keep-fp32=proj"])


def test_fp16_weight_fraction_counts_elements(sample):
    path, _ = sample("layernorm_pow")
    model = workbench.load_model(path)
    assert fp16_weight_fraction(model) == 0.0
    converted, _ = workbench.convert_to_fp16(model)
    assert fp16_weight_fraction(converted) == 1.0


def test_masked_lm_top5_is_restored_by_the_fix():
    from sample_models import masked_lm
    from workbench.task.checks import MaskedLmTask

    path = masked_lm.HERE / f"{masked_lm.NAME}.onnx"
    with np.load(path.with_suffix(".npz")) as data:
        feed = {k: data[k] for k in data.files}
    before = workbench.diagnose(path, inputs=feed)
    task = MaskedLmTask(output="logits", mask_token_id=masked_lm.MASK_ID, tokens=masked_lm.TOKENS)
    broken = apply_fixes(before, []).check_task(task)
    assert not broken.task.ok and "NaN" in broken.task.summary()
    fixed = apply_fixes(before, before.fixes[:1]).check_task(task)
    assert fixed.ok and fixed.task.ok and fixed.task.metrics["same_topk"] == fixed.task.metrics["positions"] > 0


def test_the_weight_fraction_counts_constant_nodes_as_weights():
    import fp16_fault_models as faults

    model = faults.conv_bn()
    kept, _ = workbench.convert_to_fp16(model, workbench.Fp16Options(keep_nodes=frozenset({"bn"})))
    # w (54 values) is FP16; the BatchNormalization's four Constants (8 values) stay FP32 for it
    assert fp16_weight_fraction(kept) == pytest.approx(54 / 62)


def test_verification_json_has_verified_by_for_each_engine(sample):
    path, feed = sample("legacy_mask_bert")
    before = workbench.diagnose(path, inputs=feed)
    result = apply_fixes(before, [MaskConstant(("val_32",))])
    assert result.to_dict()["verified_by"] == {"emulate": {"verdict": "ok", "worst_rel_l2": pytest.approx(5.98e-4, rel=0.05)}}
    assert result.to_dict()["run_budget"] is None and result.stopped is None
    checked = result.with_second_engine().to_dict()["verified_by"]  # apply_fixes alone does not pay for the second pass
    assert list(checked) == ["emulate", "ort-kernels"] and checked["ort-kernels"]["verdict"] == "ok"
