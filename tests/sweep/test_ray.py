"""The same sweep as Ray tasks on a local cluster (one module, one cluster: Ray takes seconds to start)."""

import socket

import pytest
import ray
from ray.cluster_utils import Cluster

import workbench


@pytest.fixture(scope="module")
def cluster():
    """A local two-CPU cluster, as ray.init(num_cpus=2) makes, with its agents' ports chosen here: given none,
    the raylet waits at most 15 s for the agents to report theirs, which a busy 2-core machine can exceed."""
    ports = {name: _free_port() for name in ("metrics_agent_port", "dashboard_agent_listen_port",
                                             "runtime_env_agent_port", "metrics_export_port")}
    head = Cluster(initialize_head=True, head_node_args={"num_cpus": 2, "include_dashboard": False, **ports})
    ray.init(address=head.address, log_to_driver=False)
    yield
    ray.shutdown()
    head.shutdown()


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_a_ray_sweep_equals_the_local_one(cluster, attention_path, feed_folder, tmp_path):
    local = workbench.sweep(attention_path, inputs=feed_folder, work=tmp_path / "local", workers=2, progress=False)
    on_ray = workbench.sweep(attention_path, inputs=feed_folder, work=tmp_path / "ray", ray="auto", progress=False)
    assert on_ray.stats["backend"] == "ray auto" and on_ray.stats["computed"] == 12
    assert _comparable(on_ray) == _comparable(local)
    assert on_ray.groups[0].line() == "root Where_5 (constant_out_of_range): 3 of 12 inputs (25.0%), all with a fully padded row"


def test_a_ray_sweep_resumes_from_the_local_work_folder(cluster, attention_path, feed_folder, tmp_path):
    workbench.sweep(attention_path, inputs=feed_folder, work=tmp_path / "work", workers=1, progress=False)
    resumed = workbench.sweep(attention_path, inputs=feed_folder, work=tmp_path / "work", ray="auto", progress=False)
    assert (resumed.stats["computed"], resumed.stats["reused"]) == (0, 12)


def _comparable(result) -> dict:
    return {k: v for k, v in result.to_dict().items() if k not in ("stats", "work_file")}
