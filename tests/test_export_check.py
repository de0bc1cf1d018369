"""Export check on real torch exports: sizes baked from the dummy input are found, named and explained."""

from __future__ import annotations

import argparse
import json
import subprocess
import sys

import numpy as np
import pytest
from onnx import TensorProto, helper, numpy_helper

from workbench.errors import WorkbenchError
from workbench.variants import export_check as ec

torch = pytest.importorskip("torch")


@pytest.fixture(scope="module")
def legacy_fixed():
    return ec.export_and_check(ec.fixed_view_module(), ec.float_feed(), exporter="legacy")


def test_legacy_export_bakes_the_dummy_sizes_into_the_reshape(legacy_fixed):
    check = legacy_fixed
    assert not check.ok and check.verdict == "baked_shape"
    assert check.dummy == {"batch": 2, "sequence": 34}
    # ONNX Runtime fails at every shape but the dummy's, and names the Reshape
    assert [r.node for r in check.runs] == ["/Reshape"] * 3
    assert "requested shape:{2,34,4,8}" in check.runs[0].error
    (baked,) = check.baked
    assert baked.node == "/Reshape" and baked.op_type == "Reshape" and baked.confirmed
    assert baked.values == (2, 34, 4, 8) and dict(baked.sizes) == {"batch": 2, "sequence": 34}
    text = baked.explanation()
    assert "exported with a fixed batch size 2 and length 34: Reshape `/Reshape`" in text
    assert "fails for (batch 1, length 8)" in text and "Input shape:{1,8,32}" in text
    assert "BAKED" in check.summary()
    data = json.loads(json.dumps(check.to_dict()))
    assert data["verdict"] == "baked_shape" and data["runs"][0]["rel_l2"]["output_0"] is None


def test_a_fixed_batch_runs_elsewhere_and_returns_a_wrong_shape():
    check = ec.export_and_check(ec.fixed_view_module(fixed_length=False), ec.float_feed(), exporter="legacy")
    first, same_batch, _ = check.runs
    assert not first.error and first.shapes["output_0"] == ((2, 4, 4, 8), (1, 4, 8, 8)) and not first.ok
    assert same_batch.ok and same_batch.rel_l2["output_0"] < 1e-6  # batch 2 as the dummy: right
    (baked,) = check.baked
    assert dict(baked.sizes) == {"batch": 2} and baked.values == (2, -1, 4, 8)
    assert "runs but returns output_0 [2, 4, 4, 8] instead of [1, 4, 8, 8]" in baked.explanation()


def test_dynamo_export_fixes_the_input_and_the_reshape():
    check = ec.export_and_check(ec.fixed_view_module(), ec.float_feed(), exporter="dynamo")
    assert check.verdict == "baked_shape"
    assert all(run.input == "x" and "invalid dimensions for input: x" in run.error for run in check.runs)
    kinds = {b.op_type: b for b in check.baked}
    assert set(kinds) == {"input", "Reshape"}
    assert kinds["input"].values == (2, 34, 32)
    assert "input `x` has the fixed shape [2, 34, 32]" in kinds["input"].explanation()
    assert kinds["Reshape"].values == (2, 34, 4, 8)


@pytest.mark.parametrize("exporter", ["legacy", "dynamo"])
def test_a_correct_module_matches_pytorch_at_every_shape(exporter):
    check = ec.export_and_check(ec.dynamic_view_module(), ec.float_feed(), exporter=exporter)
    assert check.ok and check.verdict == "ok" and not check.baked
    assert [(r.batch, r.sequence) for r in check.runs] == list(ec.DEFAULT_SHAPES)
    for run in check.runs:
        (value,) = run.rel_l2.values()
        assert value < 1e-6
        (shapes,) = run.shapes.values()
        assert shapes[0] == shapes[1] == (run.batch, 4, run.sequence, 8)


def test_a_constant_that_only_equals_the_dummy_size_is_cleared():
    # 2 heads with a dummy batch of 2: the head count in the Reshape's shape is the same number, not a baked size
    check = ec.export_and_check(ec.dynamic_view_module(heads=2), ec.float_feed(), exporter="legacy")
    assert check.ok and not check.baked
    assert check.suspects and all(not s.confirmed for s in check.suspects)
    assert "likely a coincidence" in check.suspects[0].explanation()


@pytest.mark.slow
def test_tiny_bert_exports_with_dynamic_axes(tmp_path):
    from sample_models import build

    module = build._mask_wrapper(build._tiny_bert(), legacy=False)
    ids = np.random.default_rng(1).integers(1, 100, size=(2, 34), dtype=np.int64)
    feed = {"input_ids": ids, "attention_mask": np.ones((2, 34), np.int64)}
    path = tmp_path / "tiny_bert.onnx"
    proto = ec.export(module, feed, path, output_names=["last_hidden_state"])
    assert path.is_file() and [o.name for o in proto.graph.output] == ["last_hidden_state"]
    check = ec.check_export(module, path, feed, shapes=[(1, 8), (2, 16), (3, 34), (1, 20)])
    assert check.ok and not check.baked, check.summary()
    assert all(run.rel_l2["last_hidden_state"] < 1e-5 for run in check.runs)


def test_a_shape_pytorch_itself_cannot_take_is_skipped():
    # as a BERT past its max_position_embeddings: PyTorch fails too, so that shape says nothing about the export
    module = ec.dynamic_view_module(hidden=32, heads=4)
    bad = {"x": np.zeros((2, 34, 32), np.float32)}
    proto = ec.export(module, bad, exporter="legacy")

    class Picky(torch.nn.Module):  # the same module, refusing lengths above 40
        def __init__(self):
            super().__init__()
            self.inner = module

        def forward(self, x):
            if x.shape[1] > 40:
                raise ValueError("sequence too long")
            return self.inner(x)

    check = ec.check_export(Picky(), proto, bad, shapes=[(1, 8), (1, 80)])
    assert check.ok and check.runs[1].skipped.startswith("PyTorch itself fails")
    assert "skipped" in check.summary() and check.to_dict()["runs"][1]["skipped"]


