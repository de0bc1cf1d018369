"""`workbench.sweep`: run both models whole on every input of a dataset, and say which inputs break and why."""

from __future__ import annotations

import functools
import sys
import time
from dataclasses import dataclass, field, fields, replace
from pathlib import Path

from tqdm.auto import tqdm

from workbench.compare.diff import Tolerance
from workbench.errors import WorkbenchError
from workbench.io.feeds import check_feed
from workbench.io.model import Model, load_model
from workbench.ir.graph import GraphIndex
from workbench.sweep import groups, local, runner
from workbench.sweep.result import SweepResult
from workbench.sweep.sources import open_source
from workbench.sweep.store import ResultStore, default_work_dir, record_key, sweep_key

PRECISIONS = ("fp16", "bf16", "fp8-e4m3", "fp8-e5m2")


@dataclass(frozen=True)
class SweepOptions:
    precision: str = "fp16"  # how to make the candidate when none is given
    top: int = 5  # the worst N failing inputs get a full diagnosis (and the worst of each failure pattern)
    workers: int | None = None  # local worker processes (default: the cores); 1 runs in this process
    ray: str | None = None  # a Ray cluster's address, or "auto" for ray.init(); None: this machine
    work: Path | None = None  # where results are kept as they come (default ~/.cache/workbench/sweep)
    tokenizer: object | None = None  # for a text source: a folder, or a tokenizer object (default: beside the model)
    batch_size: int = 1  # sentences or images per input
    tolerance: Tolerance = field(default_factory=Tolerance)
    task: object | None = "auto"  # "auto": sentence embeddings when the model looks like an encoder; None: no task
    progress: bool = True


def sweep(model, candidate=None, inputs=None, options: SweepOptions | None = None, **overrides) -> SweepResult:
    """Sweep `candidate` (default: the FP16 conversion of `model`) against `model` over every input of `inputs`.

    `inputs`: a folder of .npz feeds or of images, one .npz with a leading dataset axis, a text file of
    sentences, or a list of feed dicts. Keyword overrides set SweepOptions fields, e.g. `sweep(m, inputs=d, top=3)`.
    """
    options = _with_overrides(options or SweepOptions(), overrides)
    start = time.perf_counter()
    reference = load_model(model)
    candidate_model = _candidate(reference, candidate, options)
    index = GraphIndex.of(reference)
    source = open_source(inputs, index, reference.path, options.tokenizer, options.batch_size)
    check = runner.Check(options.tolerance, _task(options.task, reference, index))
    reference_bytes = reference.to_proto().SerializeToString()
    candidate_bytes = candidate_model.to_proto().SerializeToString()
    store = ResultStore(Path(options.work) if options.work else default_work_dir(), sweep_key(reference_bytes, candidate_bytes, check))
    try:
        order, finished, pending, skipped = _plan(source, index, reference.name, store.finished())
        records = dict(finished)
        run_start = time.perf_counter()
        pool = _pool(options, reference, candidate_model, reference_bytes, candidate_bytes, check, len(pending))
        try:
            backend = pool.records(pending) if pool else _run(options, reference, candidate_model, reference_bytes,
                                                               candidate_bytes, check, pending)
            try:
                _collect(backend, records, store, total=len(order), progress=options.progress)
            except KeyboardInterrupt:
                tqdm.write(f"sweep interrupted: {len(records)} of {len(order)} inputs are kept in {store.results}; "
                           "sweep again with the same work folder to resume.", file=sys.stderr)
                raise
            run_seconds = time.perf_counter() - run_start  # workers' start-up included, diagnoses not
            ordered = [records[i] for i in order]
            diagnose_start = time.perf_counter()
            run_diagnoses = pool.diagnoses if pool else functools.partial(local.diagnose_here, reference, candidate_model)
            diagnoses = _diagnoses(ordered, source, store, options, run_diagnoses)
            diagnose_seconds = time.perf_counter() - diagnose_start
        finally:
            if pool:
                pool.close()
    finally:
        store.close()
    seconds = time.perf_counter() - start
    stats = {"seconds": seconds, "run_seconds": run_seconds, "diagnose_seconds": diagnose_seconds,
             "computed": len(pending), "reused": len(finished),
             "inputs_per_second": len(pending) / run_seconds if pending else 0.0,
             "backend": _backend_name(options, len(pending))}
    return SweepResult(reference, candidate_model, source, tuple(ordered), tuple(skipped), groups.group_roots(ordered, diagnoses),
                       diagnoses, options.tolerance.rel_l2, store.results, stats, _diagnose_options(options))


def _with_overrides(options: SweepOptions, overrides: dict) -> SweepOptions:
    unknown = sorted(set(overrides) - {f.name for f in fields(SweepOptions)})
    if unknown:
        raise TypeError(f"sweep() got unknown option(s) {unknown}")
    options = replace(options, **overrides)
    if options.top < 0:
        raise WorkbenchError(f"--top must be 0 or more, not {options.top}.")
    if options.workers is not None and options.workers < 1:
        raise WorkbenchError(f"--workers must be at least 1, not {options.workers}.")
    return options


