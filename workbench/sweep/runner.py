"""One input of a sweep: both models run whole, the outputs compared, the task checked.

`run_outputs` is the one place the whole-model engine is chosen: a model that stores tensors in a
low-precision format runs on the emulating engine (workbench.engines: FP32 arithmetic, every FP16/BF16/FP8
tensor rounded where stored, as a GPU engine does); an FP32 model on a plain, optimised ORT session.
"""

from __future__ import annotations

import hashlib
import time
from collections import OrderedDict
from dataclasses import dataclass

import numpy as np

from workbench.compare.diff import Tolerance, tensor_diff, verdict
from workbench.errors import WorkbenchError
from workbench.io.model import Model

Feed = dict[str, np.ndarray]
_SESSIONS: "OrderedDict[int, tuple[Model, object]]" = OrderedDict()  # id(model) -> (model, feed -> outputs)
_MAX_SESSIONS = 4  # two models per sweep; a notebook that sweeps twice keeps both pairs
_THREADS = {"intra_op": 0}  # 0: ONNX Runtime's default (all cores); workers set 1 each


def set_threads(intra_op: int) -> None:
    """Threads per session in this process; a pool of N workers on C cores gives each C // N."""
    _THREADS["intra_op"] = intra_op
    _SESSIONS.clear()


def run_outputs(model: Model, feed: Feed) -> dict[str, np.ndarray]:
    """Every graph output of `model` on `feed` (arrays as the model returns them: float32, float16, ...)."""
    key = id(model)
    if key in _SESSIONS:
        _SESSIONS.move_to_end(key)
    else:
        _SESSIONS[key] = (model, _whole_model_run(model))  # the model is held so its id is not reused
        while len(_SESSIONS) > _MAX_SESSIONS:
            _SESSIONS.popitem(last=False)
    return _SESSIONS[key][1](feed)


def _whole_model_run(model: Model):
    """`feed -> outputs` for `model`: the engine chosen and its session built once per model, not per input
    (telling a low-precision model needs onnx's shape inference over the whole graph)."""
    from workbench.formats import LOW_TYPES
    from workbench.ir.graph import GraphIndex

    index = GraphIndex.of(model)
    if any(t in LOW_TYPES for t in index.elem_types.values()):
        from workbench.engines.emulate import EmulatingEngine

        return EmulatingEngine(model, index, intra_op_threads=_THREADS["intra_op"]).outputs
    from workbench.engines.sessions import build_session

    # The engines' own session options: quiet, threads that do not spin (they would take another worker's cores).
    session = build_session(model.to_proto().SerializeToString(), ["CPUExecutionProvider"], what=model.name,
                            intra_op_threads=_THREADS["intra_op"])
    names = [o.name for o in model.graph.output]
    return lambda feed: dict(zip(names, session.run(names, feed)))


@dataclass(frozen=True)
class Check:
    """What each input is checked with: the tolerance, and a workbench.task.checks check or None."""

    tolerance: Tolerance = Tolerance()
    task: object | None = None  # SentenceEmbeddingTask, MaskedLmTask or None


def evaluate(reference: Model, candidate: Model, input_id: str, feed: Feed, check: Check) -> dict:
    """The record of one input: output figures, verdict, task check, traits. JSON-safe."""
    start = time.perf_counter()
    ref_out = run_outputs(reference, feed)
    cand_out = run_outputs(candidate, feed)
    diffs = {name: tensor_diff(ref_out[name], cand_out[name], check.tolerance) for name in ref_out if name in cand_out}
    task = _task_result(check.task, feed, ref_out, cand_out)
    figures = {name: {"rel_l2": _finite(d.rel_l2), "max_abs": _finite(d.max_abs), "nonfinite": d.nonfinite, "ok": d.ok}
               for name, d in diffs.items()}
    outcome = verdict(diffs)
    return {
        "id": input_id,
        "digest": feed_digest(feed),
        "verdict": outcome,
        "failed": outcome != "ok" or (task is not None and task.get("ok") is False),
        "worst_rel_l2": _finite(max((d.rel_l2 for d in diffs.values()), default=0.0)),
        "nonfinite": sum(d.nonfinite for d in diffs.values()),
        "outputs": figures,
        "task": task,
        "traits": traits(feed),
        "seconds": round(time.perf_counter() - start, 6),
    }