def test_find_baked_shapes_reads_constants_and_concats_without_torch():
    shape = numpy_helper.from_array(np.array([2, 34, 4, 8], np.int64), "shape")
    heads = numpy_helper.from_array(np.array([4, 8], np.int64), "heads")
    nodes = [
        helper.make_node("Reshape", ["x", "shape"], ["a"], name="fixed"),
        helper.make_node("Shape", ["x"], ["xs"], name="shape_of", end=2),
        helper.make_node("Concat", ["xs", "heads"], ["dyn"], name="cat", axis=0),
        helper.make_node("Reshape", ["x", "dyn"], ["b"], name="dynamic"),
    ]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["b", "s", 32])],
                              [helper.make_tensor_value_info(n, TensorProto.FLOAT, None) for n in ("a", "b")],
                              [shape, heads])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    found = ec.find_baked_shapes(model, {"x": np.zeros((2, 34, 32), np.float32)})
    assert [(b.node, b.constant, dict(b.sizes)) for b in found] == [("fixed", "shape", {"batch": 2, "sequence": 34})]
    assert ec.fixed_inputs(model, {"x": np.zeros((2, 34, 32), np.float32)}) == []


def test_ort_errors_are_parsed_to_the_node():
    message = ("[ONNXRuntimeError] : 6 : RUNTIME_EXCEPTION : Non-zero status code returned while running Reshape node. "
               "Name:'Reshape_138' Status Message: /onnxruntime_src/onnxruntime/core/providers/cpu/tensor/reshape_helper.h:41 "
               "onnxruntime::ReshapeHelper::ReshapeHelper(const onnxruntime::TensorShape&, std::vector<long int>&, bool) "
               "gsl::narrow_cast<int64_t>(input_shape.Size()) == size was false. The input tensor cannot be reshaped to "
               "the requested shape. Input shape:{1,34,1024}, requested shape:{2,8,16,64}")
    detail, node, bad_input = ec.parse_ort_error(RuntimeError(message))
    assert node == "Reshape_138" and bad_input == ""
    assert detail == "cannot reshape: Input shape:{1,34,1024}, requested shape:{2,8,16,64}"


def test_bad_input_is_one_clear_error():
    with pytest.raises(WorkbenchError, match="BATCHxSEQUENCE"):
        ec.parse_shapes("2x")
    with pytest.raises(WorkbenchError, match="at least 1"):
        ec.parse_shapes("0x8")
    with pytest.raises(WorkbenchError, match="empty"):
        ec.export(ec.dynamic_view_module(), {})
    with pytest.raises(WorkbenchError, match="exporter"):
        ec.export(ec.dynamic_view_module(), ec.float_feed(), exporter="tracing")
    proto = ec.export(ec.dynamic_view_module(), ec.float_feed(), exporter="legacy")
    with pytest.raises(WorkbenchError, match="input 'x'"):
        ec.check_export(ec.dynamic_view_module(), proto, {"y": np.zeros((2, 3), np.float32)})
    with pytest.raises(WorkbenchError, match="torch.onnx.export"):
        ec.export(ec.dynamic_view_module(), {"x": np.zeros((2, 34, 7), np.float32)}, exporter="legacy")


def _cli(argv):
    parser = argparse.ArgumentParser()
    ec.add_cli(parser.add_subparsers(dest="command"))
    args = parser.parse_args(argv)
    return args.handler(args)


def test_cli_export_check_json(capsys, tmp_path):
    out = tmp_path / "fixed.onnx"
    assert _cli(["export-check", "demo-fixed-view", "--exporter", "legacy", "--shapes", "1x20,2x34", "-o", str(out), "--json"]) == 1
    data = json.loads(capsys.readouterr().out)
    assert data["verdict"] == "baked_shape" and out.is_file()
    assert [(r["batch"], r["sequence"], r["ok"]) for r in data["runs"]] == [(1, 20, False), (2, 34, True)]
    assert data["baked"][0]["node"] == "/Reshape" and "fails for (batch 1, length 20)" in data["baked"][0]["explanation"]
    with pytest.raises(WorkbenchError, match="--module"):
        _cli(["export-check", str(out)])


@pytest.mark.slow
def test_cli_export_of_minilm(capsys, tmp_path):
    from sample_models import build

    parser = argparse.ArgumentParser()
    ec.add_cli(parser.add_subparsers(dest="command"))
    out = tmp_path / "minilm.onnx"
    args = parser.parse_args(["export", str(build._minilm_dir()), "-o", str(out), "--shapes", "1x8,3x20", "--json"])
    assert args.handler(args) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["ok"] and data["output_path"] == str(out) and out.is_file()
    assert all(run["rel_l2"]["last_hidden_state"] < 1e-5 for run in data["runs"])
    with pytest.raises(WorkbenchError, match="config.json"):
        args.handler(parser.parse_args(["export", str(tmp_path), "-o", str(out)]))
    with pytest.raises(WorkbenchError, match="one BATCHxSEQUENCE"):
        args.handler(parser.parse_args(["export", str(tmp_path), "-o", str(out), "--dummy", "1x8,2x8"]))


def test_the_module_imports_without_torch():
    code = "import sys, workbench.variants.export_check, workbench.variants.speed; print('torch' in sys.modules, 'transformers' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "False False"
