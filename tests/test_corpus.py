"""A sample of the corpus (bench/corpus.py runs all of it): each model ends in a verdict or a clean error.

The outcomes are pinned, so a change that turns a verdict into an error (or an error into a crash)
shows here. An "internal" outcome is a bug in the workbench: its detail names the exception.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from bench import corpus

CACHE = Path(__file__).resolve().parents[1] / "sample_models" / "generated" / "corpus"  # git-ignored; exports are reused between runs

# (backend data folder, model) -> the outcome bench/corpus.py records for it
ONNX_PACKAGE_SAMPLE = {
    ("light", "light_squeezenet"): "nonfinite",
    ("light", "light_shufflenet"): "ok",
    ("simple", "test_expand_shape_model1"): "ok",
    ("simple", "test_single_relu_model"): "ok",
    ("simple", "test_sequence_model1"): "ok",  # sequences run inside the emulating engine's session, tensors compared
    ("simple", "test_strnorm_model_monday_casesensintive_lower"): "error",  # strings only: nothing to convert
    ("simple", "test_gradient_of_add"): "error",  # a training op onnxruntime does not run
    ("pytorch-converted", "test_Conv2d"): "ok",
    ("pytorch-converted", "test_Embedding"): "ok",
    ("pytorch-converted", "test_LogSoftmax"): "ok",
    ("pytorch-converted", "test_AvgPool2d"): "ok",  # AveragePool-1: no ORT kernel; converted to opset 11 first
    ("pytorch-converted", "test_PReLU_2d_multiparam"): "ok",  # PRelu-6's per-channel slope, reshaped after conversion
    ("pytorch-operator", "test_operator_addconstant"): "nonfinite",  # float64 throughout, converted too: its inputs exceed FP16
    ("pytorch-operator", "test_operator_reduced_mean_keepdim"): "ok",
    ("pytorch-operator", "test_operator_pad"): "ok",
}
ARCHITECTURE_SAMPLE = {"bert": "ok", "gpt2": "ok", "deberta_v2": "nonfinite"}


def backend_case(group: str, name: str) -> corpus.Case:
    return next(c for c in corpus.backend_cases([group]) if c.name == name)


@pytest.mark.parametrize("group, name", list(ONNX_PACKAGE_SAMPLE))
def test_onnx_package_model_ends_in_its_verdict_or_a_clean_error(group, name):
    outcome = corpus.run_case(backend_case(group, name))
    assert outcome.status != "internal", outcome.detail
    assert outcome.status == ONNX_PACKAGE_SAMPLE[group, name], outcome.detail
    assert "\n" not in outcome.detail


def test_error_outcomes_say_what_to_do():
    details = {name: corpus.run_case(backend_case(group, name)).detail
               for (group, name), status in ONNX_PACKAGE_SAMPLE.items() if status == "error"}
    assert "no floating-point tensors" in details["test_strnorm_model_monday_casesensintive_lower"]
    assert "training-only op ai.onnx.preview.training:Gradient" in details["test_gradient_of_add"]


def test_backend_feeds_come_from_test_data_set_0():
    import onnx

    case = backend_case("pytorch-converted", "test_Embedding")
    feed = corpus.backend_feed(onnx.load(str(case.path)), case.feed_dir)
    assert {name: (value.dtype.kind, value.shape) for name, value in feed.items()} == {"0": ("i", (1, 4))}


@pytest.mark.slow
@pytest.mark.parametrize("name", list(ARCHITECTURE_SAMPLE))
def test_exported_transformer_ends_in_its_verdict(name):
    path, exporter = corpus.export_architecture(name, CACHE)
    outcome = corpus.run_case(corpus.Case(name, "transformers", path))
    assert exporter == "dynamo"
    assert outcome.status == ARCHITECTURE_SAMPLE[name], outcome.detail
    if name == "deberta_v2":  # masked_fill with float32.min: the legacy-mask story in another architecture
        assert "constant_out_of_range" in outcome.detail
