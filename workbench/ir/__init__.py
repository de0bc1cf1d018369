"""Read-only views of ONNX graphs: producers, readers, constants, types, node names."""
