"""Figures for the workbench, as pure matplotlib: each builder takes an axis and data, and knows nothing of widgets."""

from __future__ import annotations

import io
import math

import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from workbench.compare.diff import Tolerance
from workbench.diagnosis.result import Diagnosis
from workbench.formats import FP16

ERROR_FLOOR = 1e-8  # exact matches are drawn here: a log axis has no 0
ROOT_COLOUR = "#cf222e"
NONFINITE_COLOUR = "#bf8700"
REFERENCE_COLOUR = "#0969da"
CANDIDATE_COLOUR = "#cf222e"


def error_along_graph(diagnosis: Diagnosis, figsize=(11, 4.5)) -> Figure:
    """Per-node error in graph order (top) and non-finite counts (bottom), roots and the first non-finite marked."""
    figure = Figure(figsize=figsize, layout="constrained")
    error_axis, count_axis = figure.subplots(2, 1, sharex=True, height_ratios=(3, 1))
    draw_node_errors(error_axis, diagnosis)
    draw_nonfinite_counts(count_axis, diagnosis)
    for axis in (error_axis, count_axis):
        mark_findings(axis, diagnosis, label=axis is error_axis)
    figure.legend(*error_axis.get_legend_handles_labels(), loc="outside right upper", fontsize="small")
    count_axis.set_xlabel("node, in graph order")
    return figure


def draw_node_errors(axis: Axes, diagnosis: Diagnosis) -> None:
    positions, worst = _series(diagnosis, lambda c: c.worst)
    local_positions, local = _series(diagnosis, lambda c: c.local)
    ceiling = _ceiling(worst + local)
    axis.set_yscale("log")
    axis.plot(positions, np.clip(worst, ERROR_FLOOR, ceiling), ".", ms=4, color=REFERENCE_COLOUR,
              label="output error (rel-L2; exact at 1e-8)", gid="output-error")
    if local_positions:
        axis.plot(local_positions, np.clip(local, ERROR_FLOOR, ceiling), "o", mfc="none", ms=5, color="#6e7781",
                  label="own error (FP16 on FP32 inputs)", gid="local-error")
    unbounded = [p for p, v in zip(positions, worst) if not math.isfinite(v)]
    if unbounded:
        axis.plot(unbounded, [ceiling] * len(unbounded), "^", color=NONFINITE_COLOUR, ms=5,
                  label="unbounded (non-finite)", gid="unbounded")
    options = getattr(diagnosis, "options", None)
    tolerance = (options.tolerance if options is not None else Tolerance()).rel_l2
    axis.axhline(tolerance, color="#6e7781", ls=":", lw=1, label=f"tolerance {tolerance:g}", gid="tolerance")
    axis.set_ylim(ERROR_FLOOR / 2, ceiling * 4)
    axis.set_ylabel("rel-L2 vs FP32")
    axis.set_title(f"{diagnosis.candidate.name} against {diagnosis.reference.name}: {diagnosis.verdict.upper()}")


def draw_nonfinite_counts(axis: Axes, diagnosis: Diagnosis) -> None:
    positions = list(range(len(diagnosis.nodes)))
    counts = [c.worst.nonfinite if c.worst else 0 for c in diagnosis.nodes]
    axis.bar(positions, counts, width=1.0, color=NONFINITE_COLOUR, gid="nonfinite-counts")
    axis.set_ylabel("non-finite")


def mark_findings(axis: Axes, diagnosis: Diagnosis, label: bool) -> None:
    """Vertical lines at the roots, the warnings and the first non-finite node (labelled where the legend is)."""
    where = {c.node: i for i, c in enumerate(diagnosis.nodes)}
    for root in diagnosis.roots:
        if root.node in where:
            axis.axvline(where[root.node], color=ROOT_COLOUR, lw=1.5,
                         label=f"root: {root.node}" if label else None, gid=f"root:{root.node}")
    for warning in diagnosis.warnings:
        if warning.node in where:
            axis.axvline(where[warning.node], color="#6e7781", ls="-.", lw=1.2,
                         label=f"warning: {warning.node}" if label else None, gid=f"warning:{warning.node}")
    first = diagnosis.first_nonfinite
    if first in where:
        axis.axvline(where[first], color=NONFINITE_COLOUR, ls="--", lw=1.2,
                     label=f"first non-finite: {first}" if label else None, gid=f"first-nonfinite:{first}")


def value_histogram(reference: np.ndarray | None, candidate: np.ndarray | None, title: str, figsize=(7, 3)) -> Figure:
    figure = Figure(figsize=figsize, layout="constrained")
    draw_value_histogram(figure.subplots(), reference, candidate, title)
    return figure


