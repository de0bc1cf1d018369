"""The Netron panel and its local server, fetched over HTTP (no browser)."""

import urllib.error
import urllib.request

import onnx
import pytest

from workbench.ui.graph_view import GraphPanel
from workbench.ui.neighbourhood import FIXED_NOTE, ROOT_NOTE
from workbench.ui.netron_server import NetronServer, NetronUnavailable
from workbench.ui.state import WorkbenchState


def fetch(url: str) -> bytes:
    with urllib.request.urlopen(url, timeout=10) as response:
        return response.read()


@pytest.fixture(scope="module")
def server():
    server = NetronServer()
    yield server
    server.stop()


@pytest.fixture
def panel(diagnosis_of, server):
    state = WorkbenchState(node="mask_scale")
    panel = GraphPanel(diagnosis_of("legacy_mask_bert"), state, server_factory=lambda: server)
    panel.activate()
    return panel


def test_page_is_served_offline_without_telemetry_or_consent_modal(panel):
    page = fetch(panel.url).decode()
    assert '<meta name="version" content="0.0.0">' in page  # Netron starts telemetry only when "packaged"
    assert "connect-src 'self'" in page
    assert page.index('src="workbench.js"') < page.index('src="index.js"')
    assert b"consent" in fetch(panel.url + "workbench.js")


def test_focused_view_is_a_small_model_with_the_root_noted(panel):
    model = onnx.ModelProto.FromString(fetch(panel.url + "data/focused.onnx"))
    notes = {node.name: node.doc_string for node in model.graph.node}
    assert notes["mask_scale"] == ROOT_NOTE and len(notes) < 30
    css = fetch(panel.url + "workbench.css").decode()
    assert '[id="node-name-mask_scale"]' in css
    assert "mask_scale" in panel.status.value


def test_netron_assets_are_served_and_nothing_outside_them(panel):
    assert b"view.View = class" in fetch(panel.url + "view.js")
    with pytest.raises(urllib.error.HTTPError):
        fetch(panel.url + "..%2F..%2Fserver.py")


def test_full_models_can_be_shown(panel):
    panel.view.value = "reference"
    model = onnx.ModelProto.FromString(fetch(panel.url + "data/reference.onnx"))
    assert len(model.graph.node) == len(panel.diagnosis.reference.graph.node)
    # The weights travel with the page: Netron cannot follow external-data references to the user's files.
    assert not any(t.data_location == onnx.TensorProto.EXTERNAL for t in model.graph.initializer)


def test_following_the_selection_changes_the_focused_page(panel):
    first = panel.url
    panel.state.node = "node_Softmax_98"
    assert panel.url != first and "node_Softmax_98" in panel.status.value


def test_says_so_when_netron_cannot_start(diagnosis_of):
    def broken():
        raise NetronUnavailable("netron is not installed; `pip install netron`.")

    panel = GraphPanel(diagnosis_of("legacy_mask_bert"), WorkbenchState(node="mask_scale"), server_factory=broken)
    panel.activate()
    assert panel.url is None and panel.frame.url == ""
    assert "Netron cannot be shown here" in panel.status.value and "not installed" in panel.status.value


def test_says_so_on_a_remote_hub(diagnosis_of, monkeypatch):
    monkeypatch.setenv("JUPYTERHUB_SERVICE_PREFIX", "/user/someone/")
    panel = GraphPanel(diagnosis_of("legacy_mask_bert"), WorkbenchState(node="mask_scale"))
    panel.activate()
    assert panel.url is None and "JupyterHub" in panel.status.value


def test_a_fixed_model_can_be_shown_once_fixes_are_applied(panel):
    import workbench

    verification = workbench.apply_fixes(panel.diagnosis, panel.diagnosis.roots[0].fixes[:1])
    panel.state.verification = verification
    panel.view.value = "fixed"
    model = onnx.ModelProto.FromString(fetch(panel.url + "data/fixed.onnx"))
    assert len(model.graph.node) == len(verification.model.graph.node)