def _candidate(reference: Model, candidate, options: SweepOptions) -> Model:
    if candidate is not None:
        return load_model(candidate)
    if options.precision not in PRECISIONS:
        raise WorkbenchError(f"unknown precision '{options.precision}'; use one of {', '.join(PRECISIONS)}, or give --candidate.")
    from workbench.convert.low_precision import Fp16Options, convert_to_fp16

    return convert_to_fp16(reference, Fp16Options(precision=options.precision))[0]


def _task(task, reference: Model, index: GraphIndex):
    """The task check each input gets: sentence embeddings for an encoder with an attention mask, else none."""
    if task != "auto":
        return task
    from workbench.task.checks import SentenceEmbeddingTask

    outputs = {o.name: o for o in reference.graph.output}
    hidden = outputs.get("last_hidden_state")
    if hidden is not None and "attention_mask" in index.input_names and len(hidden.type.tensor_type.shape.dim) == 3:
        return SentenceEmbeddingTask()
    return None


def _plan(source, index: GraphIndex, model_name: str, done: dict):
    """(every input id in order, finished id -> record, pending (id, feed), skipped (id, why))."""
    order, finished, pending, skipped = [], {}, [], []
    for item in source.items():
        if item.problem is not None:
            skipped.append((item.id, item.problem))
            continue
        try:
            feed = check_feed(index, item.feed, model_name)
        except WorkbenchError as exc:
            skipped.append((item.id, str(exc)))
            continue
        order.append(item.id)
        key = f"{item.id}|{runner.feed_digest(feed)}"
        if key in done:
            finished[item.id] = done[key]
        else:
            pending.append((item.id, feed))
    if not order:
        first = f" ({skipped[0][0]}: {skipped[0][1]})" if skipped else ""
        raise WorkbenchError(f"no input of {source.description} can be swept{first}.")
    return order, finished, pending, skipped


def _workers(options: SweepOptions, pending: int) -> int:
    return max(1, min(options.workers or local.cores(), pending))


def _backend_name(options: SweepOptions, pending: int) -> str:
    if options.ray:
        return f"ray {options.ray}"
    workers = _workers(options, pending)
    return "this process" if workers == 1 else f"{workers} processes"


def _pool(options, reference, candidate, reference_bytes, candidate_bytes, check, pending: int):
    """Local worker processes for the inputs and then the diagnoses, or None: this process, or Ray, runs them."""
    workers = _workers(options, pending)
    if options.ray or workers == 1:
        return None
    return local.ProcessPool(reference_bytes, candidate_bytes, check, workers, names=(reference.name, candidate.name))


def _run(options, reference, candidate, reference_bytes, candidate_bytes, check, pending):
    if not pending:
        return iter(())
    if options.ray:
        from workbench.sweep import ray_backend

        ray_backend.ray_module()  # fails now, in one line, when Ray is missing
        return ray_backend.on_ray(options.ray, reference_bytes, candidate_bytes, check, pending, options.workers)
    return local.in_process(reference, candidate, check, pending)


def _collect(backend, records: dict, store: ResultStore, total: int, progress: bool) -> None:
    """Write each record as it comes; the bar shows the failures so far."""
    failures = sum(r["failed"] for r in records.values())
    with tqdm(total=total, initial=len(records), desc="sweep", unit="input", disable=not progress) as bar:
        bar.set_postfix(failures=failures)
        try:
            for record in backend:
                store.add(record)
                records[record["id"]] = record
                failures += record["failed"]
                bar.update(1)
                bar.set_postfix(failures=failures)
        finally:
            close = getattr(backend, "close", None)
            if close:
                close()


def _diagnose_options(options: SweepOptions):
    from workbench.diagnosis.search import DiagnoseOptions

    return DiagnoseOptions(tolerance=options.tolerance)


def _diagnoses(records, source, store: ResultStore, options: SweepOptions, run) -> dict[str, dict]:
    """input id -> Diagnosis.to_dict() for the inputs chosen, in their order; those diagnosed before are read
    from the work folder. `run(jobs, options)`: (input id, diagnosis) of each (input id, feed) of `jobs`."""
    chosen = groups.to_diagnose(records, options.top)
    by_id = {r["id"]: r for r in records}
    done = store.finished_diagnoses()
    result = {}
    for input_id in chosen:
        key = record_key(by_id[input_id])
        if key in done:
            result[input_id] = {k: v for k, v in done[key].items() if k != "key"}
    jobs = ((i, source.feed(i)) for i in chosen if i not in result)
    with tqdm(total=len(chosen), initial=len(result), desc="diagnose", unit="input",
              disable=not options.progress or not chosen) as bar:
        for input_id, diagnosis in run(jobs, _diagnose_options(options)):
            result[input_id] = diagnosis
            store.add_diagnosis(record_key(by_id[input_id]), diagnosis)
            bar.update(1)
    return {input_id: result[input_id] for input_id in chosen}
