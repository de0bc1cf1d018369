"""Sweep fixtures: tiny inline models and folders of feeds written to tmp_path."""

import sys
from pathlib import Path

import numpy as np
import onnx
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))  # tests/sweep/models.py
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests/inline_models.py

import models  # noqa: E402
from models import PADDED  # noqa: E402


@pytest.fixture
def attention_path(tmp_path):
    path = tmp_path / "attention.onnx"
    onnx.save(models.masked_attention(), path)
    return path


@pytest.fixture
def feed_folder(tmp_path):
    folder = tmp_path / "feeds"
    folder.mkdir()
    for i in range(12):
        np.savez(folder / f"feed_{i:02d}.npz", **models.feed(i, padded_row=2 if i in PADDED else None))
    return folder
