import numpy as np
from matplotlib.figure import Figure

from workbench.formats import FP16
from workbench.ui import plots


def gids(axis):
    return {artist.get_gid() for artist in axis.get_children() if artist.get_gid()}


def test_error_plot_marks_the_root_and_the_first_nonfinite_node(diagnosis_of):
    diagnosis = diagnosis_of("legacy_mask_bert")
    figure = plots.error_along_graph(diagnosis)
    error_axis, count_axis = figure.axes
    assert error_axis.get_yscale() == "log"
    assert {"root:mask_scale", "first-nonfinite:mask_scale", "output-error", "local-error", "unbounded"} <= gids(error_axis)
    position = [c.node for c in diagnosis.nodes].index("mask_scale")
    root_line = next(line for line in error_axis.lines if line.get_gid() == "root:mask_scale")
    assert list(root_line.get_xdata()) == [position, position]
    assert "root: mask_scale" in [t.get_text() for t in figure.legends[0].get_texts()]
    counts = [bar.get_height() for bar in count_axis.patches]
    assert counts[position] == 16 and len(counts) == len(diagnosis.nodes)


def test_error_plot_of_a_clean_model_marks_nothing(diagnosis_of):
    figure = plots.error_along_graph(diagnosis_of("clean_mlp"))
    marks = {g for g in gids(figure.axes[0]) if g.startswith(("root:", "warning:", "first-nonfinite:", "unbounded"))}
    assert marks == set()
    assert "OK" in figure.axes[0].get_title()


def test_error_plot_marks_a_harmless_fault_as_a_warning(diagnosis_of):
    figure = plots.error_along_graph(diagnosis_of("gelu_tanh_saturation"))
    assert "warning:gelu_pow" in gids(figure.axes[0])


def test_histogram_marks_fp16_limits_and_counts_what_it_cannot_draw():
    reference = np.array([-3.4028235e38, 0.0, 1.0, 2.0], dtype=np.float32)
    with np.errstate(over="ignore"):
        candidate = reference.astype(np.float16)
    figure = plots.value_histogram(reference, candidate, "val")
    axis = figure.axes[0]
    assert {f"fp16-limit:{-FP16.max:+g}", f"fp16-limit:{FP16.max:+g}"} <= gids(axis)
    assert [t.get_text() for t in axis.texts] == ["candidate: 1 -inf (not drawn)"]
    assert axis.get_xscale() == "symlog"
    assert axis.get_xlim()[0] <= -3.4e38


def test_symlog_bins_span_the_data_and_fp16_range():
    edges = plots.symlog_bins([np.array([0.5, 3.0])])
    assert edges[0] <= -FP16.max and edges[-1] >= FP16.max and np.all(np.diff(edges) > 0)


def test_figure_png_is_a_png():
    assert plots.figure_png(Figure(figsize=(1, 1))).startswith(b"\x89PNG")
