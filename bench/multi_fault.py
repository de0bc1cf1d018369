"""A model with several independent FP16 faults, for the automatic-fix comparison (bench/autofix.py).

    .venv/bin/python bench/multi_fault.py bench/work    # -> multi_fault.onnx, multi_fault.npz

Eight blocks, each a decomposed LayerNorm (ReduceMean, Sub, Pow, ReduceMean, Add eps, Sqrt,
Div), a projection, and a scale by 300 (activations of a few hundred, as in the big-activation
channels of real transformers). Every block's Pow sees |x - mean| of several hundred in some rows
and overflows FP16: eight faults in different places, as in an old export whose LayerNorms were
all written out by hand. The output is the last block's normalised stream. Single-fault
samples need only a handful of runs in any search; this is where a search pays for its strategy.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

BLOCKS, WIDTH = 8, 32
NAME = "multi_fault"


def build() -> tuple[onnx.ModelProto, dict[str, np.ndarray]]:
    rng = np.random.default_rng(0)
    nodes = []
    inits = [numpy_helper.from_array(np.float32(v), n) for n, v in (("two", 2.0), ("eps", 1e-5), ("gain", 300.0))]
    stream = "x"
    for b in range(BLOCKS):
        p = f"b{b}_"
        inits.append(numpy_helper.from_array(rng.normal(0, WIDTH**-0.5, (WIDTH, WIDTH)).astype(np.float32), p + "w"))
        steps = [
            ("ReduceMean", [stream], "mean", {"axes": [-1], "keepdims": 1}),
            ("Sub", [stream, p + "mean"], "centered", {}),
            ("Pow", [p + "centered", "two"], "pow", {}),
            ("ReduceMean", [p + "pow"], "var", {"axes": [-1], "keepdims": 1}),
            ("Add", [p + "var", "eps"], "var_eps", {}),
            ("Sqrt", [p + "var_eps"], "std", {}),
            ("Div", [p + "centered", p + "std"], "norm", {}),
            ("MatMul", [p + "norm", p + "w"], "proj", {}),
            ("Mul", [p + "proj", "gain"], "out", {}),
        ]
        for op, inputs, out, attrs in steps:
            nodes.append(helper.make_node(op, inputs, [p + out], name=p + out, **attrs))
        stream = p + "out"
    nodes.append(helper.make_node("Identity", [f"b{BLOCKS - 1}_norm"], ["y"], name="output"))
    graph = helper.make_graph(
        nodes, NAME,
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["rows", WIDTH])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["rows", WIDTH])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    onnx.checker.check_model(model, full_check=True)
    x = np.random.default_rng(1).normal(size=(16, WIDTH)).astype(np.float32)
    x[3] *= 500.0  # outlier rows: (x - mean)**2 reaches about 10**6 > 65504
    x[11, 7] = 900.0
    return model, {"x": x}


def write(out_dir: Path) -> tuple[Path, Path]:
    model, feed = build()
    out_dir.mkdir(parents=True, exist_ok=True)
    onnx.save(model, out_dir / f"{NAME}.onnx")
    np.savez(out_dir / f"{NAME}.npz", **feed)
    return out_dir / f"{NAME}.onnx", out_dir / f"{NAME}.npz"


if __name__ == "__main__":
    print(*write(Path(sys.argv[1])))
