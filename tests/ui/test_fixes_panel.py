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
    assert not bench.fixes.save_button.disabled
    assert bench.fixes.progress.value == 100 and "re-verified in" in bench.fixes.progress_note.value


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


def test_a_preview_never_repeats_the_description(diagnosis_of):
    bench = Workbench.from_diagnosis(diagnosis_of("layernorm_pow"))  # keep-fp32's preview line is its description
    (toggle, fix), = bench.fixes.toggles
    row = next(child for child in bench.fixes.widget.children
               if hasattr(child, "children") and toggle in child.children)
    text = row.children[1].value
    assert text.count("in FP32 with Casts around them") == 1 and "`" not in text


def test_before_and_after_shows_the_numbers_in_a_table(bench):
    bench.fixes.apply_button.click()
    result = bench.fixes.result.value
    assert "<pre>" not in result and "`" not in result
    assert "wb-numbers" in result and "<td>512</td><td>0</td>" in result  # non-finite before and after
    assert "<code>mask-constant</code>" in result and "within tolerance" in result


def test_saved_says_the_full_folder(bench, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    bench.fixes.apply_button.click()
    bench.fixes.save_path.value = "fixed.onnx"  # relative: the kernel's working folder
    bench.fixes.save_button.click()
    assert str(tmp_path.resolve()) in bench.fixes.saved.value and (tmp_path / "fixed.onnx").is_file()


def test_the_fixes_tab_shows_what_each_engine_says(bench):
    bench.fixes.apply_button.click()
    result = bench.fixes.result.value
    assert "wb-engines" in result and "<code>emulate</code><td>ok" in result.replace("</td>", "")
    assert "<code>ort-kernels</code><td>ok" in result.replace("</td>", "") and "wb-disagree" not in result


def test_the_fixes_tab_says_when_the_engines_disagree(bench):
    import dataclasses

    from workbench.fixes.verify import EngineVerdict
    from workbench.ui.fixes import engines_html

    bench.fixes.apply_button.click()
    refused = dataclasses.replace(bench.state.verification, second_engine=EngineVerdict("ort-kernels", "nonfinite", float("inf")))
    text = engines_html(refused)
    assert "wb-disagree" in text and "The engines disagree: emulate accepts the fixed model" in text and "non-finite" in text
