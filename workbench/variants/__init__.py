"""Other variants of a model: fused (ORT's optimizers), INT8, the export from PyTorch, and their speed."""
