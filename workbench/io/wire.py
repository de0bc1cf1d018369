"""Reading an .onnx file without copying its weights: they stay in the file, memory-mapped.

Parsing a model with protobuf copies every weight into the message, and reading one back
(`tensor.raw_data`) copies it again: for BERT-base that is 0.7 s and two extra copies of
415 MB. Here the file is memory-mapped and scanned at the protobuf wire level (no library
exposes where a field's bytes sit in the buffer, hence this small reader); each large
`raw_data` is left out of the parsed message and described instead as external data that
lives in the model file itself, at its offset. Everything that reads weights already handles
external data (memory maps for the replay, `full_proto()` for ONNX Runtime and saving), so
the weights are never copied until a whole model must be written out.
"""

from __future__ import annotations

import mmap
from pathlib import Path

import onnx

_MODEL_GRAPH, _GRAPH_INITIALIZER = 7, 5
_TENSOR_RAW_DATA, _TENSOR_EXTERNAL_DATA, _TENSOR_DATA_LOCATION = 9, 13, 14
_LENGTH_DELIMITED = 2
# Smaller weights stay in the message: shape inference reads small constants (Reshape targets).
MIN_MAPPED_BYTES = 4096


def parse_model_file(path: Path) -> onnx.ModelProto:
    """The model at `path` with its large main-graph weights described as external data in `path` itself."""
    with open(path, "rb") as handle, mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ) as data:
        with memoryview(data) as view:  # released before the map closes; readers map the weights again
            return _parse(view, path.name)


def _parse(buffer: memoryview, location: str) -> onnx.ModelProto:
    fields = list(_fields(buffer, 0, len(buffer)))
    graph = next((f for f in fields if f[0] == _MODEL_GRAPH and f[1] == _LENGTH_DELIMITED), None)
    if graph is None:
        return onnx.ModelProto.FromString(bytes(buffer))
    _, _, graph_start, graph_end, _ = graph
    graph_fields = list(_fields(buffer, graph_start, graph_end))
    initializers = [f for f in graph_fields if f[0] == _GRAPH_INITIALIZER and f[1] == _LENGTH_DELIMITED]
    initializer_starts = {f[4] for f in initializers}
    kept_graph = b"".join(bytes(buffer[f[4]:f[3]]) for f in graph_fields if f[4] not in initializer_starts)
    model_bytes = b"".join(
        _field_bytes(_MODEL_GRAPH, kept_graph) if f is graph else bytes(buffer[f[4]:f[3]]) for f in fields
    )
    proto = onnx.ModelProto.FromString(model_bytes)
    for _, _, start, end, _ in initializers:
        proto.graph.initializer.append(_tensor(buffer, start, end, location))
    return proto


def _tensor(buffer: memoryview, start: int, end: int, location: str) -> onnx.TensorProto:
    """One initializer; a large raw_data becomes external data at its offset in the model file."""
    fields = list(_fields(buffer, start, end))
    raw = next((f for f in fields if f[0] == _TENSOR_RAW_DATA and f[1] == _LENGTH_DELIMITED), None)
    already_external = any(f[0] in (_TENSOR_EXTERNAL_DATA, _TENSOR_DATA_LOCATION) for f in fields)
    if raw is None or already_external or raw[3] - raw[2] < MIN_MAPPED_BYTES:
        return onnx.TensorProto.FromString(bytes(buffer[start:end]))
    tensor = onnx.TensorProto.FromString(b"".join(bytes(buffer[f[4]:f[3]]) for f in fields if f is not raw))
    tensor.data_location = onnx.TensorProto.EXTERNAL
    for key, value in (("location", location), ("offset", str(raw[2])), ("length", str(raw[3] - raw[2]))):
        entry = tensor.external_data.add()
        entry.key, entry.value = key, value
    return tensor


def _fields(buffer: memoryview, start: int, end: int):
    """(field number, wire type, value start, value end, field start) of each field in buffer[start:end]."""
    position = start
    while position < end:
        field_start = position
        key, position = _varint(buffer, position)
        number, wire_type = key >> 3, key & 7
        if wire_type == 0:
            _, position = _varint(buffer, position)
            value_start = value_end = position
        elif wire_type == 1:
            value_start, value_end = position, position + 8
        elif wire_type == 2:
            length, position = _varint(buffer, position)
            value_start, value_end = position, position + length
        elif wire_type == 5:
            value_start, value_end = position, position + 4
        else:
            raise ValueError(f"unsupported protobuf wire type {wire_type}")
        if value_end > end:
            raise ValueError("truncated protobuf field")
        position = value_end
        yield number, wire_type, value_start, value_end, field_start


def _varint(buffer: memoryview, position: int) -> tuple[int, int]:
    result, shift = 0, 0
    while True:
        if position >= len(buffer):
            raise ValueError("truncated protobuf varint")
        byte = buffer[position]
        position += 1
        result |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return result, position
        shift += 7


def _field_bytes(number: int, value: bytes) -> bytes:
    return _encode_varint(number << 3 | _LENGTH_DELIMITED) + _encode_varint(len(value)) + value


def _encode_varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        out.append(byte | (0x80 if value else 0))
        if not value:
            return bytes(out)
