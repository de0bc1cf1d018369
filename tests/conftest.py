"""Shared fixtures: tiny models written inline as ONNX text, and the committed sample models."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # for `sample_models`
SAMPLES = ROOT / "sample_models"


def parse_model(text: str, **initializers: np.ndarray) -> onnx.ModelProto:
    """A model from ONNX text (`onnx.parser`), plus initializers given as arrays."""
    header = '<ir_version: 8, opset_import: ["" : 17]>\n'
    model = onnx.parser.parse_model(header + text)
    for name, value in initializers.items():
        model.graph.initializer.append(numpy_helper.from_array(np.asarray(value), name))
    onnx.checker.check_model(model)
    return model


@pytest.fixture
def rng():
    return np.random.default_rng(0)


@pytest.fixture(scope="session")
def sample():
    """sample("legacy_mask_bert") -> (path to the committed .onnx, its feed dict)."""

    def load(name: str):
        with np.load(SAMPLES / f"{name}.npz") as data:
            return SAMPLES / f"{name}.onnx", {k: data[k] for k in data.files}

    return load
