"""The sample models: valid, runnable, reproducible, committed up to date, and still showing their trap."""

import functools
import sys
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, numpy_helper
from onnx.reference import ReferenceEvaluator

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from sample_models import build  # noqa: E402

NAMES = list(build.SAMPLES)


@functools.lru_cache(maxsize=None)
def _built(name):
    return build.SAMPLES[name]()


def _run(model, feed):
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return session.run(None, feed)


def _naive_fp16(model):
    """Cast every float tensor, Cast target and graph I/O to FP16, as a careless converter would."""
    model = onnx.ModelProto.FromString(model.SerializeToString())
    tensors = list(model.graph.initializer)
    for node in model.graph.node:
        for attr in node.attribute:
            if attr.type == onnx.AttributeProto.TENSOR:
                tensors.append(attr.t)
            if node.op_type == "Cast" and attr.name == "to" and attr.i == TensorProto.FLOAT:
                attr.i = TensorProto.FLOAT16
    for t in tensors:
        if t.data_type == TensorProto.FLOAT:
            with np.errstate(over="ignore"):  # float32.min -> -inf is the point
                t.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(t).astype(np.float16), t.name))
    for value in [*model.graph.input, *model.graph.output, *model.graph.value_info]:
        if value.type.tensor_type.elem_type == TensorProto.FLOAT:
            value.type.tensor_type.elem_type = TensorProto.FLOAT16
    return model


@pytest.mark.parametrize("name", NAMES)
def test_sample_is_valid_and_finite(name):
    model, feed = _built(name)
    onnx.checker.check_model(model, full_check=True)
    names = [n.name for n in model.graph.node]
    assert all(names) and len(set(names)) == len(names)
    assert set(feed) == {i.name for i in model.graph.input}
    outputs = _run(model, feed)
    assert outputs and all(np.isfinite(o).all() for o in outputs)


@pytest.mark.parametrize("name", NAMES)
def test_sample_is_reproducible(name):
    assert build.SAMPLES[name]()[0].SerializeToString() == _built(name)[0].SerializeToString()


@pytest.mark.parametrize("name", NAMES)
def test_committed_sample_is_up_to_date(name):
    model, feed = _built(name)
    onnx_path = ROOT / "sample_models" / f"{name}.onnx"
    assert onnx_path.read_bytes() == model.SerializeToString(), "run: python sample_models/build.py"
    assert onnx_path.stat().st_size < 200_000
    with np.load(onnx_path.with_suffix(".npz")) as committed:
        assert set(committed.files) == set(feed)
        for key, value in feed.items():
            np.testing.assert_array_equal(committed[key], value)
            assert committed[key].dtype == value.dtype


def test_legacy_mask_mul_is_named():
    model, _ = _built("legacy_mask_bert")
    (mul,) = [n for n in model.graph.node if n.name == "mask_scale"]
    assert mul.op_type == "Mul"


# name -> what a naive FP16 cast does to it: "nan", "close" (relative error < 1%) or "wrong" (> 10%)
FP16_EFFECT = {
    "legacy_mask_bert": "nan",
    "modern_mask_bert": "close",
    "layernorm_pow": "wrong",
    "clean_mlp": "close",
    "gelu_tanh_saturation": "close",
    "cancellation": "wrong",
    "eps_underflow": "nan",
}


def _run_fp16(model, feed):
    """The model after `_naive_fp16`, rounding to FP16 after every node.

    ORT CPU hides FP16 overflow and cancellation: it runs many FP16 ops in FP32 behind inserted
    Casts. So use the reference evaluator, except for the BERT exports, which it cannot run
    (GatherElements); their trap is an FP16 constant, which ORT reproduces all the same.
    """
    model = _naive_fp16(model)
    feed = {k: v.astype(np.float16) if v.dtype == np.float32 else v for k, v in feed.items()}
    with np.errstate(all="ignore"):
        if any(n.op_type == "GatherElements" for n in model.graph.node):
            return _run(model, feed)[0].astype(np.float32)
        return ReferenceEvaluator(model).run(None, feed)[0].astype(np.float32)


@pytest.mark.parametrize("name", NAMES)
def test_naive_fp16_shows_the_trap(name):
    model, feed = _built(name)
    ref, got = _run(model, feed)[0], _run_fp16(model, feed)
    if FP16_EFFECT[name] == "nan":
        assert np.isnan(got).any()
        return
    assert np.isfinite(got).all()
    rel = np.abs(got - ref).max() / np.abs(ref).max()
    assert rel < 0.01 if FP16_EFFECT[name] == "close" else rel > 0.1


@pytest.mark.slow
def test_minilm_exports_agree(tmp_path):
    feed = build.minilm_feed()
    assert feed["attention_mask"].shape[0] == 4 and not feed["attention_mask"].all()
    outputs = {}
    for style in ("legacy", "modern"):
        path = build.export_minilm(style, tmp_path)
        assert path.exists() and path.with_suffix(".npz").exists()
        outputs[style] = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, feed)
        assert all(np.isfinite(o).all() for o in outputs[style])
    np.testing.assert_allclose(outputs["legacy"][0], outputs["modern"][0], atol=1e-4)
