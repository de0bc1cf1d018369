import numpy as np
from inline_models import parse_model

from workbench.engines.node_by_node import NodeRunner, downstream, replay
from workbench.io.model import load_model
from workbench.ir.graph import GraphIndex

SHIFT = """
g (float16[N] x) => (float16[N] y) {
    up = Add(x, c)
    y = Sub(up, c)
}
"""


def test_every_node_boundary_rounds_to_fp16():
    model = load_model(parse_model(SHIFT, c=np.float16(2048)))
    index = GraphIndex(model.graph, list(model.proto.opset_import))
    x = np.array([0.3, 1.2, -0.7], np.float16)
    values = replay(index, NodeRunner(model.proto.opset_import, model.proto.ir_version), {"x": x})
    assert values["y"].dtype == np.float16
    expected = (x + np.float16(2048)) - np.float16(2048)  # numpy rounds every float16 op
    assert np.array_equal(values["y"], expected) and not np.array_equal(expected, x)


def test_sessions_are_shared_between_nodes_of_the_same_signature():
    model = load_model(parse_model("g (float[N] x) => (float[N] y) { a = Neg(x)\n b = Neg(a)\n y = Neg(b) }"))
    index = GraphIndex(model.graph, list(model.proto.opset_import))
    runner = NodeRunner(model.proto.opset_import, model.proto.ir_version)
    replay(index, runner, {"x": np.ones(3, np.float32)})
    replay(index, runner, {"x": np.ones(7, np.float32)})  # another shape, same sessions
    assert runner.runs == 6 and runner.sessions_built == 1


def test_downstream_follows_consumers_only():
    model = load_model(parse_model("g (float[N] x) => (float[N] y, float[N] z) { a = Neg(x)\n y = Abs(a)\n z = Neg(x) }"))
    index = GraphIndex(model.graph, [])
    assert [n.output[0] for n in downstream(index, ["a"])] == ["y"]


def test_a_sequence_valued_node_is_a_clear_error_not_a_crash():
    import pytest

    from workbench.errors import WorkbenchError

    model = load_model(parse_model("g (float[4] x) => (float[4] y) { s = SequenceConstruct(x, x) y = SequenceAt(s, i) }",
                                   i=np.array(0, np.int64)))
    index = GraphIndex(model.graph, list(model.proto.opset_import))
    with pytest.raises(WorkbenchError, match="'SequenceConstruct_0' .* produces a sequence"):
        replay(index, NodeRunner(model.proto.opset_import, model.proto.ir_version), {"x": np.ones(4, np.float32)})


def test_an_op_version_without_kernel_suggests_the_version_converter():
    import onnx
    import pytest

    from workbench.engines.node_by_node import NodeFailure

    model = load_model(onnx.parser.parse_model('<ir_version: 3, opset_import: ["" : 6]> g (float[4] x) => (float[4] y) { y = Add(x, x) }'))
    index = GraphIndex(model.graph, list(model.proto.opset_import))
    with pytest.raises(NodeFailure, match="no kernel for this op at this opset.*version_converter"):
        replay(index, NodeRunner(model.proto.opset_import, model.proto.ir_version), {"x": np.ones(4, np.float32)})
