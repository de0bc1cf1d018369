"""Comparing a candidate's tensors with the reference's: `diff` (errors and tolerances), `slices`, `align` (by name)."""
