"""Writing derived models, never over the user's own files, never a half-written file.

Before anything is written, the target is checked against every file the inputs were read
from (the model, its external data, the feed) by identity, not by name: a hard link or a
symlink to the input is the input. The model is written to a temporary file in the target's
folder and renamed into place, so an interrupted write leaves the old file (or none).
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path
from typing import Callable, Iterable

import onnx

from workbench.errors import WorkbenchError
from workbench.io.model import Model, full_proto

# Protobuf cannot serialize a message over 2 GiB; larger models keep their weights in a side file.
_PROTOBUF_LIMIT = 2**31 - 1


def save_model(model: Model, path: Path, protect: Iterable[Path] = ()) -> Path:
    """Write `model` to `path` (weights to `<name>.data` beside it when over 2 GB).

    `protect`: files that must not be written (the user's inputs); the files `model` reads
    its weights from are always protected.
    """
    path = Path(path)
    proto = full_proto(model)
    external = proto.ByteSize() > _PROTOBUF_LIMIT
    targets = [path, path.with_name(f"{path.name}.data")] if external else [path]
    check_output(targets, [*protect, *model.source_files])

    def write(folder: Path) -> None:
        if external:
            onnx.save_model(proto, str(folder / path.name), save_as_external_data=True, location=f"{path.name}.data")
        else:
            onnx.save_model(proto, str(folder / path.name))

    write_atomically(path, write, side_files=[t.name for t in targets[1:]])
    return path


def check_output(targets: Iterable[Path], protected: Iterable[Path]) -> None:
    """A one-line WorkbenchError, before anything is written, when a target is an input or cannot be written."""
    protected = [Path(p) for p in protected if p is not None]
    for target in (Path(t) for t in targets):
        for source in protected:
            if _same_file(target, source):
                raise WorkbenchError(
                    f"refusing to overwrite {target}: it is {_role(target, source)}; choose another output path with -o."
                )
        if target.is_dir():
            raise WorkbenchError(f"cannot write {target}: it is a folder; give a file path such as {target / 'model.onnx'}.")
        if not target.parent.is_dir():
            raise WorkbenchError(f"cannot write {target}: folder {target.parent} does not exist.")
        if not os.access(target.parent, os.W_OK):
            raise WorkbenchError(f"cannot write {target}: folder {target.parent} is not writable; choose another output path with -o.")


def write_atomically(path: Path, write: Callable[[Path], None], side_files: Iterable[str] = ()) -> None:
    """`write(folder)` writes `path.name` (and `side_files`) into a fresh folder beside `path`; they are then
    renamed into place, side files first, so a reader never sees a model without its weights."""
    path = Path(path)
    try:
        folder = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".partial", dir=path.parent))
    except OSError as exc:
        raise WorkbenchError(f"cannot write {path}: {exc.strerror}.") from None
    try:
        write(folder)
        for name in [*side_files, path.name]:
            os.replace(folder / name, path.parent / name)
    except OSError as exc:
        raise WorkbenchError(f"cannot write {path}: {exc.strerror or exc}.") from None
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def _same_file(target: Path, source: Path) -> bool:
    """The same file by identity (hard links, symlinks), or by resolved path when one does not exist yet."""
    try:
        return os.path.samefile(target, source)
    except OSError:
        return target.resolve() == source.resolve()


def _role(target: Path, source: Path) -> str:
    if source.suffix == ".onnx":
        return f"the input model {source}" if target.resolve() == source.resolve() else f"the input model {source} (the same file)"
    if source.suffix == ".npz":
        return f"the inputs file {source}"
    return f"{source}, a file the input model reads its weights from"
