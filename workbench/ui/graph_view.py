"""Graph: Netron on the full models and on a focused view of the selected node, root causes outlined."""

from __future__ import annotations

import html
import os
import sys

import ipywidgets as widgets

from workbench.diagnosis.result import Diagnosis
from workbench.io.model import model_bytes
from workbench.ui.fix_changes import fix_changes
from workbench.ui.neighbourhood import FIXED_NOTE, FOCUS_NOTE, ROOT_NOTE, neighbourhood
from workbench.ui.netron_frame import NetronFrame
from workbench.ui.netron_server import NetronUnavailable, Page, shared_server
from workbench.ui.node_picker import NodePicker
from workbench.ui.roles import node_roles
from workbench.ui.state import WorkbenchState

VIEWS = (("Around the selected node", "focus"), ("Whole candidate", "candidate"), ("Whole reference", "reference"))
_PROTOBUF_LIMIT = 2**31 - 1


class GraphPanel:
    """Starts Netron only when first shown (`activate`), then follows the selected node while shown.

    While hidden (`deactivate`) a new selection only marks the page stale; it is made when the tab is
    shown again, so Netron never lays out a graph it cannot see.
    """

    def __init__(self, diagnosis: Diagnosis, state: WorkbenchState, server_factory=shared_server):
        self.diagnosis, self.state, self.server_factory = diagnosis, state, server_factory
        self.roots = tuple(f.node for f in diagnosis.roots)
        self.view = widgets.ToggleButtons(options=VIEWS, value="focus", style={"button_width": "auto"})
        self.hops = widgets.BoundedIntText(value=2, min=1, max=8, description="hops", layout=widgets.Layout(width="140px"))
        self.status = widgets.HTML()
        self.frame = NetronFrame(layout=widgets.Layout(width="100%"))
        self.active = False
        self.stale = False
        self.url: str | None = None
        self.roles = tuple(node_roles(diagnosis).items())
        self._fixed_changes: tuple[str, ...] = ()
        self._picked_in_netron = ""
        self.view.observe(lambda _: self.refresh(), "value")
        self.hops.observe(lambda _: self.refresh(), "value")
        state.observe(self._on_node, "node")
        state.observe(self._on_verification, "verification")
        self.node_names = {node.name for node in diagnosis.candidate.graph.node}
        self.picker = NodePicker()  # a click on a node in Netron selects it here
        self.picker.observe(self._on_pick, "node")
        self.widget = widgets.VBox([widgets.HBox([self.view, self.hops]), self.status, self.frame, self.picker])
        self.status.value = "<p>Netron starts when this tab is opened.</p>"

    def activate(self) -> None:
        self.active = True
        if self.stale or self.url is None:
            self.refresh()

    def deactivate(self) -> None:
        self.active = False

    def refresh(self) -> None:
        if not self.active:
            self.stale = True
            return
        self.stale = False
        self.url = None
        problem = _where_netron_cannot_show()
        if problem:
            return self._show_problem(problem)
        try:
            page, note = self._page()
            if page is None:
                self.frame.url = ""
                self.status.value = f"<p>{note}</p>"
                return
            server = self.server_factory()
            self.picker.origin = server.base_url().rstrip("/")
            self.url = server.base_url() + server.publish(page)
        except NetronUnavailable as exc:
            return self._show_problem(str(exc))
        self.status.value = f"<p>{note} <a href='{html.escape(self.url)}' target='_blank'>Open in a new tab</a>.</p>"
        self.frame.url = self.url

    def _page(self) -> tuple[Page | None, str]:
        node = self.state.node or (self.roots[0] if self.roots else "")
        outlined = self._outline_note()
        if self.view.value == "focus":
            if not node:
                return None, "Select a node (Node inspector) to see its neighbourhood."
            notes = {name: ROOT_NOTE for name in self.roots}
            notes.setdefault(node, FOCUS_NOTE)
            focused = neighbourhood(self.diagnosis.candidate.proto, node, self.hops.value, notes)
            text = (f"The candidate's nodes within {self.hops.value} hops of <code>{html.escape(node)}</code>, "
                    f"which is selected. {outlined}")
            return Page("focused.onnx", focused.SerializeToString(), self.roots, node, _roles_in(self.roles, focused)), text
        if self.view.value == "fixed":
            return self._fixed_page(node)
        model = self._whole_model(self.view.value)
        if model_bytes(model) > _PROTOBUF_LIMIT:
            return None, f"{html.escape(model.name)} is over 2 GB: too large to show here; use the focused view."
        text = f"The whole of <code>{html.escape(model.name)}</code> ({html.escape(model.origin)}). {outlined}"
        # The whole model, weights read in: Netron cannot follow external-data references to the user's files.
        roles = self.roles if self.view.value == "candidate" else ()
        return Page(f"{self.view.value}.onnx", model.to_proto().SerializeToString(), self.roots, node or None,
                    roles), text

    def _fixed_page(self, node: str) -> tuple[Page | None, str]:
        """The fixed candidate, coloured by its own diagnosis; the nodes the fix changed marked (and noted)."""
        verification = self.state.verification
        model = verification.model
        if model_bytes(model) > _PROTOBUF_LIMIT:
            return None, f"{html.escape(model.name)} is over 2 GB: too large to show here."
        proto = model.to_proto()
        changed = set(self._fixed_changes)
        for item in proto.graph.node:
            if item.name in changed:
                item.doc_string = FIXED_NOTE
        roots = tuple(f.node for f in verification.after.roots)
        names = ", ".join(f"<code>{html.escape(n)}</code>" for n in self._fixed_changes) or "none"
        text = (f"The fixed candidate, <code>{html.escape(model.name)}</code>: {verification.after.verdict.upper()}. "
                f"Outlined in green, what the fix changed: {names}.")
        if roots:
            text += " Roots left: " + ", ".join(f"<code>{html.escape(n)}</code>" for n in roots) + "."
        focus = node if node in {n.name for n in proto.graph.node} else None
        return Page("fixed.onnx", proto.SerializeToString(), roots, focus,
                    tuple(node_roles(verification.after).items()), self._fixed_changes), text

    def _whole_model(self, view: str):
        if view == "fixed":
            return self.state.verification.model
        return self.diagnosis.candidate if view == "candidate" else self.diagnosis.reference

    def _on_pick(self, change) -> None:
        """A node clicked in Netron becomes the selected node (the other tabs follow; Netron, showing it, stays)."""
        if change["new"] in self.node_names:
            self._picked_in_netron = change["new"]
            self.state.node = change["new"]

    def _on_node(self, change) -> None:
        if change["new"] and change["new"] == self._picked_in_netron:
            return  # reloading the page the user just clicked in would lose their place
        self._picked_in_netron = ""
        self.refresh()

    def _on_verification(self, change) -> None:
        if change["new"] is not None:
            self._fixed_changes = fix_changes(self.diagnosis, change["new"])
        options = list(VIEWS) + ([("Whole fixed candidate", "fixed")] if change["new"] is not None else [])
        current = self.view.value
        self.view.options = options
        self.view.value = current if current in {value for _, value in options} else "focus"

    def _outline_note(self) -> str:
        if not self.roots:
            return "No root cause to outline."
        names = ", ".join(f"<code>{html.escape(n)}</code>" for n in self.roots)
        return (f"Root cause {names} is outlined in red (its properties say {ROOT_NOTE}); nodes are coloured by "
                "their role (the legend at the top right turns it off). Netron's Ctrl+F finds any node by name.")

    def _show_problem(self, problem: str) -> None:
        self.frame.url = ""
        self.status.value = (f"<p class='wb-netron-problem'><b>Netron cannot be shown here:</b> {html.escape(problem)} "
                             "The other panels work without it.</p>")


def _roles_in(roles: tuple[tuple[str, str], ...], model) -> tuple[tuple[str, str], ...]:
    """The roles of the nodes a page shows (its legend counts those only)."""
    shown = {node.name for node in model.graph.node}
    return tuple((name, role) for name, role in roles if name in shown)


def _where_netron_cannot_show() -> str | None:
    """Netron runs on the kernel's machine; a browser elsewhere cannot reach its loopback port."""
    if "google.colab" in sys.modules:
        return "in Colab the browser cannot reach a server started by the kernel."
    if os.environ.get("JUPYTERHUB_SERVICE_PREFIX"):
        return ("this is a JupyterHub server: Netron listens on the kernel's machine, which your browser "
                "cannot reach; run `netron model.onnx` on your own machine instead.")
    return None
