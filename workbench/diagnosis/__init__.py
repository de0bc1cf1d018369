"""The root cause: which node goes wrong on its own and harms the outputs, and why, in words."""
