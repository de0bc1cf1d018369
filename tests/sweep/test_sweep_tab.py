"""The Sweep tab without a browser: ipywidgets' dummy comm fires callbacks on Button.click()."""

import pytest
from matplotlib.figure import Figure
from models import PADDED

import workbench
from workbench.ui.sweep_tab import SweepTab, SweepWorkbench, draw_error_histogram


@pytest.fixture
def result(attention_path, feed_folder, tmp_path):
    return workbench.sweep(attention_path, inputs=feed_folder, work=tmp_path / "work", workers=1, progress=False)


def test_clicking_an_input_calls_back_with_its_id(result):
    opened = []
    tab = SweepTab(result, on_open=opened.append)
    assert set(tab.buttons) == {f"feed_{i:02d}.npz" for i in PADDED}  # failing inputs only, at first
    tab.buttons["feed_04.npz"].click()
    assert opened == ["feed_04.npz"] and tab.selected == "feed_04.npz"
    tab.failing_only.value = False
    assert len(tab.buttons) == 12


def test_the_groups_and_the_histogram(result):
    tab = SweepTab(result)
    assert "Where_5" in tab.groups.value and "all with a fully padded row" in tab.groups.value
    assert bytes(tab.histogram.value).startswith(b"\x89PNG")
    axis = Figure().subplots()
    draw_error_histogram(axis, result.records, result.tolerance)
    (tolerance,) = [line for line in axis.get_lines() if line.get_gid() == "tolerance"]
    assert tolerance.get_xdata()[0] == 1e-2 and axis.get_xscale() == "log"
    (bar,) = [p for p in axis.patches if p.get_gid() == "nonfinite-bar"]
    assert bar.get_height() == 3  # the three inputs with NaN outputs


def test_an_input_opened_in_the_workbench_fills_the_other_tabs(result):
    bench = workbench.Workbench.from_sweep(result)
    assert isinstance(bench, SweepWorkbench) and bench.tabs.titles == ("Sweep",)
    bench.sweep.buttons["feed_08.npz"].click()
    assert bench.tabs.titles[1] == "Overview: feed_08.npz" and bench.tabs.selected_index == 1
    assert bench.bench.diagnosis.verdict == "nonfinite"
    assert bench.bench.diagnosis.roots[0].node == "Where_5"
    bench.bench.inspect("Where_5")  # a root's button in the Overview: the node inspector opens
    assert bench.tabs.selected_index == 1 + bench.bench.tabs.selected_index
