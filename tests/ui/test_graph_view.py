"""The Netron panel and its local server, fetched over HTTP (no browser)."""

import urllib.error
import urllib.request

import onnx
import pytest

from workbench.ui.graph_view import GraphPanel
from workbench.ui.neighbourhood import ROOT_NOTE
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
    assert panel.url is None and panel.frame.value == ""
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
