"""Running a sweep's inputs as Ray tasks: on a cluster (`--ray ADDRESS`) or one `ray.init()` finds or starts.

Both models go into Ray's object store once (`ray.put`); each worker is an actor that loads them once and
then evaluates inputs as method calls, so a task carries only its feed. Ray is optional (`pip install .[cluster]`).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

from workbench.errors import WorkbenchError
from workbench.sweep import runner

INSTALL_HINT = "pip install .[cluster] (or pip install 'ray[default]')"


def ray_module():
    try:
        import ray
    except ImportError:
        raise WorkbenchError(f"--ray needs Ray, which is not installed: {INSTALL_HINT}.") from None
    return ray


def connect(address: str) -> None:
    """Join the cluster at `address`, or with "auto" call ray.init() (RAY_ADDRESS, a local cluster, or a new one)."""
    ray = ray_module()
    if ray.is_initialized():
        return
    try:
        if address == "auto":
            ray.init(include_dashboard=False, log_to_driver=False)
        else:
            ray.init(address=address, log_to_driver=False)
    except Exception as exc:  # Ray raises bare Exceptions for a node that does not start
        raise WorkbenchError(f"cannot connect to the Ray cluster at {address}: {' '.join(str(exc).split())[:200]}") from None


class _SweepWorker:
    """A Ray actor: both models loaded once, then one input per call."""

    def __init__(self, reference_bytes: bytes, candidate_bytes: bytes, check: runner.Check, threads: int):
        runner.init_worker(reference_bytes, candidate_bytes, check, threads)

    def evaluate(self, input_id: str, feed: dict) -> dict:
        return runner.worker_evaluate(input_id, feed)


def on_ray(address: str, reference_bytes: bytes, candidate_bytes: bytes, check: runner.Check, items: Iterable,
           workers: int | None) -> Iterator[dict]:
    """Records as actors finish them. `workers`: actors to start (default: the cluster's CPUs)."""
    ray = ray_module()
    connect(address)
    from ray.util import ActorPool

    count = workers or max(1, int(ray.cluster_resources().get("CPU", 1)))
    reference_ref, candidate_ref = ray.put(reference_bytes), ray.put(candidate_bytes)  # once, not per task
    actor_class = ray.remote(num_cpus=1)(_SweepWorker)
    actors = [actor_class.remote(reference_ref, candidate_ref, check, 1) for _ in range(count)]
    try:
        pool = ActorPool(actors)
        yield from pool.map_unordered(lambda actor, item: actor.evaluate.remote(*item), items)
    finally:
        for actor in actors:
            ray.kill(actor)
