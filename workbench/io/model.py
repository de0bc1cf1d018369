"""Loading a user's ONNX model safely, and naming its nodes.

The user's file is only ever read. Everything derived from it (conversions,
fixes) lives in memory or in a work directory of the workbench's own.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path

import onnx
from google.protobuf.message import DecodeError

from workbench.errors import WorkbenchError
from workbench.io.wire import parse_model_file

# Opsets this onnx/onnxruntime pair can run; a newer model gets a clear error, not a crash later.
MAX_SUPPORTED_OPSET = onnx.defs.onnx_opset_version()


@dataclass(frozen=True)
class Model:
    """An ONNX model the workbench works on, with how it came to be.

    `proto` is the workbench's own copy: every node has a unique, stable name. Its large
    weights may stay in files (external data, or the .onnx file itself), memory-mapped when
    read: use `to_proto()` for a complete ModelProto to hand to ONNX Runtime or onnx.save.
    `origin` says where it came from ("file", "fp16 conversion", ...).
    """

    proto: onnx.ModelProto = field(repr=False)
    name: str
    origin: str = "file"
    path: Path | None = None
    # Initializer values already decoded (name -> array), shared by whoever reads them next:
    # a 400 MB model's weights are then copied out of protobuf once, not once per reader.
    arrays: dict = field(default_factory=dict, repr=False, compare=False)
    # The folder of the main graph's external-data files: those weights are memory-mapped when
    # read (workbench.ir.graph), never loaded into the proto, so a 4 GB model is not held twice.
    data_dir: Path | None = None
    # Every file the model was read from (the .onnx and its external data): never written to.
    source_files: tuple[Path, ...] = ()

    @property
    def graph(self) -> onnx.GraphProto:
        return self.proto.graph

    @property
    def opset(self) -> int:
        return default_opset(self.proto)

    def to_proto(self) -> onnx.ModelProto:
        """A complete ModelProto, for ONNX Runtime or onnx.save: `proto` may keep large weights in files."""
        return full_proto(self)

    def with_proto(self, proto: onnx.ModelProto, origin: str, name: str | None = None, arrays: dict | None = None) -> "Model":
        """A derived model; it keeps `data_dir` and `source_files`, since a copied proto still points to the same external data."""
        return Model(proto=proto, name=name or self.name, origin=origin, path=None, arrays=arrays or {}, data_dir=self.data_dir,
                     source_files=self.source_files)


def model_bytes(model: Model) -> int:
    """The size of the complete model, weights kept in files included, without reading them."""
    external = 0
    for tensor in model.graph.initializer:
        if tensor.data_location == onnx.TensorProto.EXTERNAL:
            external += int(next((e.value for e in tensor.external_data if e.key == "length"), 0))
    return model.proto.ByteSize() + external


def full_proto(model: Model) -> onnx.ModelProto:
    """`model.proto` with its external data read in (a copy), for ONNX Runtime sessions and saving."""
    from onnx.external_data_helper import (
        load_external_data_for_model,
        uses_external_data,
    )

    if model.data_dir is None or not any(uses_external_data(t) for t in model.graph.initializer):
        return model.proto
    proto = onnx.ModelProto()
    proto.CopyFrom(model.proto)
    load_external_data_for_model(proto, str(model.data_dir))
    return proto


def default_opset(proto: onnx.ModelProto) -> int:
    for opset in proto.opset_import:
        if opset.domain in ("", "ai.onnx"):
            return opset.version
    return MAX_SUPPORTED_OPSET


def load_model(source: "str | Path | onnx.ModelProto | Model", name: str | None = None) -> Model:
    """Load a model from a path (external data beside it is read too) or take a ModelProto.

    A ModelProto passed in is copied, never modified.
    """
    if isinstance(source, Model):
        return source
    if isinstance(source, onnx.ModelProto):
        proto = onnx.ModelProto()
        proto.CopyFrom(source)
        path, files = None, set()
        default_name = source.graph.name or "model"
        _refuse_unloaded_external_data(proto)
    else:
        path = Path(source)
        proto, files = _read_model_file(path)
        default_name = path.stem
    _check_structure(proto, str(path) if path else "the model")
    name_nodes(proto.graph)
    return Model(proto=proto, name=name or default_name, origin="file", path=path, data_dir=path.parent if path else None,
                 source_files=tuple(sorted({path, *files})) if path else ())


def _read_model_file(path: Path) -> tuple[onnx.ModelProto, set[Path]]:
    if not path.exists():
        raise WorkbenchError(f"{path}: no such file; check the path to the .onnx model.")
    if path.is_dir():
        raise WorkbenchError(f"{path} is a directory; give the path to the .onnx file inside it.")
    if path.stat().st_size == 0:
        raise WorkbenchError(f"{path} is empty; re-export or copy the model again.")
    try:
        proto = parse_model_file(path)  # large weights stay in the file, memory-mapped when read
    except (DecodeError, ValueError):
        raise WorkbenchError(
            f"{path} is not a readable ONNX model (truncated or not ONNX at all); "
            "re-export it or copy the complete file."
        ) from None
    if not proto.HasField("graph"):
        raise WorkbenchError(f"{path} holds no ONNX graph; is it really an .onnx model file?")
    return proto, _load_external_data(proto, path)


def _load_external_data(proto: onnx.ModelProto, path: Path) -> set[Path]:
    """Check every external-data reference, read subgraphs' weights in; returns the files the model reads."""
    from onnx.external_data_helper import (
        load_external_data_for_tensor,
        uses_external_data,
    )

    tensors = [t for t in _all_initializers(proto.graph) if uses_external_data(t)]
    files = {_check_external_data(tensor, path) for tensor in tensors}
    # Main-graph weights stay in their files (memory-mapped when read); If/Loop/Scan bodies are
    # converted and run as protos, so theirs are read in now.
    for node in proto.graph.node:
        for sub in subgraphs(node):
            for tensor in _all_initializers(sub):
                if uses_external_data(tensor):
                    try:
                        load_external_data_for_tensor(tensor, str(path.parent))
                    except (OSError, ValueError) as exc:
                        raise WorkbenchError(f"{path}: cannot read its external data ({exc}); re-save the model.") from None
    return files


