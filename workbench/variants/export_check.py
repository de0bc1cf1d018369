"""Export check: does an ONNX export of a PyTorch model compute what the model computes, at every shape?

    model = export_check.export(module, {"input_ids": ids, "attention_mask": mask}, "model.onnx")
    check = export_check.check_export(module, model, example_inputs, shapes=[(1, 8), (2, 16), (3, 34)])
    check.ok, check.baked, check.runs, check.to_dict(), check.summary()

An exporter traces the model once, on the example ("dummy") input. Every size the Python code reads as
a plain int (`x.view(2, 34, 16, 64)`, `x.size(1)` turned into a number) becomes a constant of the graph,
even when the inputs are declared dynamic: the model then runs only at the dummy's shape, or runs
elsewhere and returns a tensor of the wrong shape. The check runs the ONNX model (ONNX Runtime, CPU)
and the PyTorch module on the same inputs at several (batch, sequence) shapes, reports rel-L2 per
output per shape, and names the node that holds the dummy's size: a Reshape/Expand/Tile/... whose
constant shape input holds the dummy's batch or sequence length, confirmed by a failure (ONNX Runtime
names the node in its error) or a mismatch at shapes where that size changes.

torch and transformers are imported only inside the functions that need them: the rest of the
workbench imports without torch.
"""

from __future__ import annotations

import argparse
import json
import re
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np
import onnx
from onnx import numpy_helper

from workbench.compare.diff import Tolerance, tensor_diff
from workbench.errors import WorkbenchError
from workbench.io.model import Model, full_proto, load_model
from workbench.logs import muted
from workbench.render.json import finite_or_none

Feed = dict[str, np.ndarray]
DEFAULT_SHAPES = ((1, 8), (2, 16), (3, 34))
# An FP32 export computes the same function as PyTorch with the float operations in another order:
# per output, rel-L2 of 1e-7 to 1e-6. 1e-4 leaves a factor 100 and still catches a wrong graph.
EXPORT_TOLERANCE = Tolerance(rel_l2=1e-4)
# Ops whose (second) input is a shape or a count read from a tensor: a constant there is a size fixed at export.
SHAPE_INPUTS = {"Reshape": 1, "Expand": 1, "Tile": 1, "ConstantOfShape": 0, "Resize": 3, "Slice": 2}


# ---------------------------------------------------------------- export


def export(module, example_inputs: Feed, path=None, dynamic: bool = True, exporter: str = "dynamo",
           output_names: Sequence[str] | None = None, opset: int = 17) -> onnx.ModelProto:
    """Export `module(**example_inputs)` to ONNX; axis 0 (batch) and 1 (sequence) of every input dynamic.

    `exporter`: "dynamo" (torch.export, the default of torch.onnx.export) or "legacy" (TorchScript
    tracing, `dynamo=False`). Written to `path` when given. Sizes the module's code reads as Python
    ints are still fixed: that is what `check_export` finds.
    """
    import torch

    if exporter not in ("dynamo", "legacy"):
        raise WorkbenchError(f"exporter '{exporter}' is not 'dynamo' or 'legacy'.")
    if not example_inputs:
        raise WorkbenchError("example_inputs is empty; give the module's inputs by name, e.g. {'input_ids': ids}.")
    feed = _as_feed(example_inputs)
    kwargs = {k: torch.from_numpy(v) for k, v in feed.items()}
    module = module.eval()
    names = list(output_names) if output_names else None
    with warnings.catch_warnings(), torch.no_grad(), muted("torch.onnx"):  # the dynamo exporter logs notes at WARNING
        warnings.simplefilter("ignore")  # the exporters' notes (axis names, TracerWarning, deprecations)
        try:
            if exporter == "dynamo":
                proto = _export_dynamo(torch, module, kwargs, dynamic, names, opset)
            else:
                proto = _export_legacy(torch, module, kwargs, dynamic, names, opset)
        except WorkbenchError:
            raise
        except Exception as exc:
            raise WorkbenchError(f"torch.onnx.export ({exporter}) failed: {_first_line(exc)}") from None
    _clean(proto)
    if path is not None:
        from workbench.io.save import check_output, write_atomically

        path = Path(path)
        check_output([path], ())
        write_atomically(path, lambda folder: onnx.save(proto, str(folder / path.name)))
    return proto


