"""Reading an .onnx file with its weights left in place: memory-mapped, and the same model as onnx.load's."""

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from google.protobuf.message import DecodeError
from inline_models import parse_model
from onnx import numpy_helper

from workbench.errors import WorkbenchError
from workbench.io.model import file_digest, load_model
from workbench.io.wire import MIN_MAPPED_BYTES, parse_model_file
from workbench.ir.graph import GraphIndex


@pytest.fixture
def saved(tmp_path):
    rng = np.random.default_rng(0)
    proto = parse_model(
        "g (float[2,64] x) => (float[2,64] y) { h = MatMul(x, big)\n y = Add(h, bias) }",
        big=rng.standard_normal((64, 64)).astype(np.float32),  # 16 KiB: mapped
        bias=rng.standard_normal(64).astype(np.float32),  # 256 bytes: stays in the message
    )
    path = tmp_path / "model.onnx"
    onnx.save(proto, path)
    return path, proto


def test_large_weights_are_described_as_data_in_the_file_itself(saved):
    path, proto = saved
    parsed = parse_model_file(path)
    big, bias = parsed.graph.initializer
    assert big.data_location == onnx.TensorProto.EXTERNAL and not big.raw_data
    info = {e.key: e.value for e in big.external_data}
    assert info["location"] == "model.onnx" and int(info["length"]) == 64 * 64 * 4 >= MIN_MAPPED_BYTES
    stored = path.read_bytes()[int(info["offset"]):int(info["offset"]) + int(info["length"])]
    assert stored == proto.graph.initializer[0].raw_data
    assert bias.data_location != onnx.TensorProto.EXTERNAL and len(bias.raw_data) == 256
    assert [n.op_type for n in parsed.graph.node] == ["MatMul", "Add"] and parsed.opset_import == proto.opset_import


def test_the_weights_read_back_are_the_files_and_the_whole_model_runs(saved):
    path, proto = saved
    digest = file_digest(path)
    model = load_model(path)
    values = GraphIndex.of(model).initializer_array("big")
    assert isinstance(values, np.memmap)
    np.testing.assert_array_equal(values, numpy_helper.to_array(proto.graph.initializer[0]))
    x = np.ones((2, 64), np.float32)
    expected = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"x": x})
    whole = model.to_proto()
    got = ort.InferenceSession(whole.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"x": x})
    np.testing.assert_array_equal(got[0], expected[0])
    assert file_digest(path) == digest


@pytest.mark.parametrize("cut", [10, 200, -5])
def test_a_truncated_file_is_an_error_not_a_wrong_model(saved, tmp_path, cut):
    path, _ = saved
    data = path.read_bytes()
    broken = tmp_path / "broken.onnx"
    broken.write_bytes(data[:cut])
    with pytest.raises((ValueError, DecodeError)):
        parse_model_file(broken)
    with pytest.raises(WorkbenchError, match="not a readable ONNX model"):
        load_model(broken)