def _task_result(task, feed: Feed, reference: dict, candidate: dict) -> dict | None:
    if task is None:
        return None
    feed, reference, candidate = _rows_with_tokens(task, feed, reference, candidate)
    if not feed:
        return None
    try:
        return task.check(feed, reference, candidate).to_dict()
    except WorkbenchError as exc:  # e.g. a non-finite FP32 reference: the check does not apply to this input
        return {"name": getattr(task, "name", "task"), "ok": None, "error": str(exc)}


def _rows_with_tokens(task, feed: Feed, reference: dict, candidate: dict) -> tuple[Feed, dict, dict]:
    """The batch rows that hold a token: a fully padded row has no sentence, so no embedding to check
    (its pooled embedding is 0 in both runs). Empty dicts when no row has one."""
    mask = feed.get(getattr(task, "mask_input", None) or "")
    if mask is None or np.ndim(mask) != 2:
        return feed, reference, candidate
    keep = np.count_nonzero(mask, axis=1) > 0
    if keep.all():
        return feed, reference, candidate
    if not keep.any():
        return {}, {}, {}

    def rows(arrays: dict) -> dict:
        return {k: v[keep] if np.ndim(v) and v.shape[0] == len(keep) else v for k, v in arrays.items()}

    return rows(feed), rows(reference), rows(candidate)


def traits(feed: Feed) -> dict:
    """What an input is like, to say what failing inputs share: padding, length, magnitude."""
    masks = [np.asarray(v) for k, v in feed.items() if "mask" in k.lower() and np.asarray(v).ndim >= 2]
    padded = any(bool(np.any(np.all(m.reshape(m.shape[0], -1) == 0, axis=1))) for m in masks)
    lengths = [int(np.count_nonzero(m, axis=-1).max()) for m in masks if m.size]
    floats = [np.abs(np.asarray(v, np.float64)) for k, v in feed.items() if np.asarray(v).dtype.kind == "f" and "mask" not in k.lower()]
    return {
        "fully_padded_row": padded,
        "sequence": max(lengths) if lengths else None,  # longest unpadded row, in positions
        "peak": float(max(f.max() for f in floats)) if floats and all(f.size for f in floats) else None,
    }


def feed_digest(feed: Feed) -> str:
    """sha256 over names, dtypes, shapes and bytes: a changed input file is swept again."""
    digest = hashlib.sha256()
    for name in sorted(feed):
        array = np.ascontiguousarray(feed[name])
        digest.update(f"{name}|{array.dtype.str}|{array.shape}|".encode())
        digest.update(array.tobytes())
    return digest.hexdigest()[:16]


def _finite(value: float) -> float | None:
    """JSON has no inf or NaN: an unbounded error is null (read back as inf)."""
    return float(value) if np.isfinite(value) else None


# ---------------------------------------------------------------- worker processes

_WORKER: dict = {}


def init_worker(reference: "bytes | str", candidate: "bytes | str", check: Check, threads: int,
                names: tuple[str, str] = ("reference", "candidate")) -> None:
    """Load both models once per worker process (spawned, or a Ray actor): serialized bytes, or a file's path.

    `names`: the models' names, as the sweep's own process has them (a diagnosis made here names them)."""
    reference, candidate = (_read(m) if isinstance(m, str) else m for m in (reference, candidate))
    _WORKER.update(models_from_bytes(reference, candidate, names), check=check)
    set_threads(threads)


def worker_evaluate(input_id: str, feed: Feed) -> dict:
    return evaluate(_WORKER["reference"], _WORKER["candidate"], input_id, feed, _WORKER["check"])


def worker_diagnose(input_id: str, feed: Feed, options) -> tuple[str, dict]:
    """The full diagnosis of one of the worst inputs, on the models this worker loaded at start."""
    from workbench.diagnosis.search import diagnose

    return input_id, diagnose(_WORKER["reference"], _WORKER["candidate"], inputs=feed, options=options).to_dict()


def _read(path: str) -> bytes:
    with open(path, "rb") as handle:
        return handle.read()


def models_from_bytes(reference_bytes: bytes, candidate_bytes: bytes,
                      names: tuple[str, str] = ("reference", "candidate")) -> dict:
    import onnx

    from workbench.io.model import load_model

    return {"reference": load_model(onnx.load_from_string(reference_bytes), name=names[0]),
            "candidate": load_model(onnx.load_from_string(candidate_bytes), name=names[1])}
