"""A click on a node in Netron's frame selects it in the workbench.

Netron's page is served from another origin (its own port), so the page script posts the
clicked node's name to the notebook page (`window.parent.postMessage`), and this invisible
anywidget, living in the notebook page, accepts messages from that origin only and syncs the
name to the kernel. Hand-written because Netron has no selection API and ipywidgets' HTML
widget runs no script.
"""

from __future__ import annotations

import anywidget
import traitlets

MESSAGE_TYPE = "workbench-node"

_ESM = """
function render({ model, el }) {
  el.style.display = "none";
  const listener = (event) => {
    const data = event.data;
    if (!data || data.type !== "%s" || event.origin !== model.get("origin")) {
      return;
    }
    model.set("node", "");  // a second click on the same node is a change too
    model.set("node", String(data.node));
    model.save_changes();
  };
  window.addEventListener("message", listener);
  return () => window.removeEventListener("message", listener);
}
export default { render };
""" % MESSAGE_TYPE


class NodePicker(anywidget.AnyWidget):
    _esm = traitlets.Unicode(_ESM).tag(sync=True)
    origin = traitlets.Unicode("", help="the Netron server's origin, e.g. http://127.0.0.1:8081").tag(sync=True)
    node = traitlets.Unicode("", help="the node last clicked in Netron").tag(sync=True)
