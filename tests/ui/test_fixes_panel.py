import onnx
import pytest

from workbench.ui import Workbench


@pytest.fixture
def bench(diagnosis_of):
    return Workbench.from_diagnosis(diagnosis_of("legacy_mask_bert"))


def test_the_first_fix_of_each_root_is_proposed_on(bench):
    toggles = bench.fixes.toggles
    assert [t.value for t, _ in toggles] == [True] + [False] * (len(toggles) - 1)
    assert toggles[0][1].name == "mask-constant"


def test_apply_reverifies_and_shows_the_verdict_turn_ok(bench):
    bench.fixes.apply_button.click()
    verification = bench.state.verification
    assert verification is not None and verification.ok
    assert "wb-after" in bench.fixes.result.value and ">OK<" in bench.fixes.result.value
    assert not bench.fixes.save_button.disabled and bench.fixes.progress.layout.visibility == "hidden"


def test_save_writes_the_fixed_model(bench, tmp_path):
    bench.fixes.apply_button.click()
    bench.fixes.save_path.value = str(tmp_path / "fixed.onnx")
    bench.fixes.save_button.click()
    assert onnx.load(str(tmp_path / "fixed.onnx")).graph.node
    assert "fixed.onnx" in bench.fixes.saved.value


def test_save_refuses_the_users_own_model(bench):
    bench.fixes.apply_button.click()
    bench.fixes.save_path.value = str(bench.diagnosis.reference.path)
    bench.fixes.save_button.click()
    assert "Not saved" in bench.fixes.saved.value


def test_applying_nothing_says_so(bench):
    for toggle, _ in bench.fixes.toggles:
        toggle.value = False
    bench.fixes.apply_button.click()
    assert bench.state.verification is None and "at least one" in bench.fixes.result.value


def test_no_root_no_fix(diagnosis_of):
    bench = Workbench.from_diagnosis(diagnosis_of("clean_mlp"))
    assert bench.fixes.apply_button.disabled and not bench.fixes.toggles
