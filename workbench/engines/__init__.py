"""Engines: how a model's tensors are computed, behind one small interface.

- `emulate` (the default): a low-precision engine as a GPU runs one, FP32 arithmetic with every
  FP16/BF16/FP8 tensor rounded where it is stored; one ONNX Runtime session for the whole graph.
- `ort-kernels`: ONNX Runtime's own FP16 kernels, one single-node session per node, so that every
  node boundary is an FP16 tensor (the workbench's engine before `emulate`).
- `runtime`: ONNX Runtime as it runs the model, fusions and its FP32 fallbacks included.

An engine is bound to one model. `capture(feed)` returns every tensor of the model under its own
names; `run_node(node, read)` runs one node on the inputs `read(name)` gives, in the engine's
arithmetic. The diagnosis, the verification and the variants use nothing else.
"""

from __future__ import annotations

from typing import Callable, Protocol

import numpy as np
import onnx

from workbench.errors import WorkbenchError
from workbench.io.model import Model
from workbench.ir.graph import GraphIndex

Values = dict[str, np.ndarray]
ENGINES = ("emulate", "ort-kernels", "runtime")


class Engine(Protocol):
    name: str
    runs: int  # forward passes and node runs so far

    @property
    def sessions_built(self) -> int: ...

    @property
    def node_runner(self): ...  # has run(node, read): for the harm test's partial runs

    def capture(self, feed: Values, on_node: Callable[[onnx.NodeProto, Values], None] | None = None) -> Values: ...

    def run_node(self, node: onnx.NodeProto, read: Callable[[str], np.ndarray]) -> list[np.ndarray | None]: ...


def make_engine(name: str, model: Model, index: GraphIndex | None = None, providers=("CPUExecutionProvider",)) -> Engine:
    from workbench.engines.emulate import EmulatingEngine
    from workbench.engines.kernels import OrtKernelEngine, RuntimeEngine

    engines = {"emulate": EmulatingEngine, "ort-kernels": OrtKernelEngine, "runtime": RuntimeEngine}
    if name not in engines:
        raise WorkbenchError(f"unknown engine '{name}'; use one of {', '.join(ENGINES)}.")
    return engines[name](model, index or GraphIndex.of(model), providers)


ENGINE_LABELS = {
    "emulate": "emulated {label}: FP32 arithmetic, {label} storage",
    "ort-kernels": "ONNX Runtime {label} kernels, node by node",
    "runtime": "ONNX Runtime as it runs the model",
}
