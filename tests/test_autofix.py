"""Automatic fix: from the diagnosed roots to a verified FP16 model, counting model runs."""

import dataclasses

import pytest

import workbench
from workbench.fixes.catalogue import Fix, KeepFp32, KeepOpType, MaskConstant
from workbench.fixes.search import auto_fix

# sample -> (nodes left in FP32, constants changed)
EXPECTED = {
    "legacy_mask_bert": ((), ("val_32",)),
    "layernorm_pow": (("ln_add_eps", "ln_pow", "ln_sqrt", "ln_var"), ()),
    "cancellation": (("shift_down", "shift_up"), ()),
    "eps_underflow": ((), ("ln_eps",)),
    "clean_mlp": ((), ()),
    "modern_mask_bert": ((), ()),
    "gelu_tanh_saturation": ((), ()),
}


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_each_sample_is_fixed_with_the_smallest_change(sample, name):
    path, feed = sample(name)
    result = auto_fix(path, inputs=feed)
    assert result.ok, result.summary()
    kept, clamped = EXPECTED[name]
    assert tuple(sorted(result.kept_fp32)) == kept
    assert result.clamped == clamped
    assert len(result.attempts) <= 1
    assert result.runs <= 6  # first diagnosis (reference, candidate, suspects) + one verification
    assert result.fp16_weight_fraction > 0.9


class _Breaks(Fix):
    """A fix whose variant cannot run: the Mul reads a tensor that nothing produces."""

    name = "breaks"
    rewrites_source = True
    description = "rename an input to a tensor that does not exist"

    def rewrite(self, graph, index):
        next(n for n in graph.node if n.name == "mask_scale").input[0] = "nothing_makes_this"


def test_an_attempt_that_fails_to_run_counts_as_failed_and_the_next_fix_is_tried(sample):
    path, feed = sample("legacy_mask_bert")
    before = workbench.diagnose(path, inputs=feed)
    root = dataclasses.replace(before.roots[0], fixes=(_Breaks(), MaskConstant(("val_32",))))
    result = auto_fix(dataclasses.replace(before, roots=(root,)))
    assert [a.verdict for a in result.attempts] == ["failed", "ok"]
    assert "nothing_makes_this" in result.attempts[0].error
    assert result.ok and result.fixes == (MaskConstant(("val_32",)),)


def test_a_root_that_stays_gets_its_next_fix(sample):
    path, feed = sample("layernorm_pow")
    before = workbench.diagnose(path, inputs=feed)
    root = dataclasses.replace(before.roots[0], fixes=(KeepFp32(("ln_pow",)),) + before.roots[0].fixes)
    result = auto_fix(dataclasses.replace(before, roots=(root,)))
    assert [a.verdict for a in result.attempts] == ["divergent", "ok"]
    assert len(result.fixes) == 1 and len(result.kept_fp32) == 4


def test_user_fixes_are_kept_and_the_search_adds_to_them(sample):
    path, feed = sample("legacy_mask_bert")
    result = auto_fix(path, inputs=feed, fixes=(KeepOpType("Softmax"),))  # does not help with the mask
    assert result.ok and result.fixes == (KeepOpType("Softmax"), MaskConstant(("val_32",)))


def test_gives_up_after_max_attempts_and_says_not_ok(sample):
    path, feed = sample("layernorm_pow")
    before = workbench.diagnose(path, inputs=feed)
    root = dataclasses.replace(before.roots[0], fixes=(KeepFp32(("ln_pow",)),))
    result = auto_fix(dataclasses.replace(before, roots=(root,)), max_attempts=1)
    assert not result.ok and [a.verdict for a in result.attempts] == ["divergent"]
    assert result.after.roots  # what is still wrong is reported


# ---------------------------------------------------------------- issue 11: a search that does not give up early
import fp16_fault_models as faults  # noqa: E402


def test_a_benign_minus_inf_then_an_overflowing_exp_is_fixed_by_growing_the_region():
    result = auto_fix(faults.masked_then_exp(), inputs=faults.masked_then_exp_feed())
    assert result.ok, result.summary()
    assert result.verified_by["ort-kernels"].verdict == "ok"  # the second engine accepts it too
    assert "scores" in result.kept_fp32  # the projection before the Exp: its output is rounded where it is stored
    assert result.attempts[-1].move == "growth" and result.attempts[-1].verdict == "ok"
    failed = [a for a in result.attempts if a.verdict != "ok"]
    assert failed and all(0.01 < a.worst_rel_l2 < 0.05 for a in failed)  # each recorded with its figures
    assert all(a.runs > 0 for a in result.attempts) and result.runs == result.attempts[-1].runs


