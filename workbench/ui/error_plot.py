"""The interactive error plot: per-node error in graph order, names on hover, a click selects the node.

An anywidget drawing SVG: the top panel is each node's output error (rel-L2 against FP32, log
scale; non-finite outputs as triangles on top) with its own error as rings; the bottom panel is the
count of non-finite elements (log scale). Drag across to zoom into a range of nodes, double-click
or "reset zoom" to see all. Colours are the nodes' roles (workbench.ui.roles). The static figure
for nbconvert and CI stays in workbench.ui.plots.
"""

from __future__ import annotations

import math

import anywidget
import traitlets

from workbench.compare.diff import Tolerance
from workbench.diagnosis.result import Diagnosis
from workbench.ui.roles import COLOURS, LABELS, node_roles

_ESM = r"""
const NS = "http://www.w3.org/2000/svg";
const W = 960, H = 420, LEFT = 64, RIGHT = 12, TOP = 28, MID = 300, BOTTOM = 392, GAP = 24;
const FLOOR = 1e-8;

function svg(tag, attributes, parent) {
  const element = document.createElementNS(NS, tag);
  for (const [key, value] of Object.entries(attributes)) element.setAttribute(key, value);
  if (parent) parent.appendChild(element);
  return element;
}

function format(value) {
  return value === null || value === undefined ? "–" : Number(value).toPrecision(3);
}

function render({ model, el }) {
  const points = model.get("points");
  const colours = model.get("colours");
  const labels = model.get("labels");
  const root = document.createElement("div");
  root.className = "wb-error-plot";
  root.style.cssText = "position:relative;max-width:1100px;font:12px sans-serif;color:var(--jp-ui-font-color1,#1f2328)";
  el.appendChild(root);
  const bar = document.createElement("div");
  bar.style.cssText = "display:flex;gap:12px;align-items:center;margin-bottom:2px;flex-wrap:wrap";
  root.appendChild(bar);
  const reset = document.createElement("button");
  reset.textContent = "reset zoom";
  reset.className = "wb-plot-reset jupyter-button";
  bar.appendChild(reset);
  const hint = document.createElement("span");
  hint.textContent = "hover for names · click selects the node in every tab · drag across to zoom";
  hint.style.opacity = "0.7";
  bar.appendChild(hint);
  const legend = document.createElement("span");
  for (const role of ["root", "victim", "own", "harmless", "clean"]) {
    if (!points.some((p) => p[6] === role)) continue;
    const item = document.createElement("span");
    item.style.marginRight = "8px";
    item.innerHTML = "<span style='display:inline-block;width:9px;height:9px;border-radius:50%;margin-right:3px;background:" +
      (colours[role] || "#0969da") + "'></span>";
    item.appendChild(document.createTextNode(role === "clean" ? "within tolerance" : labels[role].split(":")[0]));
    legend.appendChild(item);
  }
  bar.appendChild(legend);
  const plot = svg("svg", { viewBox: `0 0 ${W} ${H}`, width: "100%", class: "wb-plot-svg" }, root);
  plot.style.cursor = "crosshair";
  plot.style.userSelect = "none";
  const tip = document.createElement("div");
  tip.className = "wb-plot-tip";
  tip.style.cssText = "position:absolute;display:none;pointer-events:none;background:rgba(31,35,40,0.92);color:#fff;" +
    "padding:4px 6px;border-radius:4px;white-space:nowrap;z-index:5";
  root.appendChild(tip);

  const finite = points.flatMap((p) => [p[3], p[4]]).filter((v) => v !== null && v > 0);
  const ceiling = Math.max(1, ...finite) * 10;
  const yTop = (v) => {
    const t = (Math.log10(Math.max(v, FLOOR)) - Math.log10(FLOOR)) / (Math.log10(ceiling) - Math.log10(FLOOR));
    return MID - t * (MID - TOP);
  };
  const maxCount = Math.max(1, ...points.map((p) => p[5]));
  const countTop = MID + GAP;
  const yCount = (n) => BOTTOM - (Math.log10(n) / Math.max(Math.log10(maxCount), 1)) * (BOTTOM - countTop - 6);
  const full = [-0.5, Math.max(points.length - 0.5, 0.5)];
  let domain = full.slice();
  const x = (i) => LEFT + ((i - domain[0]) / (domain[1] - domain[0])) * (W - LEFT - RIGHT);
  const index = (px) => domain[0] + ((px - LEFT) / (W - LEFT - RIGHT)) * (domain[1] - domain[0]);

  const draw = () => {
    plot.replaceChildren();
    const selected = model.get("selected");
    svg("text", { x: LEFT, y: 16, class: "wb-plot-title", fill: "currentColor" }, plot).textContent = model.get("title");
    for (let k = Math.round(Math.log10(FLOOR)); k <= Math.log10(ceiling); k += 2) {
      svg("line", { x1: LEFT, x2: W - RIGHT, y1: yTop(10 ** k), y2: yTop(10 ** k), stroke: "#8c959f", "stroke-opacity": 0.25 }, plot);
      svg("text", { x: LEFT - 4, y: yTop(10 ** k) + 4, "text-anchor": "end", fill: "currentColor", "font-size": 10 }, plot).textContent = "1e" + k;
    }
    const tolerance = model.get("tolerance");
    svg("line", { x1: LEFT, x2: W - RIGHT, y1: yTop(tolerance), y2: yTop(tolerance), stroke: "#6e7781", "stroke-dasharray": "3 3" }, plot);
    svg("text", { x: W - RIGHT, y: yTop(tolerance) - 3, "text-anchor": "end", fill: "#6e7781", "font-size": 10 }, plot).textContent = "tolerance " + tolerance;
    const label = svg("text", { x: 12, y: (TOP + MID) / 2, fill: "currentColor", "font-size": 11,
      transform: `rotate(-90 12 ${(TOP + MID) / 2})`, "text-anchor": "middle" }, plot);
    label.textContent = "rel-L2 vs FP32 (log; exact at 1e-8)";
    const countLabel = svg("text", { x: 12, y: (countTop + BOTTOM) / 2, fill: "currentColor", "font-size": 10,
      transform: `rotate(-90 12 ${(countTop + BOTTOM) / 2})`, "text-anchor": "middle" }, plot);
    countLabel.textContent = "non-finite";
    svg("line", { x1: LEFT, x2: W - RIGHT, y1: BOTTOM, y2: BOTTOM, stroke: "#8c959f" }, plot);
    svg("text", { x: LEFT - 4, y: yCount(maxCount) + 4, "text-anchor": "end", fill: "currentColor", "font-size": 10 }, plot).textContent = String(maxCount);
    svg("text", { x: LEFT - 4, y: BOTTOM, "text-anchor": "end", fill: "currentColor", "font-size": 10 }, plot).textContent = "1";
    svg("text", { x: (LEFT + W) / 2, y: H - 4, "text-anchor": "middle", fill: "currentColor", "font-size": 11 }, plot).textContent =
      `node, in graph order (${Math.max(0, Math.ceil(domain[0]))}–${Math.min(points.length - 1, Math.floor(domain[1]))} of ${points.length})`;
    const inside = points.filter((p) => p[0] >= domain[0] && p[0] <= domain[1]);
    const barWidth = Math.max(1, (W - LEFT - RIGHT) / Math.max(inside.length, 1) - 1);
    for (const p of inside) {
      const [i, name, , worst, local, count, role] = p;
      const colour = colours[role] || "#0969da";
      if (role === "root" || role === "harmless" || name === selected) {
        svg("line", { x1: x(i), x2: x(i), y1: TOP, y2: BOTTOM, stroke: name === selected ? "#0969da" : colour,
          "stroke-width": name === selected ? 2 : 1, "stroke-dasharray": role === "harmless" ? "4 3" : "", class: name === selected ? "wb-plot-selected" : "", "data-node": name }, plot);
      }
      if (count > 0) {
        svg("rect", { x: x(i) - barWidth / 2, y: yCount(count), width: barWidth, height: Math.max(BOTTOM - yCount(count), 1.5),
          fill: "#bf8700", class: "wb-plot-count", "data-node": name }, plot);
      }
      if (local !== null) {
        svg("circle", { cx: x(i), cy: yTop(local), r: 4, fill: "none", stroke: "#6e7781" }, plot);
      }
      const radius = name === selected ? 5.5 : 3.5;
      if (count > 0) {  // non-finite elements: the error is unbounded, drawn on top
        const y = TOP + 4;
        svg("path", { d: `M${x(i)},${y - 5} l5,9 h-10 z`, fill: colour, class: "wb-plot-point", "data-node": name }, plot);
      } else if (p[7]) {
        svg("circle", { cx: x(i), cy: yTop(worst === null ? ceiling : worst), r: radius, fill: colour, class: "wb-plot-point", "data-node": name }, plot);
      }
    }
  };

  const nearest = (event) => {
    const box = plot.getBoundingClientRect();
    const px = ((event.clientX - box.left) / box.width) * W;
    const at = Math.round(index(px));
    const pixelsPerNode = (W - LEFT - RIGHT) / (domain[1] - domain[0]);
    const reach = Math.max(1, Math.round(6 / pixelsPerNode));
    let best = null;
    for (let i = Math.max(0, at - reach); i <= Math.min(points.length - 1, at + reach); i++) {
      if (best === null || Math.abs(i - index(px)) < Math.abs(best - index(px))) best = i;
    }
    return best === null || px < LEFT ? null : points[best];
  };
  let dragFrom = null, band = null;
  plot.addEventListener("mousedown", (event) => {
    const box = plot.getBoundingClientRect();
    dragFrom = ((event.clientX - box.left) / box.width) * W;
  });
  plot.addEventListener("mousemove", (event) => {
    const box = plot.getBoundingClientRect();
    const px = ((event.clientX - box.left) / box.width) * W;
    if (dragFrom !== null && Math.abs(px - dragFrom) > 4) {
      if (!band) band = svg("rect", { y: TOP, height: BOTTOM - TOP, fill: "#0969da", "fill-opacity": 0.12, class: "wb-plot-band" }, plot);
      band.setAttribute("x", Math.min(px, dragFrom));
      band.setAttribute("width", Math.abs(px - dragFrom));
    }
    const point = nearest(event);
    if (!point) { tip.style.display = "none"; return; }
    const [, name, op, worst, local, count, role] = point;
    tip.replaceChildren();
    const title = document.createElement("b");
    title.textContent = name;
    tip.appendChild(title);
    const lines = [`${op} · ${role === "clean" ? "within tolerance" : labels[role]}`,
      "output rel-L2 " + (worst === null ? "unbounded" : format(worst) + (count ? " over finite elements" : "")) +
        (local !== null ? ` · own ${format(local)}` : ""),
      `non-finite elements: ${count}` + (count ? " (unbounded error)" : "")];
    for (const text of lines) {
      const line = document.createElement("div");
      line.textContent = text;
      tip.appendChild(line);
    }
    tip.style.display = "block";
    const rootBox = root.getBoundingClientRect();
    tip.style.left = Math.min(event.clientX - rootBox.left + 12, rootBox.width - 260) + "px";
    tip.style.top = event.clientY - rootBox.top + 12 + "px";
  });
  plot.addEventListener("mouseleave", () => { tip.style.display = "none"; });
  plot.addEventListener("mouseup", (event) => {
    const box = plot.getBoundingClientRect();
    const px = ((event.clientX - box.left) / box.width) * W;
    const from = dragFrom;
    dragFrom = null;
    if (band) { band.remove(); band = null; }
    if (from !== null && Math.abs(px - from) > 4) {
      const low = index(Math.min(px, from)), high = index(Math.max(px, from));
      if (high - low >= 1) { domain = [low, high]; draw(); }
      return;
    }
    const point = nearest(event);
    if (point) {
      model.set("selected", point[1]);
      model.save_changes();
    }
  });
  plot.addEventListener("dblclick", () => { domain = full.slice(); draw(); });
  reset.addEventListener("click", () => { domain = full.slice(); draw(); });
  model.on("change:selected", draw);
  draw();
}
export default { render };
"""


