"""The speed and accuracy of variants (a workbench.variants.speed.SpeedTable) as one matplotlib figure."""

from __future__ import annotations

import math

from matplotlib.figure import Figure

COLOURS = {"fp32": "#0969da", "fp16": "#bf8700", "fused": "#1a7f37", "int8": "#cf222e"}


def plot_speed(table, figsize=(11, 3.6)) -> Figure:
    """Latency p50 with p90 whiskers, throughput, and accuracy against throughput, one colour per variant."""
    rows = [row for row in table.rows if not row.error]
    figure = Figure(figsize=figsize, layout="constrained")
    latency_axis, throughput_axis, accuracy_axis = figure.subplots(1, 3)
    names = [row.variant for row in rows]
    colours = [COLOURS.get(name, "#6e7781") for name in names]
    p50 = [row.latency_p50_ms for row in rows]
    spread = [max(row.latency_p90_ms - row.latency_p50_ms, 0.0) for row in rows]
    latency_axis.bar(names, p50, yerr=[[0] * len(rows), spread], color=colours, capsize=4)
    latency_axis.set_ylabel(f"latency, ms (batch {table.latency_batch})")
    latency_axis.set_title("p50, whisker to p90", fontsize="medium")
    throughput_axis.bar(names, [row.throughput for row in rows], color=colours)
    throughput_axis.set_ylabel(f"samples/s (batch {table.throughput_batch})")
    throughput_axis.set_title("throughput", fontsize="medium")
    for row, colour in zip(rows, colours):
        if math.isfinite(row.accuracy) and math.isfinite(row.throughput):
            accuracy_axis.scatter(row.throughput, 100 * row.accuracy, color=colour, s=60, zorder=3, alpha=0.8,
                                  label=f"{row.variant}: {100 * row.agreement:.0f}% as FP32")
    accuracy_axis.set_xlabel("samples/s")
    accuracy_axis.set_ylabel(f"accuracy, % ({table.test_pairs} pairs)")
    accuracy_axis.set_title("accuracy against speed", fontsize="medium")
    accuracy_axis.grid(alpha=0.3)
    if rows:
        accuracy_axis.legend(fontsize="small", title="decides", title_fontsize="small")
    figure.suptitle(f"{table.name}: variants on ONNX Runtime CPU", fontsize="medium")
    return figure