def _export_dynamo(torch, module, kwargs, dynamic, names, opset) -> onnx.ModelProto:
    shapes = None
    if dynamic:
        batch, seq = torch.export.Dim("batch"), torch.export.Dim("sequence")
        shapes = {k: ({0: batch, 1: seq} if v.dim() >= 2 else {0: batch}) for k, v in kwargs.items()}
    program = torch.onnx.export(module, (), kwargs=kwargs, dynamo=True, verbose=False, dynamic_shapes=shapes,
                                input_names=list(kwargs), output_names=names, opset_version=max(opset, 18))
    return program.model_proto


def _export_legacy(torch, module, kwargs, dynamic, names, opset) -> onnx.ModelProto:
    import io

    axes = None
    if dynamic:
        axes = {k: ({0: "batch", 1: "sequence"} if v.dim() >= 2 else {0: "batch"}) for k, v in kwargs.items()}
    outputs = _flatten(module(**kwargs))
    names = names or [f"output_{i}" for i in range(len(outputs))]
    for name in names:
        if axes is not None:
            axes[name] = {0: "batch", 1: "sequence"}
    buffer = io.BytesIO()
    torch.onnx.export(module, (), buffer, kwargs=kwargs, dynamo=False, input_names=list(kwargs), output_names=names,
                      dynamic_axes=axes, opset_version=opset)
    return onnx.load_from_string(buffer.getvalue())


def _clean(proto: onnx.ModelProto) -> None:
    """Drop per-node metadata (stack traces) so node names and the file stay readable."""
    for node in proto.graph.node:
        del node.metadata_props[:]
        node.doc_string = ""


def _first_line(exc: Exception) -> str:
    text = " ".join(str(exc).split())
    return (text[:400] + "...") if len(text) > 400 else text or type(exc).__name__


# ---------------------------------------------------------------- baked sizes


@dataclass(frozen=True)
class BakedShape:
    """A node (or graph input) whose constant shape holds sizes of the dummy input."""

    node: str
    op_type: str  # "input" for a graph input with a fixed axis
    constant: str  # the constant tensor (initializer or Constant output) holding the sizes; "" for an input
    values: tuple[int, ...]  # the constant's values (an input's shape, -1 for a named axis)
    sizes: tuple[tuple[str, int], ...]  # (("batch", 2), ("sequence", 34)): the dummy's sizes found in it
    confirmed: bool = False  # a failure or mismatch at a shape where one of those sizes changed
    evidence: str = ""  # the failing shape and what happened

    def fixed_text(self) -> str:
        words = {"batch": "batch size", "sequence": "length"}
        return " and ".join(f"{words[axis]} {size}" for axis, size in self.sizes)

    def explanation(self) -> str:
        if self.op_type == "input":
            shape = [v if v >= 0 else "?" for v in self.values]
            head = f"exported with a fixed {self.fixed_text()}: input `{self.node}` has the fixed shape {shape} in the graph"
        else:
            head = (f"exported with a fixed {self.fixed_text()}: {self.op_type} `{self.node}` takes its shape from "
                    f"constant `{self.constant}` = {list(self.values)}")
        if self.evidence:
            return f"{head}; {self.evidence}"
        return head + " (the same number as the dummy's, but every shape checked matched: likely a coincidence)"

    def to_dict(self) -> dict:
        return {"node": self.node, "op_type": self.op_type, "constant": self.constant or None,
                "values": list(self.values), "sizes": dict(self.sizes), "confirmed": self.confirmed,
                "explanation": self.explanation()}


def find_baked_shapes(model, example_inputs: Feed) -> list[BakedShape]:
    """Nodes whose constant shape input holds the dummy's batch size or sequence length (suspects, unconfirmed).

    A constant that merely equals the dummy's size (a head count of 2 with a batch of 2) is a suspect
    too: `check_export` confirms or clears each one by running other shapes. Pick a dummy whose sizes
    differ from the model's own (34 rather than 8) for fewer suspects.
    """
    model = load_model(model)
    sizes = _dummy_sizes(_as_feed(example_inputs))
    constants = _constants(model.graph)
    producers = {out: node for node in model.graph.node for out in node.output}
    found = []
    for node in model.graph.node:
        position = SHAPE_INPUTS.get(node.op_type)
        if position is None or len(node.input) <= position or not node.input[position]:
            continue
        for name, values in _constant_parts(node.input[position], constants, producers):
            held = tuple((axis, size) for axis, size in sizes.items() if size in values)
            if held:
                found.append(BakedShape(node.name, node.op_type, name, tuple(int(v) for v in values), held))
    return found