class ErrorPlot(anywidget.AnyWidget):
    _esm = traitlets.Unicode(_ESM).tag(sync=True)
    points = traitlets.List(help="[index, name, op_type, output rel-L2 or None, own rel-L2 or None, "
                                 "non-finite count, role, compared] per node").tag(sync=True)
    tolerance = traitlets.Float(Tolerance().rel_l2).tag(sync=True)
    title = traitlets.Unicode("").tag(sync=True)
    selected = traitlets.Unicode("", help="the selected node").tag(sync=True)
    colours = traitlets.Dict(COLOURS).tag(sync=True)
    labels = traitlets.Dict(LABELS).tag(sync=True)

    @classmethod
    def of(cls, diagnosis: Diagnosis) -> "ErrorPlot":
        options = getattr(diagnosis, "options", None)
        tolerance = (options.tolerance if options is not None else Tolerance()).rel_l2
        title = f"{diagnosis.candidate.name} against {diagnosis.reference.name}: {diagnosis.verdict.upper()}"
        return cls(points=plot_points(diagnosis), tolerance=tolerance, title=title)


def plot_points(diagnosis: Diagnosis) -> list[list]:
    """One row per node for the plot; rel-L2 is over the elements finite in both runs (None: shapes differ)."""
    roles = node_roles(diagnosis)
    rows = []
    for i, comparison in enumerate(diagnosis.nodes):
        worst, local = comparison.worst, comparison.local
        rows.append([i, comparison.node, comparison.op_type, _finite_or_none(worst), _finite_or_none(local),
                     worst.nonfinite if worst else 0, roles[comparison.node], worst is not None])
    return rows


def _finite_or_none(diff) -> float | None:
    if diff is None or not math.isfinite(diff.rel_l2):
        return None
    return float(diff.rel_l2)
