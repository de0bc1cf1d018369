"""What the node inspector shows, as plain data: tensor statistics of both runs, attributes, constants."""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import numpy as np
import onnx

from workbench.compare.diff import TensorDiff, tensor_diff
from workbench.diagnosis.result import Diagnosis
from workbench.ir.graph import GraphIndex

WORST_ELEMENTS = 5
SHOWN_CONSTANT_ELEMENTS = 8


@dataclass(frozen=True)
class TensorStats:
    shape: tuple[int, ...]
    dtype: str
    min: float | None  # over finite elements; None when there are none
    max: float | None
    mean: float | None
    nan: int
    posinf: int
    neginf: int

    @property
    def nonfinite(self) -> int:
        return self.nan + self.posinf + self.neginf


@dataclass(frozen=True)
class WorstElement:
    index: tuple[int, ...]
    reference: float
    candidate: float


@dataclass(frozen=True)
class TensorPair:
    """One tensor a node reads or writes, in the reference (FP32) run and in the candidate run."""

    role: str  # "input" | "output"
    name: str  # candidate tensor name
    reference_name: str | None
    constant: bool
    reference: np.ndarray | None
    candidate: np.ndarray | None

    @cached_property
    def reference_stats(self) -> TensorStats | None:
        return tensor_stats(self.reference) if self.reference is not None else None

    @cached_property
    def candidate_stats(self) -> TensorStats | None:
        return tensor_stats(self.candidate) if self.candidate is not None else None

    @cached_property
    def diff(self) -> TensorDiff | None:
        if self.reference is None or self.candidate is None:
            return None
        return tensor_diff(self.reference, self.candidate)

    @cached_property
    def worst(self) -> list[WorstElement]:
        if self.reference is None or self.candidate is None:
            return []
        return worst_elements(self.reference, self.candidate)

    @property
    def is_float(self) -> bool:
        arrays = [a for a in (self.reference, self.candidate) if a is not None]
        return bool(arrays) and all(a.dtype.kind == "f" for a in arrays)


@dataclass(frozen=True)
class NodeDetail:
    name: str
    op_type: str
    attributes: dict[str, str]
    tensors: tuple[TensorPair, ...]
    finding: str | None  # "root" | "warning" | None

    @property
    def constants(self) -> tuple[TensorPair, ...]:
        return tuple(t for t in self.tensors if t.constant)


def tensor_stats(values: np.ndarray) -> TensorStats:
    if values.dtype.kind not in "fc":
        data = values.astype(np.float64) if values.dtype.kind in "iub" else None
        nan = posinf = neginf = 0
        finite = data
    else:
        data = values.astype(np.float64)
        nan = int(np.count_nonzero(np.isnan(data)))
        posinf = int(np.count_nonzero(data == np.inf))
        neginf = int(np.count_nonzero(data == -np.inf))
        finite = data[np.isfinite(data)]
    has = finite is not None and finite.size > 0
    return TensorStats(
        shape=tuple(values.shape),
        dtype=str(values.dtype),
        min=float(finite.min()) if has else None,
        max=float(finite.max()) if has else None,
        mean=float(finite.mean()) if has else None,
        nan=nan,
        posinf=posinf,
        neginf=neginf,
    )


def worst_elements(reference: np.ndarray, candidate: np.ndarray, count: int = WORST_ELEMENTS) -> list[WorstElement]:
    """The elements that differ most; an element non-finite in the candidate only counts as the worst."""
    if reference.shape != candidate.shape or reference.dtype.kind not in "fiub" or candidate.dtype.kind not in "fiub":
        return []
    ref = reference.astype(np.float64).ravel()
    cand = candidate.astype(np.float64).ravel()
    with np.errstate(invalid="ignore", over="ignore"):
        delta = np.abs(cand - ref)
    broken = np.isfinite(ref) & ~np.isfinite(cand)
    delta = np.where(broken | np.isnan(delta), np.inf, delta)
    delta = np.where(np.isnan(ref) & np.isnan(cand), 0.0, delta)
    order = np.argsort(-delta, kind="stable")[:count]
    return [
        WorstElement(tuple(int(i) for i in np.unravel_index(k, reference.shape)), float(ref[k]), float(cand[k]))
        for k in order
        if delta[k] > 0
    ]


class NodeCatalog:
    """A diagnosis with its two graphs indexed once: the inspector's source of node details."""

    def __init__(self, diagnosis: Diagnosis):
        self.diagnosis = diagnosis
        self.reference_index = getattr(diagnosis, "reference_index", None) or GraphIndex(
            diagnosis.reference.graph, list(diagnosis.reference.proto.opset_import))
        self.candidate_index = GraphIndex(diagnosis.candidate.graph, list(diagnosis.candidate.proto.opset_import))

    def nodes(self) -> list[tuple[str, str]]:
        """Every candidate node in graph order, as (name, op_type)."""
        return [(node.name, node.op_type) for node in self.candidate_index.nodes]

    def detail(self, name: str) -> NodeDetail:
        node = self.candidate_index.node_by_name.get(name)
        if node is None:
            raise KeyError(f"no node named '{name}' in {self.diagnosis.candidate.name}")
        tensors = [self._pair("input", t) for t in node.input if t]
        tensors += [self._pair("output", t) for t in node.output if t]
        return NodeDetail(
            name=node.name,
            op_type=node.op_type,
            attributes={a.name: _attribute_text(a) for a in node.attribute},
            tensors=tuple(tensors),
            finding=_finding_label(self.diagnosis, name),
        )

    def _pair(self, role: str, name: str) -> TensorPair:
        reference_name = self.diagnosis.alignment.get(name)
        return TensorPair(
            role=role,
            name=name,
            reference_name=reference_name,
            constant=self.candidate_index.is_constant(name),
            reference=_value(self.diagnosis.reference_values, self.reference_index, reference_name),
            candidate=_value(self.diagnosis.candidate_values, self.candidate_index, name),
        )


def constant_text(values: np.ndarray | None) -> str:
    """A constant's values in full when short, else its first few."""
    if values is None:
        return "not captured"
    flat = values.ravel()
    shown = ", ".join(f"{v:.8g}" if values.dtype.kind == "f" else str(v) for v in flat[:SHOWN_CONSTANT_ELEMENTS])
    more = f", … ({flat.size} values)" if flat.size > SHOWN_CONSTANT_ELEMENTS else ""
    return f"[{shown}{more}]"


def _value(values: dict[str, np.ndarray], index: GraphIndex, name: str | None) -> np.ndarray | None:
    if name is None:
        return None
    if name in values:
        return values[name]
    if name in index.initializers:
        return index.initializer_array(name)
    return None


def _attribute_text(attribute: onnx.AttributeProto) -> str:
    if attribute.type in (onnx.AttributeProto.GRAPH, onnx.AttributeProto.GRAPHS):
        return "subgraph"
    value = onnx.helper.get_attribute_value(attribute)
    if isinstance(value, onnx.TensorProto):
        return constant_text(onnx.numpy_helper.to_array(value))
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    if isinstance(value, list):
        return str([v.decode("utf-8", "replace") if isinstance(v, bytes) else v for v in value])
    return str(value)


def _finding_label(diagnosis: Diagnosis, name: str) -> str | None:
    if any(f.node == name for f in diagnosis.roots):
        return "root"
    if any(f.node == name for f in diagnosis.warnings):
        return "warning"
    return None
