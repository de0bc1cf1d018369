"""Writing derived models, never over the user's own files."""

from __future__ import annotations

from pathlib import Path

import onnx

from workbench.errors import WorkbenchError
from workbench.model import Model, full_proto

# Protobuf cannot serialize a message over 2 GiB; larger models keep their weights in a side file.
_PROTOBUF_LIMIT = 2**31 - 1


def save_model(model: Model, path: Path, protect: list[Path] = ()) -> Path:
    """Write `model` to `path` (weights to `<name>.data` beside it when over 2 GB)."""
    path = Path(path)
    if any(path.resolve() == Path(p).resolve() for p in protect):
        raise WorkbenchError(f"refusing to overwrite the input model {path}; choose another output path with -o.")
    if not path.parent.is_dir():
        raise WorkbenchError(f"cannot write {path}: folder {path.parent} does not exist.")
    proto = full_proto(model)
    if proto.ByteSize() > _PROTOBUF_LIMIT:
        onnx.save_model(proto, str(path), save_as_external_data=True, location=f"{path.name}.data")
    else:
        onnx.save_model(proto, str(path))
    return path
