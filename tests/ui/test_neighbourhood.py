import onnx

from workbench.io.model import load_model
from workbench.ui.neighbourhood import ROOT_NOTE, neighbourhood


def test_neighbourhood_keeps_nearby_nodes_and_notes_the_root(sample):
    path, _ = sample("legacy_mask_bert")
    model = load_model(path).proto
    focused = neighbourhood(model, "mask_scale", radius=1, notes={"mask_scale": ROOT_NOTE})
    nodes = {node.name: node for node in focused.graph.node}
    assert "mask_scale" in nodes and nodes["mask_scale"].doc_string == ROOT_NOTE
    assert len(nodes) < len(model.graph.node) / 4
    assert any(node.op_type == "Add" for node in nodes.values())  # the attention-score Add it feeds
    produced = {out for node in focused.graph.node for out in node.output}
    known = produced | {i.name for i in focused.graph.input} | {t.name for t in focused.graph.initializer}
    assert all(name in known for node in focused.graph.node for name in node.input if name)
    assert focused.graph.output
    onnx.ModelProto.FromString(focused.SerializeToString())


def test_neighbourhood_grows_with_radius(sample):
    model = load_model(sample("legacy_mask_bert")[0]).proto
    sizes = [len(neighbourhood(model, "mask_scale", radius=r).graph.node) for r in (1, 2, 3)]
    assert sizes == sorted(sizes) and sizes[0] < sizes[2]
