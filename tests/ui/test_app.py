"""The Workbench's callbacks without a browser: ipywidgets 8 fires them on .value and .click()."""

import pytest

from workbench.ui import Workbench
from workbench.ui.app import TABS


@pytest.fixture
def bench(diagnosis_of):
    return Workbench.from_diagnosis(diagnosis_of("legacy_mask_bert"))


def test_the_root_is_selected_and_inspected_at_start(bench):
    assert bench.state.node == "mask_scale"
    assert "ROOT CAUSE" in bench.inspector.detail.value
    assert "-inf" in bench.inspector.detail.value
    assert bytes(bench.inspector.histogram.value).startswith(b"\x89PNG")


def test_picking_a_node_in_the_list_shows_its_stats(bench):
    bench.inspector.node_list.value = "node_Softmax_98"
    assert bench.state.node == "node_Softmax_98"
    detail = bench.inspector.detail.value
    assert "node_Softmax_98" in detail and "Softmax" in detail and "ROOT CAUSE" not in detail
    assert "256 NaN" in detail  # the victim's output, as the candidate run computed it


def test_clicking_a_root_button_selects_it(bench):
    bench.inspector.node_list.value = "node_Softmax_98"
    button = bench.inspector.root_buttons[0]
    assert button.description == "mask_scale"
    button.click()
    assert bench.state.node == "mask_scale" and bench.inspector.node_list.value == "mask_scale"


def test_overview_inspect_button_opens_the_inspector(bench):
    bench.inspector.node_list.value = "node_Softmax_98"
    bench.overview.inspect_buttons[0].click()
    assert bench.state.node == "mask_scale"
    assert bench.tabs.selected_index == TABS.index("Node inspector")


def test_filter_narrows_the_list_and_selection_clears_it(bench):
    bench.inspector.filter.value = "softmax"
    names = bench.inspector.node_list.names
    assert names and all("softmax" in n.lower() for n in names)
    bench.inspector.node_list.value = names[0]
    assert bench.state.node == names[0]
    bench.inspector.root_buttons[0].click()  # mask_scale is filtered out: the list comes back whole
    assert bench.inspector.filter.value == ""
    assert bench.inspector.node_list.value == "mask_scale"


def test_filter_matches_op_types_and_keeps_the_selection(bench):
    bench.inspector.filter.value = "LayerNormalization"
    expected = [n.name for n in bench.diagnosis.candidate.graph.node if n.op_type == "LayerNormalization"]
    assert bench.inspector.node_list.names == expected
    assert bench.state.node == "mask_scale" and bench.inspector.node_list.value == "mask_scale"


def test_choosing_another_tensor_redraws_the_histogram(bench):
    before = bench.inspector.histogram.value
    bench.inspector.tensor_choice.value = "val_32"
    assert bench.inspector.histogram.value != before


def test_overview_shows_verdict_outputs_and_root(bench):
    text = " ".join(child.value for child in bench.overview.widget.children if hasattr(child, "value"))
    rows = [row.children[1].value for row in bench.overview.widget.children if hasattr(row, "children")]
    assert "NONFINITE" in text and "last_hidden_state" in text
    assert any("constant_out_of_range" in row and "mask_scale" in row for row in rows)


def test_a_clean_model_has_nothing_selected(diagnosis_of):
    bench = Workbench.from_diagnosis(diagnosis_of("clean_mlp"))
    assert bench.state.node == "" and not bench.inspector.root_buttons
    assert "OK" in bench.overview.widget.children[0].value


def test_a_harmless_fault_is_selected_as_a_warning(diagnosis_of):
    bench = Workbench.from_diagnosis(diagnosis_of("gelu_tanh_saturation"))
    assert bench.state.node == "gelu_pow" and "WARNING" in bench.inspector.detail.value


def test_workbench_diagnoses_a_model_itself(sample):
    path, feed = sample("layernorm_pow")
    bench = Workbench(path, inputs=feed)
    assert bench.diagnosis.verdict == "divergent" and bench.state.node == "ln_pow"
    assert bytes(bench.static_plot.value).startswith(b"\x89PNG")


def test_graph_tab_starts_netron_only_when_opened(bench):
    assert bench.graph.url is None
    bench.tabs.selected_index = TABS.index("Graph")
    assert bench.graph.url and bench.graph.url.startswith("http://127.0.0.1:")
    assert bench.graph.frame.url == bench.graph.url


def test_report_sentences_show_names_in_code_font_and_stay_escaped():
    from workbench.ui.overview import prose_html

    assert prose_html("Mul `mask<scale>`: 0 × -inf") == "Mul <code>mask&lt;scale&gt;</code>: 0 × -inf"


def test_the_inspector_says_how_many_nonfinite_elements_rel_l2_leaves_out(diagnosis_of):
    bench = Workbench.from_diagnosis(diagnosis_of("layernorm_pow"))
    assert bench.state.node == "ln_pow"
    assert "+ 12 non-finite, not in the figure" in bench.inspector.detail.value


def test_histogram_titles_have_no_backticks(bench, monkeypatch):
    from workbench.ui import plots

    titles = []
    monkeypatch.setattr(plots, "value_histogram", lambda ref, cand, title: titles.append(title) or plots.Figure())
    bench.inspector.tensor_choice.value = "val_32"
    assert titles and "`" not in titles[0] and "val_32" in titles[0]


def test_workbench_writes_nothing_to_stderr(sample, capfd):
    """Outside a cell (a button callback) whatever reaches stderr lands in JupyterLab's Log Console."""
    path, feed = sample("legacy_mask_bert")
    bench = Workbench(path, inputs=feed)
    bench.fixes.apply_button.click()
    assert bench.state.verification.ok
    assert capfd.readouterr().err == ""


def test_fixes_reverify_without_tqdm_even_for_a_diagnosis_made_with_progress(sample, capfd):
    import workbench

    path, feed = sample("legacy_mask_bert")
    diagnosis = workbench.diagnose(path, inputs=feed, progress=True)
    capfd.readouterr()
    Workbench.from_diagnosis(diagnosis).fixes.apply_button.click()
    assert capfd.readouterr().err == ""
