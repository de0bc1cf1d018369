import numpy as np
from inline_models import parse_model
from onnx import TensorProto

from workbench.io.model import load_model
from workbench.ir.graph import GraphIndex, topological_order


def index_of(text, **inits):
    model = load_model(parse_model(text, **inits))
    return GraphIndex(model.graph, list(model.proto.opset_import))


def test_constants_include_cast_and_reshaped_copies_of_constants():
    index = index_of(
        """
        g (float[2] x) => (float[2] y) {
            c = Constant <value = float {3.0}> ()
            cc = Cast <to = 1> (c)
            y = Mul(x, cc)
        }
        """
    )
    assert index.is_constant("c") and index.is_constant("cc")
    assert not index.is_constant("x") and not index.is_constant("y")


def test_topological_order_repairs_an_unsorted_file():
    model = parse_model("g (float[2] x) => (float[2] y) { a = Neg(x)\n y = Abs(a) }")
    model.graph.node.reverse()
    assert [n.op_type for n in topological_order(model.graph)] == ["Neg", "Abs"]


def test_element_types_come_from_shape_inference_without_the_weights():
    index = index_of("g (float[2,3] x) => (float[2,4] y) { y = MatMul(x, w) }", w=np.zeros((3, 4), np.float32))
    assert index.elem_types["y"] == TensorProto.FLOAT


def test_subgraph_outer_scope_reads_count_as_consumers():
    index = index_of(
        """
        g (bool c, float[2] x) => (float[2] y) {
            y = If(c) <
                then_branch = t () => (float[2] o) { o = Neg(x) },
                else_branch = e () => (float[2] o) { o = Abs(x) }
            >
        }
        """
    )
    assert [n.op_type for n in index.consumers["x"]] == ["If"]


def test_a_cycle_is_a_workbench_error():
    import pytest
    from onnx import helper

    from workbench.errors import WorkbenchError

    nodes = [helper.make_node("Add", ["x", "b"], ["a"], name="add"), helper.make_node("Relu", ["a"], ["b"], name="relu")]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [4])],
                              [helper.make_tensor_value_info("b", TensorProto.FLOAT, [4])])
    with pytest.raises(WorkbenchError, match="cycle through node 'add'"):
        topological_order(graph)


def test_prefetch_decodes_every_initializer_and_keeps_errors_for_the_reader(tmp_path, monkeypatch):
    import threading

    import onnx

    from workbench.io.model import load_model
    from workbench.ir.graph import GraphIndex

    weights = np.arange(6, dtype=np.float32).reshape(2, 3)
    proto = parse_model("g (float[3,2] x) => (float[3,3] y) { y = MatMul(x, w) }", w=weights)
    index = GraphIndex(proto.graph, list(proto.opset_import))
    index.prefetch_initializers().join(timeout=10)
    assert np.array_equal(index.arrays["w"], weights)
    path = tmp_path / "m.onnx"
    onnx.save_model(proto, str(path), save_as_external_data=True, location="w.bin", size_threshold=0)
    model = load_model(path)
    (tmp_path / "w.bin").unlink()  # gone after loading: the background thread fails, silently
    escaped = []
    monkeypatch.setattr(threading, "excepthook", escaped.append)  # where a thread's traceback would go
    GraphIndex.of(model).prefetch_initializers().join(timeout=10)
    assert escaped == []
