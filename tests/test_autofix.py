"""Automatic fix: from the diagnosed roots to a verified FP16 model, counting model runs."""

import dataclasses

import pytest

import workbench
from workbench.autofix import auto_fix
from workbench.fixes import Fix, KeepFp32, KeepOpType, MaskConstant

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