def test_the_search_stops_when_its_run_budget_is_spent_and_says_so():
    before = workbench.diagnose(faults.masked_then_exp(), inputs=faults.masked_then_exp_feed())
    result = auto_fix(before, budget=before.stats["forward_passes"] + 3)
    assert not result.ok
    summary = result.to_dict()
    assert summary["budget_spent"] and summary["run_budget"] == before.stats["forward_passes"] + 3
    assert summary["stopped"] == "budget spent" and "budget spent" in result.summary().splitlines()[0]


@pytest.mark.parametrize("build", ["softmax_log", "rotary"])
def test_stored_losses_are_fixed_by_the_first_attempt(build):
    result = auto_fix(getattr(faults, build)(), inputs=getattr(faults, build + "_feed")())
    assert result.ok and len(result.attempts) == 1, result.summary()
    assert result.verified_by["ort-kernels"].verdict == "ok", result.summary()


def test_the_result_says_which_engine_verified_it_and_what_the_other_says(sample):
    path, feed = sample("legacy_mask_bert")
    verified_by = auto_fix(path, inputs=feed).to_dict()["verified_by"]
    assert list(verified_by) == ["emulate", "ort-kernels"]
    assert {entry["verdict"] for entry in verified_by.values()} == {"ok"}
    assert all(0 < entry["worst_rel_l2"] < 1e-2 for entry in verified_by.values())


# ---------------------------------------------------------------- issue 11: checked by a second engine
def test_a_model_fixed_by_growing_the_region_is_checked_by_both_engines():
    result = auto_fix(faults.masked_then_exp(), inputs=faults.masked_then_exp_feed())
    assert result.ok and set(result.verified_by) == {"emulate", "ort-kernels"}
    assert result.verified_by["ort-kernels"].verdict == "ok" and result.disagreement is None
    line = next(line for line in result.summary().splitlines() if "judged by" in line)
    assert "emulate: ok" in line and "ort-kernels: ok" in line and "disagree" not in line


def test_the_default_engine_is_ort_kernels_then_emulate_checks(sample):
    path, feed = sample("legacy_mask_bert")
    result = auto_fix(path, inputs=feed, engine="ort-kernels")
    assert list(result.verified_by) == ["ort-kernels", "emulate"] and result.verified_by["emulate"].verdict == "ok"


def test_bf16_has_no_second_engine_and_says_why_in_one_line(sample):
    from workbench.convert.low_precision import Fp16Options

    path, feed = sample("clean_mlp")
    result = auto_fix(path, inputs=feed, fp16=Fp16Options(precision="bf16"))
    second = result.to_dict()["verified_by"]["ort-kernels"]
    assert result.ok and second["verdict"] == "not available" and second["worst_rel_l2"] is None
    assert "BF16" in second["reason"] and "\n" not in second["reason"] and "--engine" not in second["reason"]
    assert "ort-kernels: not available: " in result.summary() and result.disagreement is None


def test_engines_that_disagree_say_so_in_words(sample):
    from workbench.fixes.verify import EngineVerdict

    path, feed = sample("legacy_mask_bert")
    result = auto_fix(path, inputs=feed, second_engine=False)
    assert list(result.verified_by) == ["emulate"]
    refused = dataclasses.replace(result, second_engine=EngineVerdict("ort-kernels", "divergent", 0.03))
    assert refused.disagreement == "the engines disagree: emulate accepts the fixed model, ort-kernels finds it divergent"
    assert refused.disagreement in refused.summary()


# ---------------------------------------------------------------- issue 11: the run budget
def test_a_search_that_fixes_within_its_budget_reports_used_of_total():
    result = auto_fix(faults.softmax_log(), inputs=faults.softmax_log_feed(), budget=50)
    assert result.ok and result.stopped == "fixed" and not result.budget_spent
    assert f"{result.runs} of 50 budgeted model runs" in result.summary().splitlines()[0]
    assert result.to_dict()["run_budget"] == 50 and result.to_dict()["stopped"] == "fixed"


def test_a_search_capped_by_attempts_is_not_a_spent_budget(sample):
    path, feed = sample("layernorm_pow")
    before = workbench.diagnose(path, inputs=feed)
    root = dataclasses.replace(before.roots[0], fixes=(KeepFp32(("ln_pow",)),))
    result = auto_fix(dataclasses.replace(before, roots=(root,)), max_attempts=1)
    assert result.stopped == "attempts spent" and not result.budget_spent


def test_an_out_of_range_batchnorm_variance_is_folded_first():
    result = auto_fix(faults.conv_bn(), inputs=faults.conv_bn_feed())
    assert result.ok and [f.name for f in result.fixes] == ["fold-bn"]
    assert result.verified_by["ort-kernels"].verdict == "ok", result.summary()
    assert result.kept_fp32 == () and result.fp16_weight_fraction == 1.0
