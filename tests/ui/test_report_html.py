"""The diagnosis' HTML repr says what its text repr says (workbench/report.py `_repr_html_`)."""

import html
import re


def _text(markup: str) -> str:
    return html.unescape(re.sub(r"<[^>]+>", "", markup))


def test_html_has_the_fixes_in_code_font_and_no_backticks(diagnosis_of):
    diagnosis = diagnosis_of("legacy_mask_bert")
    markup = diagnosis._repr_html_()
    assert "`" not in markup and "<code>val_32</code>" in markup
    for fix in diagnosis.roots[0].fixes:
        assert f"<code>{fix.name}</code>" in markup and fix.description.replace("`", "") in _text(markup)
    assert "first non-finite value at node" in markup and "within tolerance" in markup


def test_html_says_the_engine_as_the_text_does(diagnosis_of):
    diagnosis = diagnosis_of("legacy_mask_bert")
    label = "(emulated FP16: FP32 arithmetic, FP16 storage)"
    assert label in diagnosis._repr_html_() and label in diagnosis.summary()


def test_html_of_a_clean_model_says_within_tolerance(diagnosis_of):
    markup = diagnosis_of("clean_mlp")._repr_html_()
    assert "no root cause: the candidate matches the reference within tolerance" in markup


def test_every_text_line_has_its_html_counterpart(diagnosis_of):
    for name in ("legacy_mask_bert", "gelu_tanh_saturation", "layernorm_pow", "clean_mlp"):
        diagnosis = diagnosis_of(name)
        text = _text(diagnosis._repr_html_())
        for line in diagnosis.summary().splitlines()[1:]:
            words = line.strip().replace("`", "")
            if words.startswith("output "):
                continue  # a table row there
            words = re.sub(r"^(ROOT|warning|fix) ", "", words)
            assert words.split(": ", 1)[-1] in text, (name, line)