def fixed_inputs(model, example_inputs: Feed) -> list[BakedShape]:
    """Graph inputs whose batch or sequence axis is a number equal to the dummy's, not a named (dynamic) axis.

    torch.export specialises a dynamic axis when the code reads its size as a Python int: the input
    itself is then fixed, and ONNX Runtime refuses any other shape before running a node.
    """
    model = load_model(model)
    feed, sizes = _as_feed(example_inputs), _dummy_sizes(_as_feed(example_inputs))
    found = []
    for value in model.graph.input:
        if value.name not in feed or not value.type.HasField("tensor_type"):
            continue
        dims = value.type.tensor_type.shape.dim
        values = tuple(int(d.dim_value) if d.HasField("dim_value") else -1 for d in dims)
        held = tuple((axis, sizes[axis]) for position, axis in enumerate(("batch", "sequence"))
                     if position < len(dims) and dims[position].HasField("dim_value")
                     and dims[position].dim_value == sizes.get(axis))
        if held:
            found.append(BakedShape(value.name, "input", "", values, held))
    return found


def _dummy_sizes(feed: Feed) -> dict[str, int]:
    """{"batch": b, "sequence": s} from the inputs of rank >= 2 (axis 0 and 1)."""
    arrays = [a for a in feed.values() if a.ndim >= 2] or [a for a in feed.values() if a.ndim >= 1]
    if not arrays:
        return {}
    sizes = {"batch": int(arrays[0].shape[0])}
    if arrays[0].ndim >= 2:
        sizes["sequence"] = int(arrays[0].shape[1])
    return sizes


def _constants(graph: onnx.GraphProto) -> dict[str, np.ndarray]:
    small_ints = {onnx.TensorProto.INT64, onnx.TensorProto.INT32, onnx.TensorProto.INT16, onnx.TensorProto.INT8,
                  onnx.TensorProto.UINT8}
    # Only small integer initializers can be shapes: the weights (maybe memory-mapped) are never read here.
    values = {t.name: t for t in graph.initializer if t.data_type in small_ints and int(np.prod(t.dims)) <= 16}
    for node in graph.node:
        if node.op_type == "Constant":
            for attr in node.attribute:
                if attr.name == "value":
                    values[node.output[0]] = attr.t
                elif attr.name in ("value_ints", "value_int"):
                    values[node.output[0]] = np.asarray(list(attr.ints) if attr.name == "value_ints" else [attr.i])
    out = {}
    for name, value in values.items():
        array = value if isinstance(value, np.ndarray) else numpy_helper.to_array(value)
        if array.dtype.kind in "iu" and array.size <= 16:
            out[name] = array.reshape(-1)
    return out


def _constant_parts(name: str, constants: dict, producers: dict, depth: int = 0):
    """(constant name, values) for a shape tensor that is a constant, or a Concat/Cast of constants and others."""
    if name in constants:
        yield name, constants[name]
        return
    node = producers.get(name)
    if node is None or depth > 4:
        return
    if node.op_type in ("Concat", "Cast", "Identity", "Unsqueeze", "Squeeze"):
        inputs = node.input if node.op_type == "Concat" else node.input[:1]
        for source in inputs:
            yield from _constant_parts(source, constants, producers, depth + 1)


# ---------------------------------------------------------------- checking


@dataclass(frozen=True)
class ShapeRun:
    """The export against PyTorch at one (batch, sequence) shape."""

    batch: int
    sequence: int
    rel_l2: dict  # output name -> rel-L2 (inf: wrong shape or no output)
    shapes: dict  # output name -> (onnx shape, torch shape)
    error: str = ""  # ONNX Runtime's error, one line
    node: str = ""  # the node ONNX Runtime names in it
    input: str = ""  # or the graph input whose shape it refuses
    skipped: str = ""  # why this shape was not compared (PyTorch itself fails there)

    @property
    def ok(self) -> bool:
        return not self.error and all(v <= EXPORT_TOLERANCE.rel_l2 for v in self.rel_l2.values())  # a skipped run is ok

    def line(self) -> str:
        head = f"({self.batch}, {self.sequence}):"
        if self.skipped:
            return f"{head} skipped, {self.skipped}"
        if self.error:
            where = f" at node `{self.node}`" if self.node else (f" on input `{self.input}`" if self.input else "")
            return f"{head} ONNX Runtime fails{where}: {self.error[:200]}"
        parts = []
        for name, value in self.rel_l2.items():
            onnx_shape, torch_shape = self.shapes[name]
            if onnx_shape != torch_shape:
                parts.append(f"{name} shape {list(onnx_shape)} instead of {list(torch_shape)}")
            else:
                parts.append(f"{name} rel-L2 {value:.2e}")
        return f"{head} {'OK' if self.ok else 'MISMATCH'}, " + ", ".join(parts)

    def to_dict(self) -> dict:
        return {"batch": self.batch, "sequence": self.sequence, "ok": self.ok,
                "rel_l2": {k: finite_or_none(v) for k, v in self.rel_l2.items()},
                "shapes": {k: {"onnx": list(a), "torch": list(b)} for k, (a, b) in self.shapes.items()},
                "error": self.error or None, "node": self.node or None, "input": self.input or None,
                "skipped": self.skipped or None}


