"""A LLaMA-style decoder with random weights, written straight to ONNX with external data.

    .venv/bin/python bench/large_decoder.py bench/work/large 18     # 18 layers: 1.06 B parameters, 4.2 GB of weights

Hidden 2048, 16 heads, MLP 5632 (SiLU-gated), vocabulary 32000, RMSNorm written out (Pow, ReduceMean,
Add eps, Sqrt, Div, Mul), a causal mask of -1e4, sequence 16. Built with onnx.helper rather than
exported from torch: a torch export of a 1 B model needs the model, its trace and the proto in
memory at once; here each weight goes to the .data file as it is drawn, so building takes little
memory. Parameters grow linearly with the number of layers (51.4 M each, plus 131 M for the
embedding and the output head), which is what the memory benchmark varies.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

HIDDEN, HEADS, MLP, VOCAB, SEQUENCE, BATCH = 2048, 16, 5632, 32000, 16, 1
HEAD = HIDDEN // HEADS


class _Weights:
    """Appends each weight to one external-data file as it is drawn; keeps only its TensorProto stub."""

    def __init__(self, data_path: Path, seed: int = 0):
        self.path, self.rng, self.offset = data_path, np.random.default_rng(seed), 0
        self.file = open(data_path, "wb")
        self.tensors: list[TensorProto] = []

    def add(self, name: str, shape: tuple[int, ...], std: float = 0.02, value: float | None = None) -> str:
        array = np.full(shape, value, np.float32) if value is not None else (self.rng.standard_normal(shape, np.float32) * std)
        data = array.tobytes()
        self.file.write(data)
        tensor = TensorProto(name=name, data_type=TensorProto.FLOAT, dims=shape)
        tensor.data_location = TensorProto.EXTERNAL
        for key, val in (("location", self.path.name), ("offset", str(self.offset)), ("length", str(len(data)))):
            entry = tensor.external_data.add()
            entry.key, entry.value = key, val
        self.offset += len(data)
        self.tensors.append(tensor)
        return name

    def close(self) -> None:
        self.file.close()


def _rms_norm(nodes, weights, x: str, prefix: str) -> str:
    gamma = weights.add(f"{prefix}_gamma", (HIDDEN,), value=1.0)
    steps = [("Pow", [x, "two"], "sq", {}), ("ReduceMean", [f"{prefix}_sq"], "ms", {"axes": [-1], "keepdims": 1}),
             ("Add", [f"{prefix}_ms", "eps"], "ms_eps", {}), ("Sqrt", [f"{prefix}_ms_eps"], "rms", {}),
             ("Div", [x, f"{prefix}_rms"], "unit", {}), ("Mul", [f"{prefix}_unit", gamma], "out", {})]
    for op, inputs, out, attrs in steps:
        nodes.append(helper.make_node(op, inputs, [f"{prefix}_{out}"], name=f"{prefix}_{out}", **attrs))
    return f"{prefix}_out"


def _node(nodes, op, inputs, name, **attrs) -> str:
    nodes.append(helper.make_node(op, inputs, [name], name=name, **attrs))
    return name


def _attention(nodes, weights, x: str, p: str) -> str:
    heads = []
    for part in ("q", "k", "v"):
        projected = _node(nodes, "MatMul", [x, weights.add(f"{p}_w{part}", (HIDDEN, HIDDEN))], f"{p}_{part}")
        split = _node(nodes, "Reshape", [projected, "heads_shape"], f"{p}_{part}_heads")
        heads.append(_node(nodes, "Transpose", [split], f"{p}_{part}_t", perm=[0, 2, 1, 3]))
    q, k, v = heads
    k_t = _node(nodes, "Transpose", [k], f"{p}_k_tt", perm=[0, 1, 3, 2])
    scores = _node(nodes, "MatMul", [q, k_t], f"{p}_scores")
    scaled = _node(nodes, "Mul", [scores, "attn_scale"], f"{p}_scaled")
    masked = _node(nodes, "Add", [scaled, "causal_mask"], f"{p}_masked")
    probs = _node(nodes, "Softmax", [masked], f"{p}_probs", axis=-1)
    context = _node(nodes, "MatMul", [probs, v], f"{p}_context")
    merged = _node(nodes, "Reshape", [_node(nodes, "Transpose", [context], f"{p}_context_t", perm=[0, 2, 1, 3]), "hidden_shape"],
                   f"{p}_merged")
    return _node(nodes, "MatMul", [merged, weights.add(f"{p}_wo", (HIDDEN, HIDDEN))], f"{p}_o")


def _mlp(nodes, weights, x: str, p: str) -> str:
    gate = _node(nodes, "MatMul", [x, weights.add(f"{p}_wg", (HIDDEN, MLP))], f"{p}_gate")
    up = _node(nodes, "MatMul", [x, weights.add(f"{p}_wu", (HIDDEN, MLP))], f"{p}_up")
    silu = _node(nodes, "Mul", [gate, _node(nodes, "Sigmoid", [gate], f"{p}_sigmoid")], f"{p}_silu")
    return _node(nodes, "MatMul", [_node(nodes, "Mul", [silu, up], f"{p}_gated"), weights.add(f"{p}_wd", (MLP, HIDDEN))],
                 f"{p}_down")


def build(out_dir: Path, layers: int) -> tuple[Path, Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    name = f"decoder_{layers}l"
    weights = _Weights(out_dir / f"{name}.onnx.data")
    nodes: list[onnx.NodeProto] = []
    x = _node(nodes, "Gather", [weights.add("embedding", (VOCAB, HIDDEN)), "input_ids"], "embed")
    for i in range(layers):
        attention = _attention(nodes, weights, _rms_norm(nodes, weights, x, f"l{i}_norm1"), f"l{i}_attn")
        x = _node(nodes, "Add", [x, attention], f"l{i}_residual1")
        x = _node(nodes, "Add", [x, _mlp(nodes, weights, _rms_norm(nodes, weights, x, f"l{i}_norm2"), f"l{i}_mlp")], f"l{i}_residual2")
    final = _rms_norm(nodes, weights, x, "final_norm")
    _node(nodes, "MatMul", [final, weights.add("lm_head", (HIDDEN, VOCAB))], "logits")
    weights.close()
    mask = np.triu(np.full((SEQUENCE, SEQUENCE), -1e4, np.float32), k=1)[None, None]
    small = [numpy_helper.from_array(v, n) for n, v in (
        ("two", np.float32(2)), ("eps", np.float32(1e-5)), ("attn_scale", np.float32(HEAD ** -0.5)),
        ("causal_mask", mask), ("heads_shape", np.array([BATCH, SEQUENCE, HEADS, HEAD], np.int64)),
        ("hidden_shape", np.array([BATCH, SEQUENCE, HIDDEN], np.int64)))]
    graph = helper.make_graph(
        nodes, name, [helper.make_tensor_value_info("input_ids", TensorProto.INT64, [BATCH, SEQUENCE])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [BATCH, SEQUENCE, VOCAB])], weights.tensors + small)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    path = out_dir / f"{name}.onnx"
    onnx.save(model, path)
    feed = out_dir / f"{name}.npz"
    np.savez(feed, input_ids=np.random.default_rng(1).integers(0, VOCAB, (BATCH, SEQUENCE), dtype=np.int64))
    return path, feed


def parameters(layers: int) -> int:
    return VOCAB * HIDDEN * 2 + layers * (4 * HIDDEN * HIDDEN + 3 * HIDDEN * MLP + 2 * HIDDEN) + HIDDEN


if __name__ == "__main__":
    layers = int(sys.argv[2]) if len(sys.argv) > 2 else 18
    print(*build(Path(sys.argv[1]), layers), f"{parameters(layers) / 1e9:.2f} B parameters")
