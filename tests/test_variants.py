"""Fused variants (ONNX Runtime's transformer optimizer and session levels) against the FP32 baseline."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
from cli_in_process import run_cli

import workbench
from workbench.errors import WorkbenchError
from workbench.io.model import file_digest, load_model
from workbench.variants import fused as variants

SAMPLES = Path(__file__).resolve().parents[1] / "sample_models"


@pytest.fixture(scope="module")
def legacy(request):
    path = SAMPLES / "legacy_mask_bert.onnx"
    with np.load(path.with_suffix(".npz")) as data:
        return path, {k: data[k] for k in data.files}


def test_optimizer_fuses_tiny_bert_and_leaves_the_file_alone(legacy):
    path, feed = legacy
    before = file_digest(path)
    fused = variants.optimize_transformer(path, num_heads=2, hidden_size=32)
    assert file_digest(path) == before
    assert variants.fused_op_counts(fused.proto, load_model(path).proto) == {"BiasGelu": 2, "SkipLayerNormalization": 4}
    assert ("com.microsoft", 1) in [(o.domain, o.version) for o in fused.proto.opset_import]
    assert "SkipLayerNormalization" in fused.origin and fused.path is None


def test_fused_nodes_align_by_surviving_names_and_say_what_they_fused(legacy):
    path, feed = legacy
    comparison = variants.compare_fused(path, variants.optimize_transformer(path, 2, 32), inputs=feed)
    assert comparison.verdict == "ok" and comparison.first_divergent is None
    assert comparison.tolerance.rel_l2 == 1e-4  # an FP32 fused variant
    assert comparison.unaligned == () and len(comparison.fused_nodes) == 6
    skip = next(f for f in comparison.fused_nodes if f.op_type == "SkipLayerNormalization")
    assert sorted(op for _, op in skip.replaced) == ["Add", "Add", "LayerNormalization"]
    gelu = next(f for f in comparison.fused_nodes if f.op_type == "BiasGelu")
    assert [op for _, op in gelu.replaced] == ["Add", "Gelu"]
    assert all(f.worst.rel_l2 < 1e-5 for f in comparison.fused_nodes)  # same function, other float order
    data = json.loads(json.dumps(comparison.to_dict()))
    assert data["fused_ops"] == {"BiasGelu": 2, "SkipLayerNormalization": 4} and data["first_divergent"] is None


@pytest.mark.parametrize("mode", ["faithful", "runtime"])
def test_a_wrong_fusion_is_named_as_the_first_divergent_fused_node(legacy, mode):
    """A SkipLayerNormalization with epsilon 1 (a broken fusion) runs, and is found, in both modes."""
    path, feed = legacy
    fused = variants.optimize_transformer(path, 2, 32)
    proto = onnx.ModelProto()
    proto.CopyFrom(fused.proto)
    skips = [n for n in proto.graph.node if n.op_type == "SkipLayerNormalization"]
    broken = skips[2]
    for attr in broken.attribute:
        if attr.name == "epsilon":
            attr.f = 1.0
    comparison = variants.compare_fused(path, load_model(proto, name="broken"), inputs=feed, mode=mode)
    first = comparison.first_divergent
    assert comparison.verdict == "divergent"
    assert first is not None and first.node == broken.name and first.op_type == "SkipLayerNormalization"
    assert "LayerNormalization" in first.fused_text() and first.worst.rel_l2 > 1e-2
    assert all(f.ok for f in comparison.fused_nodes[: comparison.fused_nodes.index(first)])
    assert "FIRST DIVERGENT" in comparison.summary() and broken.name in comparison.summary()
    if mode == "faithful":  # its own error, on the baseline's inputs: the node is at fault, not upstream
        assert first.local is not None and not first.local.ok
        assert [r["node"] for r in comparison.roots] == [broken.name]
        assert comparison.roots[0]["kind"] == "fused_node_error" and "FP16" not in comparison.summary()


def test_session_levels_make_fused_variants_too(legacy):
    path, feed = legacy
    extended = variants.session_optimized(path, "extended")
    comparison = variants.compare_fused(path, extended, inputs=feed)
    assert comparison.verdict == "ok"
    assert {"FusedMatMul", "SkipLayerNormalization", "BiasGelu"} <= set(comparison.op_counts)
    matmul = next(f for f in comparison.fused_nodes if f.op_type == "FusedMatMul")
    assert [op for _, op in matmul.replaced][-1] == "MatMul" and "Mul" in matmul.fused_text()
    basic = variants.session_optimized(path, "basic")
    assert variants.fused_op_counts(basic.proto, load_model(path).proto) == {}
    with pytest.raises(WorkbenchError, match="unknown session optimization level"):
        variants.session_optimized(path, "turbo")
    session_first = variants.optimize_transformer(path, 2, 32, opt_level=2)  # an ORT session optimizes, then the fusions
    assert variants.compare_fused(path, session_first, inputs=feed).verdict == "ok"
    with pytest.raises(WorkbenchError, match="opt_level 3"):
        variants.optimize_transformer(path, 2, 32, opt_level=3)


def test_optimizer_float16_path_clamps_the_legacy_mask_that_the_workbench_conversion_reports(legacy):
    path, feed = legacy
    fused16 = variants.optimize_transformer(path, 2, 32, float16=True)
    comparison = variants.compare_fused(path, fused16, inputs=feed)
    assert comparison.tolerance.rel_l2 == 1e-2  # FP16 weights: judged as an FP16 variant
    output = comparison.diagnosis.outputs["last_hidden_state"]
    assert comparison.verdict == "ok" and 1e-4 < output.rel_l2 < 1e-2  # really FP16, and fine
    mask = next(t for t in fused16.graph.initializer if t.name == "val_32")
    assert mask.data_type == onnx.TensorProto.FLOAT16 and onnx.numpy_helper.to_array(mask).item() == -65504.0
    assert workbench.diagnose(path, inputs=feed).verdict == "nonfinite"  # the plain cast: -inf, NaN


def test_optimize_cli_json_and_output(legacy, tmp_path, capsys):
    path, _ = legacy
    target = tmp_path / "fused.onnx"
    code, out, err = run_cli(["optimize", path, "--inputs", path.with_suffix(".npz"), "--num-heads", 2,
                              "--hidden-size", 32, "-o", target, "--json"], capsys)
    assert code == 0, err
    data = json.loads(out)
    assert data["verdict"] == "ok" and data["output_path"] == str(target) and data["fused_ops"]["SkipLayerNormalization"] == 4
    assert {n.op_type for n in onnx.load(target).graph.node} >= {"SkipLayerNormalization", "BiasGelu"}
    code, _, err = run_cli(["optimize", path, "--session-level", "all", "--float16"], capsys)
    assert code == 2 and "not both" in err
    code, _, err = run_cli(["optimize", path, "-o", path], capsys)
    assert code == 2 and "refusing to overwrite" in err


@pytest.mark.slow
def test_minilm_fused_fp32_and_fp16_against_baseline():
    from sample_models import build

    path, feed = build.export_minilm("modern"), build.minilm_feed()
    fused = variants.optimize_transformer(path, num_heads=12, hidden_size=384)
    comparison = variants.compare_fused(path, fused, inputs=feed)
    assert comparison.op_counts == {"BiasGelu": 6, "SkipLayerNormalization": 12}
    assert comparison.verdict == "ok" and comparison.first_divergent is None
    assert comparison.diagnosis.outputs["last_hidden_state"].rel_l2 < 1e-5
    assert comparison.worst.worst.rel_l2 < 1e-5 and len(comparison.worst.replaced) >= 2
    fp16 = variants.compare_fused(path, variants.optimize_transformer(path, 12, 384, float16=True), inputs=feed, mode="runtime")
    assert fp16.verdict == "ok" and 1e-4 < fp16.diagnosis.outputs["last_hidden_state"].rel_l2 < 1e-2


def test_a_model_with_external_data_reaches_ort_tools_whole(tmp_path):
    # Regression: weights kept in external data are memory-mapped, not in the proto; the file written
    # for ORT's tools must hold them, or the quantizer and optimizer see a model without weights.
    from inline_models import parse_model

    weights = np.random.default_rng(0).standard_normal((8, 8)).astype(np.float32)
    proto = parse_model("g (float[2,8] x) => (float[2,8] y) { y = MatMul(x, w) }", w=weights)
    path = tmp_path / "model.onnx"
    onnx.save_model(proto, str(path), save_as_external_data=True, location="w.bin", size_threshold=0)
    optimized = variants.session_optimized(load_model(path), "basic")
    quantized_model = variants.quantize_int8(load_model(path))
    assert optimized.graph.initializer and quantized_model.graph.initializer
    for model in (optimized, quantized_model):
        assert not any(t.data_location == onnx.TensorProto.EXTERNAL for t in model.graph.initializer)
