"""INT8 dynamic quantization against FP32: SQNR, the nodes that lose most, keep-FP32 fixes re-verified."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from cli_in_process import run_cli

import workbench
from workbench.compare.diff import Tolerance
from workbench.errors import WorkbenchError
from workbench.io.model import file_digest
from workbench.variants import int8 as quantized

SAMPLES = Path(__file__).resolve().parents[1] / "sample_models"


@pytest.fixture(scope="module")
def tiny():
    path = SAMPLES / "modern_mask_bert.onnx"
    with np.load(path.with_suffix(".npz")) as data:
        feed = {k: data[k] for k in data.files}
    return path, feed, quantized.analyze_int8(path, inputs=feed)


def test_sqnr_is_signal_over_noise_in_db():
    rng = np.random.default_rng(0)
    signal = rng.normal(size=10_000).astype(np.float32)
    noise = (0.01 * rng.normal(size=10_000)).astype(np.float32)
    expected = 10 * np.log10(np.sum(signal.astype(np.float64) ** 2) / np.sum(noise.astype(np.float64) ** 2))
    assert quantized.sqnr_db(signal, signal + noise) == pytest.approx(expected, abs=1e-3)
    assert quantized.sqnr_db(signal, signal + noise) == pytest.approx(40.0, abs=0.5)  # rel-L2 1e-2 is 40 dB
    assert quantized.sqnr_db(signal, signal) == float("inf")
    assert quantized.sqnr_db(np.zeros(3), np.ones(3)) == float("-inf")
    assert quantized.INT8_TOLERANCE.rel_l2 == 0.15  # 16.5 dB, documented in the module


def test_tiny_bert_int8_tensors_and_quantized_groups(tiny):
    path, feed, report = tiny
    assert report.verdict == "ok"
    out = report.outputs["last_hidden_state"]
    assert 30 < out.sqnr_db < 60 and out.diff.rel_l2 == pytest.approx(10 ** (-out.sqnr_db / 20), rel=1e-6)
    # 12 MatMuls with constant weights and 3 embedding Gathers, each named by its FP32 node
    assert report.quantized_nodes == 15 == len(report.losses)
    assert sorted({l.op_type for l in report.losses}) == ["Gather", "MatMul"]
    matmul = next(l for l in report.losses if l.op_type == "MatMul")
    assert {"DynamicQuantizeLinear", "MatMulInteger"} <= {report.candidate.graph.node[i].op_type for i in _indices(report, matmul.group)}
    assert all(20 < l.local_sqnr_db < 70 for l in report.losses)  # real quantization error, each its own
    sqnrs = [l.local_sqnr_db for l in report.ranked]
    assert sqnrs == sorted(sqnrs)
    harms = [l.output_sqnr_db for l in report.by_harm]
    assert harms == sorted(harms)
    assert {t.tensor for t in report.tensors} >= {l.tensor for l in report.losses} | {"last_hidden_state"}
    data = json.loads(json.dumps(report.to_dict()))
    assert data["verdict"] == "ok" and len(data["ranked"]) == 15 and data["settings"]["per_channel"] is False


def _indices(report, names):
    return [i for i, n in enumerate(report.candidate.graph.node) if n.name in names]


def test_operator_lists_and_exclusions_change_what_is_quantized(tiny):
    path, feed, _ = tiny
    before = file_digest(path)
    only_matmul = quantized.analyze_int8(path, inputs=feed, op_types=["MatMul"], per_channel=True)
    assert {l.op_type for l in only_matmul.losses} == {"MatMul"} and only_matmul.quantized_nodes == 12
    excluded = quantized.analyze_int8(path, inputs=feed, exclude=["node_MatMul_91"])
    assert excluded.quantized_nodes == 14 and "node_MatMul_91" not in {l.node for l in excluded.losses}
    assert file_digest(path) == before
    with pytest.raises(WorkbenchError, match="no node named 'nope'"):
        quantized.analyze_int8(path, inputs=feed, exclude=["nope"])


def test_a_given_int8_variant_is_measured_but_not_requantized(tiny):
    from workbench.variants.fused import quantize_int8

    path, feed, report = tiny
    given = quantized.analyze_int8(path, candidate=quantize_int8(path), inputs=feed)
    assert given.settings == {"given": True}
    assert given.outputs["last_hidden_state"].sqnr_db == pytest.approx(report.outputs["last_hidden_state"].sqnr_db, abs=1e-6)
    with pytest.raises(WorkbenchError, match="was given, not made here"):
        quantized.exclude_nodes(given, [given.losses[0].node])


def test_keep_fp32_fix_requantizes_and_reverifies(tiny):
    path, feed, report = tiny
    worst = report.by_harm[0]
    fixed = quantized.exclude_nodes(report, [worst.node])
    assert fixed.excluded == (worst.node,) and fixed.after.quantized_nodes == report.quantized_nodes - 1
    assert worst.node not in {l.node for l in fixed.after.losses}
    assert fixed.after.outputs["last_hidden_state"].sqnr_db > report.outputs["last_hidden_state"].sqnr_db
    assert fixed.after.reference_values is report.reference_values  # the FP32 run is reused, not redone


def test_a_strict_tolerance_fails_and_auto_exclude_walks_the_harm_ranking(tiny):
    path, feed, _ = tiny
    strict = quantized.analyze_int8(path, inputs=feed, tolerance=Tolerance(rel_l2=1e-3))  # 60 dB: FP16-grade
    assert strict.verdict == "divergent" and not strict.ok
    result = quantized.auto_exclude(strict, max_nodes=3)
    order = [l.node for l in strict.by_harm]
    assert list(result.excluded) == order[: len(result.excluded)] and 1 <= len(result.excluded) <= 3
    sqnrs = [db for _, db in result.attempts]
    assert sqnrs[-1] > strict.outputs["last_hidden_state"].sqnr_db + 3
    assert result.ok == result.after.ok and ("OK" if result.ok else "NOT FIXED") in result.summary()


def test_quantize_cli(tiny, tmp_path, capsys):
    path, _, _ = tiny
    target = tmp_path / "int8.onnx"
    code, out, err = run_cli(["quantize", path, "--inputs", path.with_suffix(".npz"), "--per-channel", "--top", 3,
                              "-o", target, "--json"], capsys)
    assert code == 0, err
    data = json.loads(out)
    assert data["ok"] is True and len(data["ranked"]) == 3 and data["output_path"] == str(target) and target.is_file()
    assert data["outputs"]["last_hidden_state"]["sqnr_db"] > 30
    code, out, err = run_cli(["quantize", path, "--inputs", path.with_suffix(".npz"), "--tolerance", "1e-4",
                              "--auto-exclude", "--max-exclude", 1, "-o", target], capsys)
    assert code == 1 and "NOT FIXED" in out and "still failing" in out  # a written variant that fails: exit 1
    code, _, err = run_cli(["quantize", path, "--exclude", "nope"], capsys)
    assert code == 2 and "no node named" in err


@pytest.mark.slow
def test_minilm_int8_loses_most_at_the_ffn_down_projection_and_keeping_it_fp32_helps():
    from sample_models import build

    path, feed = build.export_minilm("modern"), build.minilm_feed()
    per_tensor = quantized.analyze_int8(path, inputs=feed, rank=False)
    report = quantized.analyze_int8(path, inputs=feed, per_channel=True)
    out = report.outputs["last_hidden_state"].sqnr_db
    assert out > per_tensor.outputs["last_hidden_state"].sqnr_db  # one scale per output channel loses less
    assert per_tensor.losses == () and per_tensor.quantized_nodes == 39
    assert report.verdict == "divergent" and out < 16.5 and report.quantized_nodes == 39
    worst = report.by_harm[0]
    index = report.reference_index
    assert worst.op_type == "MatMul" and index.producer[index.node_by_name[worst.node].input[0]].op_type == "Gelu"
    gelu_out = report.reference_values[index.node_by_name[worst.node].input[0]]
    assert gelu_out.max() > 10 * np.percentile(np.abs(gelu_out), 99)  # outliers spend the 256 levels
    assert not report.check_task(workbench.SentenceEmbeddingTask()).ok
    # one keep-FP32 fix, re-verified (notebook 05 runs the whole auto_exclude with the task check)
    fixed = quantized.exclude_nodes(report, [worst.node], task=workbench.SentenceEmbeddingTask())
    assert fixed.excluded == (worst.node,) and fixed.after.quantized_nodes == 38
    assert fixed.after.outputs["last_hidden_state"].sqnr_db > out + 5
    assert fixed.task.metrics["min_cosine"] > report.check_task(workbench.SentenceEmbeddingTask()).metrics["min_cosine"]
