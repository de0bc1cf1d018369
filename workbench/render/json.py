"""JSON for every result: one encoder (inf and NaN as null, numpy scalars and arrays, paths)."""

from __future__ import annotations

import numpy as np


def finite_or_none(value) -> float | None:
    """JSON has no inf or NaN: an unbounded error (shape mismatch, nothing finite to compare) is null."""
    if value is None:
        return None
    return float(value) if np.isfinite(value) else None
