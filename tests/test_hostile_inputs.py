"""Hostile and careless inputs (issue 23): nothing read or written where it should not be.

Each case runs the command line in this process and checks one line on stderr, exit 2, and that no
file in the test's folders changed. Every case here failed before the fix it names.
"""

from __future__ import annotations

import os

import numpy as np
import onnx
import pytest
from cli_in_process import run_cli
from onnx import TensorProto, helper, numpy_helper

from workbench.io.model import file_digest

SECRET = b"not weights: a file of the user's that no model may read\n" * 64


def _matmul_model(weights: np.ndarray) -> onnx.ModelProto:
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["y"], name="mm")], "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 16])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 16])],
        [numpy_helper.from_array(weights, "w")],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)


def _external_model(folder, location: str) -> os.PathLike:
    """A model whose weight `w` (16x16 float32, 1024 bytes) says its bytes are in `location`."""
    model = _matmul_model(np.zeros((16, 16), np.float32))
    tensor = model.graph.initializer[0]
    tensor.ClearField("raw_data")
    tensor.data_location = TensorProto.EXTERNAL
    for key, value in (("location", location), ("offset", "0"), ("length", "1024")):
        entry = tensor.external_data.add()
        entry.key, entry.value = key, value
    path = folder / "hostile.onnx"
    onnx.save(model, str(path))
    return path


def _digests(*folders) -> dict:
    return {str(p): file_digest(p) for folder in folders for p in sorted(folder.rglob("*")) if p.is_file()}


def _one_line_error(code, out, err, *words):
    assert code == 2, err
    assert err.startswith("workbench: error: ") and err.count("\n") == 1, err
    assert "Traceback" not in err and out == "", (out, err)
    for word in words:
        assert word in err, err


@pytest.fixture
def secret(tmp_path):
    """A file outside the model's folder, and the model's folder."""
    outside = tmp_path / "home"
    outside.mkdir()
    (outside / "id_rsa").write_bytes(SECRET)
    models = tmp_path / "models" / "deep"
    models.mkdir(parents=True)
    return outside / "id_rsa", models


@pytest.mark.parametrize("how", ["relative ../", "absolute path", "symlink out of the folder"])
@pytest.mark.parametrize("command", ["diagnose", "convert"])
def test_external_data_outside_the_model_folder_is_refused(secret, tmp_path, capsys, how, command):
    secret_file, models = secret
    if how == "relative ../":
        location = os.path.relpath(secret_file, models)
    elif how == "absolute path":
        location = str(secret_file)
    else:
        (models / "weights.bin").symlink_to(secret_file)
        location = "weights.bin"
    path = _external_model(models, location)
    before = _digests(tmp_path)
    argv = [command, path] + (["-o", models / "out.onnx"] if command == "convert" else [])
    code, out, err = run_cli(argv, capsys)
    _one_line_error(code, out, err, "outside the model's folder", "'w'")
    assert _digests(tmp_path) == before
    assert not (models / "out.onnx").exists()


def test_a_symlink_inside_the_folder_to_a_file_inside_it_is_read(tmp_path, capsys):
    weights = np.arange(256, dtype=np.float32).reshape(16, 16) / 256
    model = _matmul_model(weights)
    onnx.save(model, str(tmp_path / "m.onnx"), save_as_external_data=True, location="real.data", size_threshold=0)
    (tmp_path / "sub").mkdir()
    os.replace(tmp_path / "real.data", tmp_path / "sub" / "real.data")
    (tmp_path / "link.data").symlink_to(tmp_path / "sub" / "real.data")
    proto = onnx.load(str(tmp_path / "m.onnx"), load_external_data=False)
    for entry in proto.graph.initializer[0].external_data:
        if entry.key == "location":
            entry.value = "link.data"
    onnx.save(proto, str(tmp_path / "m.onnx"))
    code, out, err = run_cli(["diagnose", tmp_path / "m.onnx", "--json"], capsys)
    assert code == 0, err


def _external_weights_model(folder):
    model = _matmul_model(np.ones((16, 16), np.float32))
    path = folder / "m.onnx"
    onnx.save(model, str(path), save_as_external_data=True, location="m.weights", size_threshold=0)
    return path


@pytest.mark.parametrize("command", ["convert", "fix", "quantize", "optimize"])
def test_output_onto_the_models_own_weights_is_refused(tmp_path, capsys, command):
    path = _external_weights_model(tmp_path)
    before = _digests(tmp_path)
    code, out, err = run_cli([command, path, "-o", tmp_path / "m.weights"], capsys)
    _one_line_error(code, out, err, "refusing to overwrite", "m.weights")
    assert _digests(tmp_path) == before


@pytest.mark.parametrize("command", ["convert", "fix"])
def test_output_onto_a_hard_link_or_symlink_of_the_input_is_refused(tmp_path, capsys, command):
    path = _external_weights_model(tmp_path)
    os.link(path, tmp_path / "hard.onnx")
    (tmp_path / "soft.onnx").symlink_to(path)
    before = _digests(tmp_path)
    for alias in ("hard.onnx", "soft.onnx"):
        code, out, err = run_cli([command, path, "-o", tmp_path / alias], capsys)
        _one_line_error(code, out, err, "refusing to overwrite", "input model")
    assert _digests(tmp_path) == before


def test_fix_output_onto_its_own_feed_is_refused(tmp_path, capsys):
    path = _external_weights_model(tmp_path)
    np.savez(tmp_path / "f.npz", x=np.ones((1, 16), np.float32))
    before = _digests(tmp_path)
    code, out, err = run_cli(["fix", path, "--inputs", tmp_path / "f.npz", "-o", tmp_path / "f.npz"], capsys)
    _one_line_error(code, out, err, "refusing to overwrite", "inputs file")
    assert _digests(tmp_path) == before


def test_output_onto_a_folder_or_into_a_read_only_folder_is_one_line(tmp_path, capsys):
    path = _external_weights_model(tmp_path)
    (tmp_path / "folder.onnx").mkdir()
    code, out, err = run_cli(["convert", path, "-o", tmp_path / "folder.onnx"], capsys)
    _one_line_error(code, out, err, "is a folder")
    # /proc refuses new files to everyone, root included (a chmod-ed folder does not stop root)
    code, out, err = run_cli(["convert", path, "-o", "/proc/out.onnx"], capsys)
    _one_line_error(code, out, err, "cannot write /proc/out.onnx")


def test_an_interrupted_write_leaves_no_half_file(tmp_path, monkeypatch):
    """The model is written beside the target and renamed: a write that dies leaves the old file as it was."""
    from workbench.io import save
    from workbench.io.model import load_model

    path = _external_weights_model(tmp_path)
    target = tmp_path / "out.onnx"
    target.write_bytes(b"the previous output")

    def dies_half_way(proto, where, **kwargs):
        with open(where, "wb") as handle:
            handle.write(proto.SerializeToString()[:10])
        raise KeyboardInterrupt

    monkeypatch.setattr(save.onnx, "save_model", dies_half_way)
    with pytest.raises(KeyboardInterrupt):
        save.save_model(load_model(path), target)
    assert target.read_bytes() == b"the previous output"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.onnx", "m.weights", "out.onnx"]
