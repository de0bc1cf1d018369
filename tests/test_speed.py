"""Speed and accuracy of variants, on real ONNX Runtime sessions. Times are measured, never asserted."""

from __future__ import annotations

import argparse
import json
import math

import numpy as np
import pytest

from workbench.errors import WorkbenchError
from workbench.variants import speed


def test_paraphrase_pairs_are_deterministic_and_balanced():
    pairs = speed.paraphrase_pairs(200)
    assert pairs == speed.paraphrase_pairs(200) and pairs != speed.paraphrase_pairs(200, seed=1)
    labels = np.array([p.paraphrase for p in pairs])
    assert labels[0::2].mean() == 0.5 and labels[1::2].mean() == 0.5  # both the fitting and the test half
    assert all(p.first != p.second for p in pairs if not p.paraphrase)
    assert len({p.first for p in pairs}) > 150
    with pytest.raises(WorkbenchError):
        speed.paraphrase_pairs(2)


def test_fit_threshold_separates():
    cosines = np.array([0.1, 0.2, 0.8, 0.9])
    threshold = speed.fit_threshold(cosines, np.array([False, False, True, True]))
    assert 0.2 < threshold < 0.8


def test_time_session_gives_positive_numbers(sample):
    path, feed = sample("clean_mlp")
    session = speed.make_session(path)
    timing = speed.time_session(session, {"x": feed["x"][:1]}, feed, warmup=2, runs=8)
    assert timing.latency_p50_ms > 0 and timing.latency_p90_ms >= timing.latency_p50_ms
    assert timing.throughput > 0 and timing.batch == 4 and timing.runs == 8
    with pytest.raises(WorkbenchError, match="runs"):
        speed.time_session(session, feed, runs=0)


def _hash_tokenizer(sentences):
    """Words to ids 1..99 (the tiny BERT's vocabulary), padded with 0: a stand-in for a real tokenizer."""
    ids = [[1 + sum(map(ord, w)) % 99 for w in s.lower().replace(",", "").replace(".", "").split()] for s in sentences]
    width = max(map(len, ids))
    return {"input_ids": np.array([i + [0] * (width - len(i)) for i in ids], np.int64),
            "attention_mask": np.array([[1] * len(i) + [0] * (width - len(i)) for i in ids], np.int64)}


@pytest.fixture(scope="module")
def tiny_table(sample):
    path, _ = sample("modern_mask_bert")
    return speed.compare_variants(path, ["fp16", "int8", "bogus"], speed.paraphrase_pairs(40), _hash_tokenizer,
                                  warmup=1, runs=4, throughput_batch=8)


def test_compare_variants_on_tiny_bert(tiny_table):
    table = tiny_table
    assert [row.variant for row in table.rows] == ["fp32", "fp16", "int8", "bogus"]
    for row in table.rows[:3]:
        assert not row.error, row.error
        assert row.latency_p50_ms > 0 and row.latency_p90_ms >= row.latency_p50_ms and row.throughput > 0
        assert 0 <= row.accuracy <= 1 and 0 <= row.agreement <= 1 and row.size_mb > 0
    fp32, fp16, int8 = table.rows[:3]
    assert fp32.agreement == 1 and fp32.accuracy_delta == 0 and fp32.min_cosine_to_fp32 > 0.9999
    assert fp16.min_cosine_to_fp32 > 0.99 and fp16.size_mb < 0.7 * fp32.size_mb
    assert "quantize_dynamic" in int8.origin
    assert "unknown variant 'bogus'" in table.rows[3].error and math.isnan(table.rows[3].throughput)
    assert table.test_pairs == 20 and table.throughput_batch == 8


def test_table_outputs(tiny_table):
    data = json.loads(json.dumps(tiny_table.to_dict()))
    assert data["rows"][3]["throughput"] is None and data["rows"][0]["variant"] == "fp32"
    markdown = tiny_table.to_markdown().splitlines()
    assert len(markdown) == 2 + 4 and markdown[0].startswith("| variant | p50 ms")
    assert "cosine threshold" in tiny_table.summary() and "<table>" in tiny_table._repr_html_()


def test_plot_speed(tiny_table):
    pytest.importorskip("matplotlib")
    from workbench.ui.speed_plot import plot_speed

    figure = plot_speed(tiny_table)
    assert len(figure.axes) == 3 and figure.axes[0].get_ylabel().startswith("latency")


def _cli(argv):
    parser = argparse.ArgumentParser()
    speed.add_cli(parser.add_subparsers(dest="command"))
    args = parser.parse_args(argv)
    return args.handler(args)


def test_cli_rejects_bad_options(sample):
    path, _ = sample("modern_mask_bert")
    with pytest.raises(WorkbenchError, match="unknown variant 'fp8'"):
        _cli(["speed", str(path), "--variants", "fp32,fp8"])
    with pytest.raises(WorkbenchError, match="--pairs"):
        _cli(["speed", str(path), "--pairs", "2"])
    with pytest.raises(WorkbenchError, match="ONNX Runtime fails"):  # MiniLM's token ids are beyond the tiny vocabulary
        _cli(["speed", str(path), "--variants", "fp32", "--pairs", "8", "--runs", "1"])


@pytest.mark.slow
def test_minilm_variants_and_cli(capsys):
    from sample_models import build

    path = build.export_minilm("modern")
    assert _cli(["speed", str(path), "--pairs", "80", "--runs", "4", "--warmup", "1", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    rows = {row["variant"]: row for row in data["rows"]}
    assert list(rows) == ["fp32", "fp16", "fused", "int8"] and not any(row["error"] for row in rows.values())
    assert rows["fp32"]["accuracy"] > 0.6  # a real encoder separates most paraphrases at a fitted threshold
    assert rows["fp16"]["agreement"] >= 0.95 and rows["fused"]["agreement"] >= 0.95
    assert rows["int8"]["size_mb"] < 0.5 * rows["fp32"]["size_mb"]
    assert all(row["throughput"] > 0 and row["latency_p50_ms"] > 0 for row in rows.values())