@dataclass(frozen=True)
class ExportCheck:
    """Whether an export matches its PyTorch module at every shape checked, and the sizes it fixed."""

    name: str
    dummy: dict  # {"batch": 2, "sequence": 34}
    runs: tuple[ShapeRun, ...]
    baked: tuple[BakedShape, ...]  # confirmed: the causes of the failures
    suspects: tuple[BakedShape, ...] = field(default=())  # same number as the dummy's, cleared by the runs

    @property
    def ok(self) -> bool:
        return all(run.ok for run in self.runs)

    @property
    def verdict(self) -> str:
        return "ok" if self.ok else ("baked_shape" if self.baked else "mismatch")

    def to_dict(self) -> dict:
        return {"name": self.name, "ok": self.ok, "verdict": self.verdict, "dummy": self.dummy,
                "tolerance": EXPORT_TOLERANCE.rel_l2, "runs": [run.to_dict() for run in self.runs],
                "baked": [b.to_dict() for b in self.baked], "suspects": [s.to_dict() for s in self.suspects]}

    def summary(self) -> str:
        dummy = ", ".join(f"{k} {v}" for k, v in self.dummy.items())
        lines = [f"{self.name} export against PyTorch (dummy {dummy}): {self.verdict.upper()}"]
        lines += [f"  {run.line()}" for run in self.runs]
        lines += [f"  BAKED {b.explanation()}" for b in self.baked]
        lines += [f"  note: {s.explanation()}" for s in self.suspects]
        return "\n".join(lines)

    def __repr__(self) -> str:
        return self.summary()

    def _repr_html_(self) -> str:
        import html

        return f"<pre>{html.escape(self.summary())}</pre>"


