"""Shared fixtures: the committed sample models. Tiny inline models come from `inline_models`."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # for `sample_models`
SAMPLES = ROOT / "sample_models"


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
