import numpy as np
import onnx
import pytest
from inline_models import parse_model

from workbench.errors import WorkbenchError
from workbench.io.model import file_digest, full_proto, load_model
from workbench.ir.graph import GraphIndex

ADD = """
g (float[N] x) => (float[N] y) {
    a = Add(x, x)
    y = Add(a, x)
}
"""


def test_unnamed_nodes_get_stable_unique_names():
    model = load_model(parse_model(ADD))
    assert [n.name for n in model.graph.node] == ["Add_0", "Add_1"]
    assert [n.name for n in load_model(parse_model(ADD)).graph.node] == ["Add_0", "Add_1"]


def test_duplicate_names_are_made_unique():
    proto = parse_model(ADD)
    for node in proto.graph.node:
        node.name = "same"
    assert [n.name for n in load_model(proto).graph.node] == ["same", "same__2"]


def test_a_model_proto_passed_in_is_not_modified():
    proto = parse_model(ADD)
    before = proto.SerializeToString()
    load_model(proto)
    assert proto.SerializeToString() == before


@pytest.mark.parametrize(
    "content, message",
    [
        (None, "no such file"),
        (b"", "is empty"),
        (b"\x89PNG\r\n\x1a\n not a model at all", "not a readable ONNX model"),
    ],
)
def test_unreadable_files_give_one_line_errors(tmp_path, content, message):
    path = tmp_path / "model.onnx"
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(WorkbenchError, match=message) as caught:
        load_model(path)
    assert "\n" not in str(caught.value)


def test_truncated_file_is_reported(tmp_path, sample):
    path, _ = sample("legacy_mask_bert")
    data = path.read_bytes()
    truncated = tmp_path / "truncated.onnx"
    truncated.write_bytes(data[: len(data) // 2])
    with pytest.raises(WorkbenchError, match="truncated"):
        load_model(truncated)


def test_directory_instead_of_file(tmp_path):
    with pytest.raises(WorkbenchError, match="is a directory"):
        load_model(tmp_path)


def test_missing_external_data_names_the_file(tmp_path):
    proto = parse_model(
        "g (float[4] x) => (float[4] y) { y = Add(x, w) }", w=np.arange(4, dtype=np.float32)
    )
    path = tmp_path / "model.onnx"
    onnx.save_model(proto, str(path), save_as_external_data=True, location="weights.bin", size_threshold=0)
    (tmp_path / "weights.bin").unlink()
    with pytest.raises(WorkbenchError, match="external data file 'weights.bin'"):
        load_model(path)


def test_external_data_is_loaded_and_left_alone(tmp_path):
    weights = np.arange(4, dtype=np.float32)
    proto = parse_model("g (float[4] x) => (float[4] y) { y = Add(x, w) }", w=weights)
    path = tmp_path / "model.onnx"
    onnx.save_model(proto, str(path), save_as_external_data=True, location="weights.bin", size_threshold=0)
    digests = file_digest(path), file_digest(tmp_path / "weights.bin")
    model = load_model(path)
    # The weights stay in their file: memory-mapped when read, never copied into the proto.
    assert model.graph.initializer[0].data_location == onnx.TensorProto.EXTERNAL
    values = GraphIndex.of(model).initializer_array("w")
    assert isinstance(values, np.memmap) and np.array_equal(values, weights)
    assert np.array_equal(onnx.numpy_helper.to_array(full_proto(model).graph.initializer[0]), weights)
    assert (file_digest(path), file_digest(tmp_path / "weights.bin")) == digests


def test_external_data_model_is_diagnosed_fixed_and_saved_whole(tmp_path):
    import workbench

    weights = np.full(4, 1e-12, np.float32)  # an eps per feature: 0 in FP16
    proto = parse_model("g (float[4] x) => (float[4] y) { s = Add(x, w)\n y = Div(x, s) }", w=weights)
    path = tmp_path / "model.onnx"
    onnx.save_model(proto, str(path), save_as_external_data=True, location="weights.bin", size_threshold=0)
    feed = {"x": np.array([0, 1, 2, 3], np.float32)}
    report = workbench.diagnose(path, inputs=feed)
    assert report.verdict == "nonfinite" and report.roots[0].kind == "constant_underflow"
    fixed = workbench.auto_fix(report)
    saved = fixed.save(tmp_path / "fixed.onnx")
    assert fixed.ok and not any(t.data_location == onnx.TensorProto.EXTERNAL for t in onnx.load(saved).graph.initializer)


def test_truncated_external_data_is_one_line(tmp_path):
    proto = parse_model("g (float[4] x) => (float[4] y) { y = Add(x, w) }", w=np.arange(4, dtype=np.float32))
    path = tmp_path / "model.onnx"
    onnx.save_model(proto, str(path), save_as_external_data=True, location="weights.bin", size_threshold=0)
    (tmp_path / "weights.bin").write_bytes(b"\0" * 8)
    with pytest.raises(WorkbenchError, match="ends before tensor 'w'.*truncated"):
        load_model(path)


def test_opset_newer_than_supported(tmp_path):
    proto = parse_model(ADD)
    proto.opset_import[0].version = 99
    with pytest.raises(WorkbenchError, match="opset 99"):
        load_model(proto)


def test_an_output_listed_twice_or_a_tensor_written_twice_is_refused():
    twice = parse_model(ADD)
    twice.graph.output.append(twice.graph.output[0])
    with pytest.raises(WorkbenchError, match="graph output 'y' is listed twice"):
        load_model(twice)
    rewritten = parse_model(ADD)
    rewritten.graph.node[0].output[0] = "y"
    with pytest.raises(WorkbenchError, match="tensor 'y' is produced by node 0 .Add. and again by node 1"):
        load_model(rewritten)


def test_a_proto_whose_weights_are_still_external_is_refused(tmp_path):
    proto = parse_model("g (float[4] x) => (float[4] y) { y = Add(x, w) }", w=np.ones(4, np.float32))
    onnx.save_model(proto, str(tmp_path / "m.onnx"), save_as_external_data=True, location="m.data", size_threshold=0)
    with pytest.raises(WorkbenchError, match="tensor 'w' .* external file"):
        load_model(onnx.load(str(tmp_path / "m.onnx"), load_external_data=False))
