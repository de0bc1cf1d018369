"""Role badges: roots, victims and harmless findings, in the node list and the inspector's heading."""

from workbench.ui import Workbench
from workbench.ui.roles import HARMLESS, ROOT, VICTIM, badge_html, node_roles


def test_roots_victims_and_clean_nodes_of_the_mask_model(diagnosis_of):
    diagnosis = diagnosis_of("legacy_mask_bert")
    roles = node_roles(diagnosis)
    assert roles["mask_scale"] == ROOT
    assert roles["node_Softmax_98"] == VICTIM  # NaN out, yet correct when fed FP32 inputs
    wrong = {c.node for c in diagnosis.nodes if c.worst is not None and not c.worst.ok}
    assert {n for n, r in roles.items() if r == VICTIM} == wrong - {"mask_scale"}
    assert list(roles) == [c.node for c in diagnosis.nodes]


def test_a_harmless_fault_is_grey_not_a_root(diagnosis_of):
    roles = node_roles(diagnosis_of("gelu_tanh_saturation"))
    assert roles["gelu_pow"] == HARMLESS and ROOT not in roles.values()
    assert "#8c959f" in badge_html(HARMLESS) and badge_html("clean") == ""


def test_the_node_list_carries_each_nodes_role(diagnosis_of):
    bench = Workbench.from_diagnosis(diagnosis_of("legacy_mask_bert"))
    items = {name: role for name, _, role in bench.inspector.node_list.items}
    assert items["mask_scale"] == ROOT and items["node_Softmax_98"] == VICTIM
    assert bench.inspector.node_list.colours[ROOT] == "#cf222e"
    bench.inspector.node_list.value = "node_Softmax_98"
    assert "VICTIM" in bench.inspector.detail.value


def test_a_node_picked_elsewhere_is_the_lists_selection(diagnosis_of):
    bench = Workbench.from_diagnosis(diagnosis_of("legacy_mask_bert"))
    bench.graph.picker.node = "node_Softmax_98"  # a click in Netron
    assert bench.inspector.node_list.value == "node_Softmax_98"
