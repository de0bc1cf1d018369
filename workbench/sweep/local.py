"""Running a sweep's inputs on this machine: in this process, or in spawned worker processes."""

from __future__ import annotations

import concurrent.futures
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


def in_processes(reference_bytes: bytes, candidate_bytes: bytes, check: runner.Check, items: Iterable,
                 workers: int) -> Iterator[dict]:
    """Records as workers finish them (not in order). Each worker loads both models once, at start.

    The models reach the workers as files: a spawned worker that dies before reading its start-up data
    would leave the parent blocked forever writing megabytes of model bytes into the pipe.
    """
    threads = max(1, cores() // workers)
    with tempfile.TemporaryDirectory(prefix="workbench-sweep-") as folder:
        paths = []
        for name, data in (("reference.onnx", reference_bytes), ("candidate.onnx", candidate_bytes)):
            path = Path(folder) / name
            path.write_bytes(data)
            paths.append(str(path))
        pool = concurrent.futures.ProcessPoolExecutor(
            max_workers=workers, mp_context=multiprocessing.get_context("spawn"),
            initializer=runner.init_worker, initargs=(*paths, check, threads))
        try:
            yield from _bounded(pool, iter(items), workers * IN_FLIGHT_PER_WORKER)
        except concurrent.futures.process.BrokenProcessPool:
            raise WorkbenchError(
                "a sweep worker process died; in a script, start the sweep under `if __name__ == \"__main__\":` "
                "(worker processes are spawned and import it again), or pass workers=1 (--workers 1)."
            ) from None
        finally:
            pool.shutdown(wait=True, cancel_futures=True)


def _bounded(pool, items: Iterator, limit: int) -> Iterator[dict]:
    pending = set()
    for input_id, feed in items:
        pending.add(pool.submit(runner.worker_evaluate, input_id, feed))
        if len(pending) >= limit:
            done, pending = concurrent.futures.wait(pending, return_when=concurrent.futures.FIRST_COMPLETED)
            yield from (future.result() for future in done)
    for future in concurrent.futures.as_completed(pending):
        yield future.result()