def test_a_node_clicked_in_netron_becomes_the_selection(panel):
    assert panel.picker.origin == panel.url.split("/", 3)[0] + "//" + panel.url.split("/", 3)[2]  # only Netron's origin
    assert b"workbench-node" in fetch(panel.url + "workbench.js")  # the page posts clicked nodes to the notebook
    panel.picker.node = "node_Softmax_98"
    assert panel.state.node == "node_Softmax_98"
    panel.picker.node = "no_such_node"  # a message naming no candidate node changes nothing
    assert panel.state.node == "node_Softmax_98"


def test_a_hidden_panel_makes_no_page_until_shown_again(panel):
    shown = panel.url
    panel.deactivate()
    panel.state.node = "node_Softmax_98"
    assert panel.url == shown and panel.frame.url == shown  # Netron would lay out a graph it cannot see
    panel.activate()
    assert panel.url != shown and panel.frame.url == panel.url and "node_Softmax_98" in panel.status.value


def test_showing_the_panel_again_unchanged_keeps_the_page(panel):
    shown = panel.url
    panel.deactivate()
    panel.activate()
    assert panel.frame.url == shown  # the frame is not reloaded: Netron keeps its position


def test_nodes_are_coloured_by_role_with_a_legend(panel):
    css = fetch(panel.url + "workbench.css").decode()
    assert 'body:not(.wb-plain) [id="node-name-mask_scale"] .node-item-type path { fill: #cf222e; }' in css
    assert 'body:not(.wb-plain) [id="node-name-node_Softmax_98"] .node-item-type path { fill: #bf8700; }' in css
    page = fetch(panel.url).decode()
    assert 'name="workbench-legend"' in page and "root cause" in page and "victim" in page
    assert b"workbench-colours" in fetch(panel.url + "workbench.js")  # the legend's toggle


def test_the_fixed_view_marks_what_the_fix_changed_and_no_old_root(panel):
    import workbench

    verification = workbench.apply_fixes(panel.diagnosis, panel.diagnosis.roots[0].fixes[:1])  # mask-constant
    panel.state.verification = verification
    panel.view.value = "fixed"
    model = onnx.ModelProto.FromString(fetch(panel.url + "data/fixed.onnx"))
    notes = {node.name: node.doc_string for node in model.graph.node}
    assert notes["mask_scale"] == FIXED_NOTE and ROOT_NOTE not in notes.values()
    assert sum(note == FIXED_NOTE for note in notes.values()) == 1  # only the Mul reading the changed constant
    css = fetch(panel.url + "workbench.css").decode()
    assert "stroke: #cf222e" not in css and "stroke-dasharray" in css
    assert "what the fix changed" in panel.status.value and "ROOT" not in panel.status.value


def test_keep_fp32_changes_are_the_kept_nodes_and_their_casts(diagnosis_of):
    import workbench
    from workbench.ui.fix_changes import changed_nodes, fix_changes

    diagnosis = diagnosis_of("layernorm_pow")
    verification = workbench.apply_fixes(diagnosis, diagnosis.roots[0].fixes[:1])
    rewired = set(changed_nodes(diagnosis.candidate.proto, verification.model.proto))
    assert any(name not in {n.name for n in diagnosis.candidate.graph.node} for name in rewired)  # the new Casts
    changed = set(fix_changes(diagnosis, verification))
    assert set(verification.kept_fp32) | rewired == changed
    unchanged = {n.name for n in diagnosis.candidate.graph.node} - changed
    assert unchanged  # the rest of the graph is not marked


def test_a_node_clicked_in_netron_does_not_reload_netron(panel):
    shown = panel.url
    panel.picker.node = "node_Softmax_98"
    assert panel.state.node == "node_Softmax_98" and panel.frame.url == shown
    panel.state.node = "mask_scale"  # picked elsewhere: the view follows again
    panel.state.node = "node_Softmax_98"
    assert panel.frame.url != shown and "node_Softmax_98" in panel.status.value


def test_the_legend_counts_the_nodes_on_the_page(panel):
    import html
    import json
    import re

    page = fetch(panel.url).decode()
    legend = json.loads(html.unescape(re.search(r'name="workbench-legend" content="([^"]*)"', page).group(1)))
    shown = onnx.ModelProto.FromString(fetch(panel.url + "data/focused.onnx")).graph.node
    assert sum(count for _, _, count in legend) <= len(shown)