def _check_external_data(tensor: onnx.TensorProto, path: Path) -> Path:
    """The file a tensor's external data names: inside the model's folder, existing, long enough for it."""
    info = {entry.key: entry.value for entry in tensor.external_data}
    location = info.get("location", "")
    if location == path.name:  # the model file itself (workbench.io.wire describes its in-file weights so)
        return path
    data = external_data_path(path.parent, location, tensor.name, where=str(path))
    if not location or not data.is_file():
        raise WorkbenchError(
            f"{path}: external data file '{location}' for tensor '{tensor.name}' is missing; "
            f"put it next to the model in {path.parent}."
        )
    end = int(info.get("offset", 0)) + int(info.get("length", 0))
    if end > data.stat().st_size:
        raise WorkbenchError(
            f"{path}: external data file '{location}' ends before tensor '{tensor.name}' does "
            f"({data.stat().st_size} of {end} bytes); the file is truncated: copy it again."
        )
    return data


def external_data_path(folder: Path, location: str, tensor: str, where: str = "the model") -> Path:
    """`folder / location`, refused unless it resolves (links followed) inside `folder`.

    A model names its weights' file itself: `../../etc/passwd` or `/home/me/.ssh/id_rsa` would
    otherwise be read as weights, and copied into every model the workbench writes. onnx.load
    and ONNX Runtime refuse such models the same way.
    """
    base = folder.resolve()
    target = (folder / location).resolve()
    if Path(location).is_absolute() or not target.is_relative_to(base):
        raise WorkbenchError(
            f"{where}: tensor '{tensor}' names external data '{location}', which is outside the model's folder "
            f"{base}; external data must sit in the model's folder: re-save the model with its weights beside it."
        )
    return target


