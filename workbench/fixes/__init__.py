"""Fixes: proposed per fault kind, applied to the FP32 source, converted again and re-verified."""
