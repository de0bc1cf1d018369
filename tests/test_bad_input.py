"""The bad-input catalogue (issue 6, item 4): each case is one line on stderr, exit code 2, files untouched.

tests/test_cli.py already covers (in subprocesses) a missing file, a zip that is not ONNX, a truncated
file, wrong feed names/dtype/rank, a missing inputs file, unknown nodes and fixes, overwriting the input,
a bad option, a missing CUDA provider and missing external data: 17 cases. These are the others, run
in-process through `workbench.cli.main` (the same code path, without a Python start-up per case).
"""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from inline_models import parse_model
from onnx import TensorProto, helper

from workbench.cli import main
from workbench.io.model import MAX_SUPPORTED_OPSET, file_digest

EXP = "g (float[2,4] x) => (float[2,4] y) { a = Exp(x) y = Add(a, x) }"
GOOD_FEED = {"x": np.ones((2, 4), np.float32)}


def _save(path, model: onnx.ModelProto):
    onnx.save(model, str(path))
    return path


def _cycle_model() -> onnx.ModelProto:
    """a = Add(x, b), b = Relu(a): each node waits for the other."""
    nodes = [helper.make_node("Add", ["x", "b"], ["a"], name="add"), helper.make_node("Relu", ["a"], ["b"], name="relu")]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [4])],
                              [helper.make_tensor_value_info("b", TensorProto.FLOAT, [4])])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)


def _opset(model: onnx.ModelProto, version: int) -> onnx.ModelProto:
    model.opset_import[0].version = version
    return model


def _duplicate_output(model: onnx.ModelProto) -> onnx.ModelProto:
    model.graph.output.append(model.graph.output[0])
    return model


def _two_producers(model: onnx.ModelProto) -> onnx.ModelProto:
    model.graph.node[0].output[0] = "y"  # Exp and Add both write y
    return model


def _npz(path, **arrays):
    np.savez(path, **arrays)
    return path


def _cases(tmp_path) -> dict[str, tuple[list, str]]:
    """case -> (command line, what the one-line message must say)."""
    good = _save(tmp_path / "good.onnx", parse_model(EXP))
    (tmp_path / "png.onnx").write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR")
    (tmp_path / "empty.onnx").write_bytes(b"")
    (tmp_path / "a_dir.onnx").mkdir()
    (tmp_path / "garbage.npz").write_bytes(b"not a zip at all")
    return {
        "wrong magic (a PNG)": ([tmp_path / "png.onnx"], "not a readable ONNX model"),
        "empty file": ([tmp_path / "empty.onnx"], "is empty"),
        "directory as model": ([tmp_path / "a_dir.onnx"], "is a directory"),
        "opset newer than supported": ([_save(tmp_path / "new.onnx", _opset(parse_model(EXP), MAX_SUPPORTED_OPSET + 1))],
                                       "newer than"),
        "graph with a cycle": ([_save(tmp_path / "cycle.onnx", _cycle_model())], "cycle"),
        "graph output listed twice": ([_save(tmp_path / "dup_out.onnx", _duplicate_output(parse_model(EXP)))], "twice"),
        "tensor with two producers": ([_save(tmp_path / "two.onnx", _two_producers(parse_model(EXP)))], "produced by"),
        "no float tensors": ([_save(tmp_path / "ints.onnx", parse_model("g (int64[4] x) => (int64[4] y) { y = Add(x, x) }")),
                              "--inputs", _npz(tmp_path / "ints.npz", x=np.arange(4))], "no floating-point tensors"),
        "already FP16": ([_save(tmp_path / "half.onnx", parse_model("g (float16[4] x) => (float16[4] y) { y = Exp(x) }")),
                          "--inputs", _npz(tmp_path / "half.npz", x=np.ones(4, np.float16))], "already in FP16"),
        "NaN in the feed": ([good, "--inputs", _npz(tmp_path / "nan.npz", x=np.full((2, 4), np.nan, np.float32))], "NaN"),
        "inf in the feed": ([good, "--inputs", _npz(tmp_path / "inf.npz", x=np.full((2, 4), np.inf, np.float32))], "inf"),
        "feed with an extra input": ([good, "--inputs", _npz(tmp_path / "extra.npz", z=np.ones(1), **GOOD_FEED)],
                                     "unknown 'z'"),
        "wrong size on a fixed axis": ([good, "--inputs", _npz(tmp_path / "dim.npz", x=np.ones((2, 5), np.float32))],
                                       "size 4 on axis 1"),
        "unreadable npz": ([good, "--inputs", tmp_path / "garbage.npz"], "not a readable .npz"),
        "npz holding a pickled object": ([good, "--inputs", _npz(tmp_path / "obj.npz", x=np.array([{}], dtype=object))],
                                         "not a readable .npz"),
    }


CASES = [
    "wrong magic (a PNG)", "empty file", "directory as model", "opset newer than supported",
    "graph with a cycle", "graph output listed twice", "tensor with two producers",
    "no float tensors", "already FP16", "NaN in the feed", "inf in the feed",
    "feed with an extra input", "wrong size on a fixed axis", "unreadable npz", "npz holding a pickled object",
]


def _digests(directory) -> dict:
    return {p.name: file_digest(p) for p in sorted(directory.iterdir()) if p.is_file()}


@pytest.mark.parametrize("case", CASES)
def test_bad_input_is_one_line_exit_2_and_files_unchanged(tmp_path, capsys, case):
    args, message = _cases(tmp_path)[case]
    before = _digests(tmp_path)
    capsys.readouterr()
    code = main(["diagnose", *map(str, args), "--precision", "fp16", "--json"])
    captured = capsys.readouterr()
    assert code == 2, captured.err
    assert captured.err.startswith("workbench: error: ") and captured.err.count("\n") == 1, captured.err
    assert message in captured.err and "Traceback" not in captured.err, captured.err
    assert captured.out == ""
    assert _digests(tmp_path) == before
