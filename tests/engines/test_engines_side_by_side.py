"""The engines side by side on the same samples: where they agree, and where they disagree and why."""

import numpy as np
import pytest
from inline_models import parse_model

import workbench
from workbench.errors import WorkbenchError


def roots(report):
    return [(r.node, r.kind) for r in report.roots]


@pytest.mark.parametrize("name", ["legacy_mask_bert", "layernorm_pow", "cancellation", "eps_underflow"])
def test_emulate_and_ort_kernels_name_the_same_roots(sample, name):
    """On CPU, ORT's FP16 kernels mostly compute in FP32 and round the result: the same arithmetic as emulation."""
    path, feed = sample(name)
    emulated = workbench.diagnose(path, inputs=feed)
    kernels = workbench.diagnose(path, inputs=feed, engine="ort-kernels")
    assert emulated.engine == "emulate" and kernels.engine == "ort-kernels"
    assert emulated.verdict == kernels.verdict and roots(emulated) == roots(kernels) and roots(emulated)


def test_runtime_disagrees_on_cancellation_because_ort_drops_the_casts_between_fp16_nodes(sample):
    """ORT's whole-model FP16 session computes `(x + c) - c` in FP32 (it removes the Cast pair): no fault seen."""
    path, feed = sample("cancellation")
    assert workbench.diagnose(path, inputs=feed).verdict != "ok"
    runtime = workbench.diagnose(path, inputs=feed, mode="runtime")
    assert runtime.verdict == "ok" and runtime.engine == "runtime"


def test_bf16_has_no_ort_kernels_and_only_emulation_judges_it():
    """ORT's CPU provider has no BF16 compute kernels (its Python API cannot even return BF16): the engine says so."""
    model = parse_model("g (float[8] x) => (float[8] y) { a = Add(x, c) y = Sub(a, c) }", c=np.array(300.0, np.float32))
    feed = {"x": np.linspace(0.5, 1.5, 8).astype(np.float32)}
    options = workbench.Fp16Options(precision="bf16")
    assert workbench.diagnose(model, inputs=feed, fp16=options).verdict == "divergent"
    with pytest.raises(WorkbenchError, match="stores tensors in BF16, which ONNX Runtime's CPU provider cannot compute"):
        workbench.diagnose(model, inputs=feed, fp16=options, engine="ort-kernels")
