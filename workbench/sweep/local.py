"""Running a sweep's inputs on this machine: in this process, or in spawned worker processes."""

from __future__ import annotations

import concurrent.futures
import contextlib
import multiprocessing
import os
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path

from workbench.errors import WorkbenchError
from workbench.sweep import runner

IN_FLIGHT_PER_WORKER = 4  # queued inputs per worker: enough to keep it busy, few enough to stop quickly


def cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS, Windows
        return os.cpu_count() or 1


def in_process(reference, candidate, check: runner.Check, items: Iterable) -> Iterator[dict]:
    runner.set_threads(0)  # one session at a time: ONNX Runtime's own threads use every core
    for input_id, feed in items:
        yield runner.evaluate(reference, candidate, input_id, feed, check)


def diagnose_here(reference, candidate, jobs: Iterable, options) -> Iterator[tuple[str, dict]]:
    """(input id, Diagnosis.to_dict()) of each (input id, feed) of `jobs`, in this process, one at a time."""
    from workbench.diagnosis.search import diagnose

    for input_id, feed in jobs:
        yield input_id, diagnose(reference, candidate, inputs=feed, options=options).to_dict()


class ProcessPool:
    """Spawned worker processes that load both models once, at start, then take the inputs and the diagnoses.

    The worst inputs' diagnoses go to the same workers as the inputs did, so N workers diagnose N inputs at
    a time (each diagnosis holds every tensor of both models' runs on its input). The models reach the workers
    as files: a spawned worker that dies before reading its start-up data would leave the parent blocked
    forever writing megabytes of model bytes into the pipe.
    """

    def __init__(self, reference_bytes: bytes, candidate_bytes: bytes, check: runner.Check, workers: int,
                 names: tuple[str, str] = ("reference", "candidate")):
        self.workers = workers
        self._folder = tempfile.TemporaryDirectory(prefix="workbench-sweep-")
        paths = []
        for name, data in (("reference.onnx", reference_bytes), ("candidate.onnx", candidate_bytes)):
            path = Path(self._folder.name) / name
            path.write_bytes(data)
            paths.append(str(path))
        self._pool = concurrent.futures.ProcessPoolExecutor(
            max_workers=workers, mp_context=multiprocessing.get_context("spawn"),
            initializer=runner.init_worker, initargs=(*paths, check, max(1, cores() // workers), names))

    def records(self, items: Iterable) -> Iterator[dict]:
        """Records as workers finish them (not in order)."""
        with _one_line_when_a_worker_dies():
            yield from _bounded(self._pool, runner.worker_evaluate, iter(items), self.workers * IN_FLIGHT_PER_WORKER)

    def diagnoses(self, jobs: Iterable, options) -> Iterator[tuple[str, dict]]:
        """(input id, Diagnosis.to_dict()) of each (input id, feed) of `jobs`, as workers finish them."""
        calls = ((input_id, feed, options) for input_id, feed in jobs)
        with _one_line_when_a_worker_dies():
            yield from _bounded(self._pool, runner.worker_diagnose, calls, self.workers)

    def close(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)
        self._folder.cleanup()


@contextlib.contextmanager
def _one_line_when_a_worker_dies():
    try:
        yield
    except concurrent.futures.process.BrokenProcessPool:
        raise WorkbenchError(
            "a sweep worker process died; in a script, start the sweep under `if __name__ == \"__main__\":` "
            "(worker processes are spawned and import it again), or pass workers=1 (--workers 1)."
        ) from None


def _bounded(pool, function, calls: Iterator[tuple], limit: int) -> Iterator:
    """function(*call) for each call, at most `limit` queued at a time; results as they finish."""
    pending = set()
    for call in calls:
        pending.add(pool.submit(function, *call))
        if len(pending) >= limit:
            done, pending = concurrent.futures.wait(pending, return_when=concurrent.futures.FIRST_COMPLETED)
            yield from (future.result() for future in done)
    for future in concurrent.futures.as_completed(pending):
        yield future.result()