def resize_feed(example: Feed, batch: int, sequence: int, seed: int = 0) -> Feed:
    """Inputs like `example` at (batch, sequence): ids drawn from the example's range, masks with some padding."""
    rng = np.random.default_rng(seed)
    feed = {}
    for name, array in _as_feed(example).items():
        shape = (batch, sequence, *array.shape[2:]) if array.ndim >= 2 else (batch, *array.shape[1:])
        if "mask" in name.lower() and array.dtype.kind in "iub":
            values = np.ones(shape, array.dtype)
            if array.ndim >= 2 and batch > 1 and sequence > 2:
                values[-1, -(sequence // 4 or 1):] = 0  # the last row padded
        elif array.dtype.kind in "iu":
            low, high = (int(array.min()), int(array.max())) if array.size else (0, 1)
            values = rng.integers(low, high + 1, size=shape).astype(array.dtype)
        elif array.dtype.kind == "b":
            values = np.ones(shape, bool)
        else:
            values = rng.normal(size=shape).astype(array.dtype)
        feed[name] = values
    return feed


def check_export(module, model, example_inputs: Feed, shapes: Sequence[tuple[int, int]] = DEFAULT_SHAPES,
                 seed: int = 0) -> ExportCheck:
    """Run `model` (ONNX Runtime, CPU) and `module` (PyTorch) at each (batch, sequence) in `shapes`."""
    import onnxruntime as ort

    model = load_model(model, name=getattr(model, "name", None) or type(module).__name__)
    example = _as_feed(example_inputs)
    shapes = _check_shapes(shapes)
    dummy = _dummy_sizes(example)
    options = ort.SessionOptions()
    options.log_severity_level = 4  # failures come back as exceptions; no log lines on stderr
    try:
        session = ort.InferenceSession(full_proto(model).SerializeToString(), options, providers=["CPUExecutionProvider"])
    except Exception as exc:
        raise WorkbenchError(f"ONNX Runtime cannot load the export of {model.name}: {_first_line(exc)}") from None
    input_names = [i.name for i in session.get_inputs()]
    missing = [n for n in input_names if n not in example]
    if missing:
        raise WorkbenchError(f"the export takes input '{missing[0]}', which example_inputs lacks; give every input by name.")
    output_names = [o.name for o in session.get_outputs()]
    runs = []
    for k, (batch, sequence) in enumerate(shapes):
        feed = resize_feed(example, batch, sequence, seed=seed + k)
        try:
            expected = torch_outputs(module, feed)
        except Exception as exc:  # a shape the model itself does not take (beyond its positions...): not the export's fault
            runs.append(ShapeRun(batch, sequence, {}, {}, skipped=f"PyTorch itself fails at this shape: {_first_line(exc)[:200]}"))
            continue
        runs.append(_run_one(session, feed, input_names, output_names, expected, batch, sequence))
    suspects = fixed_inputs(model, example) + find_baked_shapes(model, example)
    baked, cleared = _confirm(suspects, runs, dummy)
    return ExportCheck(model.name, dummy, tuple(runs), tuple(baked), tuple(cleared))


def _run_one(session, feed, input_names, output_names, expected, batch, sequence) -> ShapeRun:
    try:
        got = session.run(None, {n: feed[n] for n in input_names})
    except Exception as exc:
        error, node, bad_input = parse_ort_error(exc)
        return ShapeRun(batch, sequence, {n: float("inf") for n in output_names},
                        {n: ((), ()) for n in output_names}, error=error, node=node, input=bad_input)
    rel, shapes = {}, {}
    for i, name in enumerate(output_names):
        if i >= len(expected):
            rel[name], shapes[name] = float("inf"), (tuple(got[i].shape), ())
            continue
        ref = expected[i]
        with np.errstate(all="ignore"):
            rel[name] = tensor_diff(ref, np.asarray(got[i]).astype(ref.dtype, copy=False), EXPORT_TOLERANCE).rel_l2
        shapes[name] = (tuple(int(d) for d in got[i].shape), tuple(int(d) for d in ref.shape))
    return ShapeRun(batch, sequence, rel, shapes)


def parse_ort_error(exc: Exception) -> tuple[str, str, str]:
    """(the useful part of ONNX Runtime's message, the node it names, the input whose shape it refuses)."""
    message = " ".join(str(exc).split())
    node = re.search(r"running \w+ node\. Name:'([^']+)'", message) or re.search(r"Name:'([^']+)'", message)
    bad_input = re.search(r"invalid dimensions for input: (\S+)", message)
    shapes = re.search(r"Input shape:\s*\{[^}]*\},\s*requested shape:\s*\{[^}]*\}", message)
    if shapes:
        detail = "cannot reshape: " + shapes.group(0)
    elif bad_input:
        detail = message[bad_input.start():].split(" Please fix")[0]
    else:
        detail = message.split("Status Message:")[-1].strip()
        detail = re.sub(r"^/\S+:\d+ .*?\) ", "", detail)  # the C++ source location and signature
    return detail[:500], node.group(1) if node else "", bad_input.group(1) if bad_input else ""


def torch_outputs(module, feed: Feed) -> list[np.ndarray]:
    """`module(**feed)` in PyTorch, its tensors flattened in order (tuples, dicts, ModelOutput), as numpy."""
    import torch

    with torch.no_grad():
        result = module(**{k: torch.from_numpy(v) for k, v in feed.items()})
    return [t.detach().cpu().numpy() for t in _flatten(result)]


def _flatten(result) -> list:
    if result is None:
        return []
    if hasattr(result, "detach"):
        return [result]
    if isinstance(result, dict) or hasattr(result, "to_tuple"):
        values = result.to_tuple() if hasattr(result, "to_tuple") else tuple(result.values())
        return [t for v in values for t in _flatten(v)]
    if isinstance(result, (tuple, list)):
        return [t for v in result for t in _flatten(v)]
    return []


def _confirm(suspects: list[BakedShape], runs: list[ShapeRun], dummy: dict) -> tuple[list, list]:
    """A suspect is confirmed by a failing run whose shape differs from the dummy's on its axis.

    Failing at the suspect itself (ONNX Runtime names the node or the input) is the strongest evidence;
    a failure ONNX Runtime pins on no suspect, or on a fixed input before any node runs, confirms the
    suspects whose axis changed there.
    """
    failing = [run for run in runs if not run.ok]
    names = {s.node for s in suspects}
    baked, cleared = [], []
    for suspect in suspects:
        def changed(run: ShapeRun, suspect=suspect) -> bool:
            return any((run.batch if axis == "batch" else run.sequence) != size for axis, size in suspect.sizes)

        named = [r for r in failing if suspect.node in (r.node, r.input) and changed(r)]
        other = [r for r in failing if changed(r) and (r.input or not ({r.node, r.input} & names))]
        run = (named or other or [None])[0]
        if run is None:
            cleared.append(suspect)
        else:
            baked.append(_with_evidence(suspect, run))
    return baked, cleared


def _with_evidence(suspect: BakedShape, run: ShapeRun) -> BakedShape:
    at = f"(batch {run.batch}, length {run.sequence})"
    if suspect.op_type == "input" and run.input == suspect.node:
        evidence = (f"ONNX Runtime refuses {at}: {run.error[:160]}; the exporter specialised the axis, "
                    "as the code reads its size as a Python int")
    elif run.error and run.node == suspect.node:
        evidence = f"it fails for {at}: {run.error[:160]}"
    elif run.input:
        evidence = f"it would fail for {at}; ONNX Runtime stops before it, as the export also fixed input `{run.input}`"
    elif run.error:
        evidence = f"ONNX Runtime fails for {at} at node `{run.node or '?'}` downstream: {run.error[:160]}"
    else:
        wrong = [f"{name} {list(a)} instead of {list(b)}" for name, (a, b) in run.shapes.items() if a != b]
        evidence = (f"for {at} it runs but returns " + ", ".join(wrong) if wrong
                    else f"for {at} the outputs differ from PyTorch (rel-L2 "
                         + ", ".join(f"{v:.2e}" for v in run.rel_l2.values()) + ")")
    return BakedShape(suspect.node, suspect.op_type, suspect.constant, suspect.values, suspect.sizes,
                      confirmed=True, evidence=evidence)


def export_and_check(module, example_inputs: Feed, path=None, shapes: Sequence[tuple[int, int]] = DEFAULT_SHAPES,
                     exporter: str = "dynamo", output_names: Sequence[str] | None = None) -> ExportCheck:
    """`export` with dynamic batch and sequence, then `check_export` at `shapes`."""
    proto = export(module, example_inputs, path, dynamic=True, exporter=exporter, output_names=output_names)
    return check_export(module, Model(proto=proto, name=type(module).__name__, origin=f"torch.onnx.export ({exporter})"),
                        example_inputs, shapes)


def _as_feed(inputs) -> Feed:
    if not isinstance(inputs, dict):
        raise WorkbenchError("example_inputs must be a dict of input name -> array (numpy or torch).")
    feed = {}
    for name, value in inputs.items():
        if hasattr(value, "detach"):
            value = value.detach().cpu().numpy()
        feed[name] = np.ascontiguousarray(np.asarray(value))
    return feed


def _check_shapes(shapes) -> list[tuple[int, int]]:
    out = []
    for shape in shapes:
        try:
            batch, sequence = (int(v) for v in shape)
        except (TypeError, ValueError):
            raise WorkbenchError(f"shape {shape!r} is not a (batch, sequence) pair of integers.") from None
        if batch < 1 or sequence < 1:
            raise WorkbenchError(f"shape ({batch}, {sequence}) must have a batch and a sequence length of at least 1.")
        out.append((batch, sequence))
    if not out:
        raise WorkbenchError("no shapes to check; give at least one (batch, sequence) pair, e.g. 1x8,2x16.")
    return out


# ---------------------------------------------------------------- sample modules (tests, notebook, CLI demo)


def fixed_view_module(hidden: int = 32, heads: int = 4, fixed_length: bool = True):
    """A projection then a head split whose sizes are read as Python ints: `view(int(b), int(s), 4, 8)`.

    PyTorch runs it at any shape. The exporter records `int(...)` of a size as the number it was on the
    dummy input, so the export's Reshape asks for (2, 34, 4, 8) whatever the input: the source story's
    "cannot reshape {1,34,1024} to {2,8,16,64}". `fixed_length=False`: `view(int(b), -1, 4, 8)`, where
    only the batch size is fixed: the export then runs at other shapes and silently returns a wrong shape.
    """
    import torch

    class FixedViewHeads(torch.nn.Module):
        def __init__(self):
            super().__init__()
            torch.manual_seed(0)
            self.proj = torch.nn.Linear(hidden, hidden)

        def forward(self, x):
            batch, sequence = int(x.shape[0]), int(x.shape[1])
            h = self.proj(x)
            return h.view(batch, sequence if fixed_length else -1, heads, hidden // heads).transpose(1, 2)

    return FixedViewHeads().eval()


def dynamic_view_module(hidden: int = 32, heads: int = 4):
    """The same head split written right: `view(x.shape[0], x.shape[1], heads, -1)`."""
    import torch

    class DynamicViewHeads(torch.nn.Module):
        def __init__(self):
            super().__init__()
            torch.manual_seed(0)
            self.proj = torch.nn.Linear(hidden, hidden)

        def forward(self, x):
            h = self.proj(x)
            return h.view(x.shape[0], x.shape[1], heads, -1).transpose(1, 2)

    return DynamicViewHeads().eval()


def float_feed(batch: int = 2, sequence: int = 34, hidden: int = 32) -> Feed:
    return {"x": np.random.default_rng(0).normal(size=(batch, sequence, hidden)).astype(np.float32)}


def transformers_module(model_dir):
    """A local transformers model folder as a Module(input_ids, attention_mask) -> its first output.

    Read with `local_files_only`: nothing is downloaded. Returns (module, output name, vocabulary size).
    """
    import os

    import torch

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from transformers import AutoModel
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()

    folder = Path(model_dir)
    if not (folder / "config.json").is_file():
        raise WorkbenchError(f"{folder} is not a transformers model folder (no config.json); give the folder "
                             "save_pretrained wrote.")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            model = AutoModel.from_pretrained(str(folder), local_files_only=True).eval()
    except Exception as exc:
        raise WorkbenchError(f"transformers cannot load {folder}: {_first_line(exc)}") from None

    class FirstOutput(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.model = model

        def forward(self, input_ids, attention_mask):
            return _flatten(self.model(input_ids=input_ids, attention_mask=attention_mask))[0]

    return FirstOutput().eval(), "last_hidden_state", int(model.config.vocab_size)


def token_feed(vocab_size: int, batch: int = 2, sequence: int = 34, seed: int = 0) -> Feed:
    """Dummy token ids (away from the special tokens at the start of a vocabulary) and an all-ones mask."""
    low = 1000 if vocab_size > 2000 else 1
    ids = np.random.default_rng(seed).integers(low, vocab_size, size=(batch, sequence), dtype=np.int64)
    return {"input_ids": ids, "attention_mask": np.ones((batch, sequence), np.int64)}


# ---------------------------------------------------------------- command line


def add_cli(subparsers) -> dict:
    """Register `workbench export` and `workbench export-check`; returns {command: handler} for the CLI's table."""
    add_export_cli(subparsers)
    cmd = subparsers.add_parser("export-check", help="check an ONNX export against its PyTorch model at several shapes")
    cmd.add_argument("model", help="an .onnx export, or `demo-fixed-view` / `demo-dynamic-view` / `demo-tiny-bert` "
                                   "to export a sample module")
    cmd.add_argument("--module", help="python path `package.module:factory` returning the torch module (for an .onnx)")
    cmd.add_argument("--inputs", help=".npz of the example (dummy) inputs the model was exported with")
    cmd.add_argument("--shapes", default="1x8,2x16,3x34", help="(batch x sequence) shapes to check (default 1x8,2x16,3x34)")
    cmd.add_argument("--exporter", choices=["dynamo", "legacy"], default="dynamo", help="for the demo modules")
    cmd.add_argument("-o", "--output", help="for the demo modules: where to write the export")
    cmd.add_argument("--json", action="store_true", help="print the check as JSON")
    cmd.set_defaults(handler=run_cli)
    return {"export": run_export_cli, "export-check": run_cli}


def add_export_cli(subparsers) -> None:
    """Register `workbench export`: a local transformers model to ONNX with dynamic axes, then checked."""
    cmd = subparsers.add_parser("export", help="export a local transformers model to ONNX (dynamic batch and length) and check it")
    cmd.add_argument("model_dir", help="a transformers model folder (config.json and weights; nothing is downloaded)")
    cmd.add_argument("-o", "--output", required=True, help="where to write the .onnx export")
    cmd.add_argument("--exporter", choices=["dynamo", "legacy"], default="dynamo", help="torch.onnx exporter (default dynamo)")
    cmd.add_argument("--dummy", default="2x34", help="the example input's BATCHxSEQUENCE (default 2x34: unusual sizes, fewer coincidences)")
    cmd.add_argument("--shapes", default="1x8,2x16,3x34", help="(batch x sequence) shapes to check (default 1x8,2x16,3x34)")
    cmd.add_argument("--json", action="store_true", help="print the check as JSON")
    cmd.set_defaults(handler=run_export_cli)


def run_export_cli(args: argparse.Namespace) -> int:
    (dummy,) = parse_shapes(args.dummy) if "," not in args.dummy else [None]
    if dummy is None:
        raise WorkbenchError(f"--dummy '{args.dummy}' must be one BATCHxSEQUENCE shape.")
    shapes = parse_shapes(args.shapes)
    from workbench.io.save import check_output

    target = Path(args.output)
    if target.suffix != ".onnx":
        raise WorkbenchError(f"-o {target}: give a path ending in .onnx.")
    module, output_name, vocab = transformers_module(args.model_dir)
    source = Path(args.model_dir)  # its config, weights and tokenizer files are never written; an .onnx may be
    check_output([target], [f for f in source.iterdir() if f.is_file() and f.suffix != ".onnx"])
    feed = token_feed(vocab, *dummy)
    proto = export(module, feed, target, exporter=args.exporter, output_names=[output_name])
    model = Model(proto=proto, name=Path(args.model_dir).name, origin=f"torch.onnx.export ({args.exporter})")
    check = check_export(module, model, feed, shapes)
    if args.json:
        print(json.dumps({**check.to_dict(), "output_path": str(target)}, indent=2))
    else:
        print(check.summary())
        print(f"wrote {target}" + ("" if check.ok else " (it does not match PyTorch at every shape: see above)"))
    return 0 if check.ok else 1


def parse_shapes(text: str) -> list[tuple[int, int]]:
    shapes = []
    for part in filter(None, (p.strip() for p in text.split(","))):
        match = re.fullmatch(r"(\d+)\s*[x×]\s*(\d+)", part)
        if not match:
            raise WorkbenchError(f"shape '{part}' is not BATCHxSEQUENCE (e.g. 2x16).")
        shapes.append((int(match.group(1)), int(match.group(2))))
    return _check_shapes(shapes)


def run_cli(args: argparse.Namespace) -> int:
    shapes = parse_shapes(args.shapes)
    demos = {"demo-fixed-view": lambda: (fixed_view_module(), float_feed()),
             "demo-dynamic-view": lambda: (dynamic_view_module(), float_feed()),
             "demo-tiny-bert": _tiny_bert_demo}
    if args.model in demos:
        module, feed = demos[args.model]()
        proto = export(module, feed, args.output, exporter=args.exporter)
        model = Model(proto=proto, name=args.model, origin=f"torch.onnx.export ({args.exporter})")
    else:
        if not args.module or not args.inputs:
            raise WorkbenchError("checking an .onnx export needs --module package.module:factory and --inputs dummy.npz.")
        from workbench.io.feeds import load_feed

        model = load_model(args.model)
        module, feed = _import_factory(args.module)(), load_feed(args.inputs)
    check = check_export(module, model, feed, shapes)
    print(json.dumps(check.to_dict(), indent=2) if args.json else check.summary())
    return 0 if check.ok else 1  # 1: the export does not match PyTorch at some shape (as `fix` when not fixed)


def _tiny_bert_demo():
    import torch
    from transformers import BertConfig, BertModel

    torch.manual_seed(0)
    config = BertConfig(vocab_size=100, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=64, max_position_embeddings=64)
    bert = BertModel(config, add_pooling_layer=False).eval()
    ids = np.random.default_rng(1).integers(1, 100, size=(2, 34), dtype=np.int64)
    return bert, {"input_ids": ids, "attention_mask": np.ones((2, 34), np.int64)}


def _import_factory(spec: str):
    import importlib
    import os
    import sys

    if os.getcwd() not in sys.path:  # `workbench` as a console script: the user's module is beside them
        sys.path.insert(0, os.getcwd())
    module_name, _, attr = spec.partition(":")
    if not module_name or not attr:
        raise WorkbenchError(f"--module '{spec}' is not package.module:factory.")
    try:
        factory = getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError) as exc:
        raise WorkbenchError(f"cannot import {spec}: {_first_line(exc)}") from None
    return factory
