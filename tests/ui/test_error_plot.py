"""The interactive error plot's data, and its selection shared with every tab."""

import math

from workbench.ui import Workbench
from workbench.ui.error_plot import ErrorPlot, plot_points


def test_points_carry_names_errors_counts_and_roles(diagnosis_of):
    diagnosis = diagnosis_of("legacy_mask_bert")
    points = {p[1]: p for p in plot_points(diagnosis)}
    assert len(points) == len(diagnosis.nodes)
    index, name, op, worst, local, count, role, compared = points["mask_scale"]
    assert (op, role, compared) == ("Mul", "root", True) and count == 16
    assert all(v is None or math.isfinite(v) for p in points.values() for v in (p[3], p[4]))  # JSON has no inf


def test_finite_error_and_nonfinite_count_are_both_kept(diagnosis_of):
    """ln_pow's rel-L2 over finite elements is small, while 12 elements are +inf: the plot has both."""
    point = next(p for p in plot_points(diagnosis_of("layernorm_pow")) if p[1] == "ln_pow")
    assert point[3] is not None and point[3] < 1e-3 and point[5] == 12


def test_a_click_in_the_plot_selects_the_node_everywhere(diagnosis_of):
    bench = Workbench.from_diagnosis(diagnosis_of("legacy_mask_bert"))
    assert bench.error_plot.selected == "mask_scale"
    bench.error_plot.selected = "node_Softmax_98"  # what the view sets on a click
    assert bench.state.node == "node_Softmax_98" and bench.inspector.node_list.value == "node_Softmax_98"
    bench.inspector.node_list.value = "mask_scale"
    assert bench.error_plot.selected == "mask_scale"


def test_the_plot_knows_the_tolerance_and_title(diagnosis_of):
    plot = ErrorPlot.of(diagnosis_of("clean_mlp"))
    assert plot.tolerance > 0 and "OK" in plot.title and all(p[6] == "clean" for p in plot.points)
