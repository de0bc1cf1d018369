"""The two engines built on ONNX Runtime's own kernels: node by node (`ort-kernels`), and as ORT runs it (`runtime`)."""

from __future__ import annotations

from typing import Callable

import onnx

from workbench.engines.node_by_node import NodeRunner, Values, replay, run_runtime
from workbench.errors import WorkbenchError
from workbench.io.model import Model, full_proto
from workbench.ir.graph import GraphIndex


class OrtKernelEngine:
    """Each node in its own single-node ORT session: a real FP16 tensor at every node boundary, ORT's FP16 kernels."""

    name = "ort-kernels"

    def __init__(self, model: Model, index: GraphIndex, providers=("CPUExecutionProvider",)):
        self.model, self.index = model, index
        _refuse_formats_without_kernels(index, model.name)
        self.node_runner = NodeRunner(model.proto.opset_import, model.proto.ir_version, list(providers))

    @property
    def runs(self) -> int:
        return self.node_runner.runs

    @property
    def sessions_built(self) -> int:
        return self.node_runner.sessions_built

    def capture(self, feed: Values, on_node: Callable | None = None) -> Values:
        return replay(self.index, self.node_runner, dict(feed), on_node=on_node)

    def run_node(self, node: onnx.NodeProto, read) -> list:
        return self.node_runner.run(node, read)


class RuntimeEngine(OrtKernelEngine):
    """The model as ONNX Runtime runs it: outputs from the unmodified model, intermediates from a marked copy.

    Single nodes (a suspect's own error) still run in single-node sessions of ORT's kernels.
    """

    name = "runtime"

    def __init__(self, model: Model, index: GraphIndex, providers=("CPUExecutionProvider",)):
        super().__init__(model, index, providers)
        self.providers = list(providers)
        self.whole_runs = 0

    @property
    def runs(self) -> int:
        return self.node_runner.runs + self.whole_runs

    def capture(self, feed: Values, on_node: Callable | None = None) -> Values:
        outputs, intermediates = run_runtime(full_proto(self.model), self.index, feed, self.providers)
        self.whole_runs += 2
        return {**feed, **intermediates, **outputs}


def _refuse_formats_without_kernels(index: GraphIndex, name: str) -> None:
    """ORT's CPU provider computes no BF16 or FP8 (and its Python API cannot return BF16): say so up front."""
    from workbench.formats import BY_ELEM_TYPE, FP16

    formats = {BY_ELEM_TYPE[t].label for t in index.elem_types.values() if t in BY_ELEM_TYPE and BY_ELEM_TYPE[t] is not FP16}
    if formats:
        raise WorkbenchError(
            f"{name} stores tensors in {', '.join(sorted(formats))}, which ONNX Runtime's CPU provider cannot compute; "
            "use the emulating engine (--engine emulate, the default) for it."
        )
