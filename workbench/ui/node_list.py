"""The inspector's node list: one row per node with its role badge; the selected row highlighted and scrolled to.

An anywidget because ipywidgets' Select can neither colour an option nor scroll to the one chosen
from elsewhere (a Netron click, the error plot).
"""

from __future__ import annotations

import anywidget
import traitlets

from workbench.ui.roles import COLOURS, SHORT

_ESM = """
function render({ model, el }) {
  const box = document.createElement("div");
  box.className = "wb-node-list";
  box.setAttribute("role", "listbox");
  box.style.cssText = "height:320px;overflow-y:auto;border:1px solid var(--jp-border-color1,#d0d7de);" +
    "font-size:0.9em;width:300px;background:var(--jp-layout-color0,#fff);color:var(--jp-ui-font-color1,#1f2328)";
  el.appendChild(box);
  const badges = model.get("badges");
  const colours = model.get("colours");
  const draw = () => {
    box.replaceChildren();
    for (const [name, op, role] of model.get("items")) {
      const row = document.createElement("div");
      row.className = "wb-node-row";
      row.dataset.node = name;
      row.dataset.role = role;
      row.setAttribute("role", "option");
      row.style.cssText = "padding:1px 4px;cursor:pointer;white-space:nowrap;overflow:hidden;text-overflow:ellipsis";
      if (badges[role]) {
        const badge = document.createElement("span");
        badge.className = "wb-badge wb-badge-" + role;
        badge.textContent = badges[role];
        badge.style.cssText = "background:" + colours[role] + ";color:#fff;border-radius:3px;padding:0 4px;" +
          "margin-right:4px;font-size:0.8em";
        row.appendChild(badge);
      }
      row.appendChild(document.createTextNode(name + " (" + op + ")"));
      row.title = name + " (" + op + ")";
      row.addEventListener("click", () => {
        model.set("value", name);
        model.save_changes();
      });
      box.appendChild(row);
    }
    mark();
  };
  const mark = () => {
    const value = model.get("value");
    for (const row of box.children) {
      const selected = row.dataset.node === value;
      row.classList.toggle("wb-selected", selected);
      row.setAttribute("aria-selected", selected ? "true" : "false");
      row.style.background = selected ? "var(--jp-brand-color1,#0969da)" : "";
      row.style.color = selected ? "#fff" : "";
      if (selected) {
        // Scroll the list only, never the notebook around it.
        const top = row.offsetTop - box.offsetTop;
        if (top < box.scrollTop || top + row.offsetHeight > box.scrollTop + box.clientHeight) {
          box.scrollTop = Math.max(0, top - box.clientHeight / 2);
        }
      }
    }
  };
  model.on("change:items", draw);
  model.on("change:value", mark);
  draw();
  // Rendered in a hidden tab the list has no height yet: scroll to the selection once it is shown.
  const observer = new IntersectionObserver((entries) => { if (entries.some((e) => e.isIntersecting)) mark(); });
  observer.observe(box);
  return () => observer.disconnect();
}
export default { render };
"""


class NodeList(anywidget.AnyWidget):
    _esm = traitlets.Unicode(_ESM).tag(sync=True)
    items = traitlets.List(help="[name, op_type, role] of each node shown, in graph order").tag(sync=True)
    value = traitlets.Unicode("", help="the selected node ('' for none)").tag(sync=True)
    badges = traitlets.Dict(SHORT).tag(sync=True)
    colours = traitlets.Dict(COLOURS).tag(sync=True)

    @property
    def names(self) -> list[str]:
        return [item[0] for item in self.items]
