"""The frame that holds Netron's page, loaded only while it can be seen.

Netron lays the graph out on load; in a hidden tab (display: none) every coordinate is NaN
(`translate(NaN,NaN)` errors) and the view opens away from the selected node. So the iframe is
made, or pointed at a new page, only when the frame is on screen; a frame shown again with the
same page is left alone, keeping Netron's scroll and zoom.
"""

from __future__ import annotations

import anywidget
import traitlets

_ESM = """
function render({ model, el }) {
  let frame = null;
  let visible = false;
  const load = () => {
    const url = model.get("url");
    if (!visible) {
      return;
    }
    if (!url) {
      if (frame) { frame.remove(); frame = null; }
      return;
    }
    if (frame && frame.dataset.url === url) {
      return;
    }
    if (!frame) {
      frame = document.createElement("iframe");
      frame.className = "wb-netron";
      frame.title = "Netron";
      frame.style.cssText = "width:100%;height:620px;border:1px solid #d0d7de";
      el.appendChild(frame);
    }
    frame.dataset.url = url;
    frame.src = url;
    model.set("loads", model.get("loads") + 1);
    model.save_changes();
  };
  const observer = new IntersectionObserver((entries) => {
    visible = entries.some((entry) => entry.isIntersecting);
    load();
  });
  el.style.minHeight = "1px";  // an empty element never intersects
  observer.observe(el);
  model.on("change:url", load);
  return () => observer.disconnect();
}
export default { render };
"""


class NetronFrame(anywidget.AnyWidget):
    _esm = traitlets.Unicode(_ESM).tag(sync=True)
    url = traitlets.Unicode("", help="the page to show ('' for none)").tag(sync=True)
    loads = traitlets.Int(0, help="how many times a browser view loaded a page (counted by the view)").tag(sync=True)