def _refuse_unloaded_external_data(proto: onnx.ModelProto) -> None:
    """A ModelProto in memory whose weights still point to a file: no directory to read them from."""
    from onnx.external_data_helper import uses_external_data

    tensor = next((t for t in _all_initializers(proto.graph) if uses_external_data(t)), None)
    if tensor is not None:
        raise WorkbenchError(
            f"tensor '{tensor.name}' of the model keeps its data in an external file; pass the model's path "
            "instead, or load it with onnx.load(path) (which reads the external data) before passing it."
        )


def _all_initializers(graph: onnx.GraphProto):
    yield from graph.initializer
    for node in graph.node:
        for attr in node.attribute:
            for sub in _subgraphs_of(attr):
                yield from _all_initializers(sub)


def _subgraphs_of(attr: onnx.AttributeProto) -> list[onnx.GraphProto]:
    if attr.type == onnx.AttributeProto.GRAPH:
        return [attr.g]
    if attr.type == onnx.AttributeProto.GRAPHS:
        return list(attr.graphs)
    return []


def subgraphs(node: onnx.NodeProto) -> list[onnx.GraphProto]:
    """The bodies of an If/Loop/Scan node (empty for other ops)."""
    return [g for attr in node.attribute for g in _subgraphs_of(attr)]


def _check_structure(proto: onnx.ModelProto, where: str) -> None:
    """Cheap checks that catch truncated or hand-broken models before any session does."""
    opset = default_opset(proto)
    if opset > MAX_SUPPORTED_OPSET:
        raise WorkbenchError(
            f"{where} uses opset {opset}, newer than the {MAX_SUPPORTED_OPSET} this installation "
            "supports; export with an older opset or upgrade onnx and onnxruntime."
        )
    graph = proto.graph
    if not graph.node:
        raise WorkbenchError(f"{where} has no nodes; there is nothing to diagnose.")
    if not graph.output:
        raise WorkbenchError(f"{where} has no graph outputs; the file may be truncated.")
    _check_single_producers(graph, where)
    known = {i.name for i in graph.input} | {i.name for i in graph.initializer} | {""}
    for node in graph.node:
        known.update(node.output)
    missing = [o.name for o in graph.output if o.name not in known]
    if missing:
        raise WorkbenchError(
            f"{where}: graph output '{missing[0]}' is produced by no node; the file may be truncated."
        )


def _check_single_producers(graph: onnx.GraphProto, where: str) -> None:
    """Each graph output listed once, each tensor written once: ONNX's rules, which tools rely on."""
    outputs = [o.name for o in graph.output]
    twice = next((name for name in outputs if outputs.count(name) > 1), None)
    if twice is not None:
        raise WorkbenchError(f"{where}: graph output '{twice}' is listed twice; each output must be listed once.")
    producer = {i.name: "a graph input" for i in graph.input} | {t.name: "an initializer" for t in graph.initializer}
    for index, node in enumerate(graph.node):
        for name in node.output:
            if name and name in producer:
                raise WorkbenchError(
                    f"{where}: tensor '{name}' is produced by {producer[name]} and again by node "
                    f"{index} ({node.op_type}); each tensor must have one producer: re-export the model."
                )
            producer[name] = f"node {index} ({node.op_type})"


def name_nodes(graph: onnx.GraphProto, prefix: str = "") -> None:
    """Give every node a unique, stable name: unnamed ones get `<op>_<index>`, duplicates a suffix.

    Stable means the same model always gets the same names, so a name in a report
    can be found again in the graph viewer and on the command line.
    """
    seen: set[str] = set()
    for index, node in enumerate(graph.node):
        base = node.name or f"{prefix}{node.op_type}_{index}"
        name, k = base, 2
        while name in seen:
            name, k = f"{base}__{k}", k + 1
        node.name = name
        seen.add(name)
        for sub in subgraphs(node):
            name_nodes(sub, prefix=f"{name}/")


def file_digest(path: Path) -> str:
    """sha256 of a file, to show (and test) that the user's files are left untouched."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