def draw_value_histogram(axis: Axes, reference: np.ndarray | None, candidate: np.ndarray | None, title: str) -> None:
    """FP32 against candidate values on a symlog axis, FP16's ±65504 marked, non-finite values counted in text.

    The axis is linear below FP16's smallest normal (6.1e-5) and logarithmic beyond, so values from
    subnormals to float32's ±3.4e38 fit on one axis.
    """
    series = [(v, label, colour) for v, label, colour in
              ((reference, "reference", REFERENCE_COLOUR), (candidate, "candidate", CANDIDATE_COLOUR))
              if v is not None and v.dtype.kind == "f"]
    finite = [_finite(v) for v, _, _ in series]
    edges = symlog_bins([f for f in finite if f.size])
    notes = []
    for (values, label, colour), data in zip(series, finite):
        axis.hist(data, bins=edges, histtype="step", lw=1.4, color=colour, label=f"{label} {values.dtype.name}")
        note = _nonfinite_note(values)
        if note:
            notes.append((f"{label}: {note} (not drawn)", colour))
    for limit in (-FP16.max, FP16.max):
        axis.axvline(limit, color="#6e7781", ls="--", lw=1, gid=f"fp16-limit:{limit:+g}",
                     label="FP16 limit ±65504" if limit > 0 else None)
    for row, (text, colour) in enumerate(notes):
        axis.text(0.01, 0.97 - 0.09 * row, text, transform=axis.transAxes, va="top", color=colour,
                  fontsize="small", gid="nonfinite-note")
    axis.set_xscale("symlog", linthresh=FP16.normal_min, linscale=0.5)
    _decade_ticks(axis, float(np.max(np.abs(edges))))
    axis.set_yscale("log")
    axis.set_ylim(bottom=0.5)
    axis.set_xlabel("value (symlog: linear within ±6.1e-5)")
    axis.set_ylabel("count")
    axis.set_title(title, fontsize="medium")
    axis.legend(fontsize="small", loc="upper right")


def symlog_bins(arrays: list[np.ndarray], count: int = 80) -> np.ndarray:
    """Bin edges even on a symlog scale, spanning the data and FP16's ±65504 with a margin."""
    low = min([float(a.min()) for a in arrays] + [-FP16.max * 2])
    high = max([float(a.max()) for a in arrays] + [FP16.max * 2])
    return _from_symlog(np.linspace(_to_symlog(low), _to_symlog(high), count + 1))


def figure_png(figure: Figure, dpi: int = 90) -> bytes:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=dpi)
    return buffer.getvalue()


def _series(diagnosis: Diagnosis, pick) -> tuple[list[int], list[float]]:
    positions, values = [], []
    for i, comparison in enumerate(diagnosis.nodes):
        diff = pick(comparison)
        if diff is not None:
            positions.append(i)
            values.append(float("inf") if diff.nonfinite else diff.rel_l2)
    return positions, values


def _ceiling(values: list[float]) -> float:
    finite = [v for v in values if math.isfinite(v)]
    return max([1.0] + finite) * 10


def _finite(values: np.ndarray) -> np.ndarray:
    data = values.astype(np.float64).ravel()
    return data[np.isfinite(data)]


def _decade_ticks(axis: Axes, largest: float, most: int = 4) -> None:
    """A few ±10^k ticks each side of 0 (the default symlog locator labels every decade, unreadably)."""
    low = int(np.floor(np.log10(FP16.normal_min)))
    high = int(np.ceil(np.log10(largest)))
    step = max(1, int(np.ceil((high - low) / most)))
    exponents = list(range(high, low, -step))[::-1]
    ticks = [-(10.0**k) for k in reversed(exponents)] + [0.0] + [10.0**k for k in exponents]
    labels = [f"$-10^{{{k}}}$" for k in reversed(exponents)] + ["0"] + [f"$10^{{{k}}}$" for k in exponents]
    axis.set_xticks(ticks, labels)
    axis.set_xlim(-largest, largest)


def _to_symlog(value: float) -> float:
    return float(np.sign(value) * np.log10(1 + abs(value) / FP16.normal_min))


def _from_symlog(values: np.ndarray) -> np.ndarray:
    return np.sign(values) * FP16.normal_min * (10.0 ** np.abs(values) - 1)


def _nonfinite_note(values: np.ndarray) -> str:
    nan = int(np.count_nonzero(np.isnan(values)))
    posinf = int(np.count_nonzero(values == np.inf))
    neginf = int(np.count_nonzero(values == -np.inf))
    parts = [f"{n} {label}" for n, label in ((nan, "NaN"), (posinf, "+inf"), (neginf, "-inf")) if n]
    return ", ".join(parts)
