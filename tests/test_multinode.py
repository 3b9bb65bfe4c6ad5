"""The Ray engine on a real multi-node cluster on this machine: a head and two worker nodes (separate
raylets, object stores and worker processes, `ray.cluster_utils.Cluster`), `grit run --ray-address` as
its own driver process, work placed on the worker nodes by a custom resource; faults: the driver killed
mid-run then a rerun, and a worker node killed mid-run.

Every build must equal a clean local-engine build (row for row, member for member), every input key once.
Slow: starting the cluster costs tens of seconds on a loaded 2-core machine.
"""
from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.build_files import done_names, temp_files
from tests.test_pipeline import NOOP_FLAGS, REPO, all_rows, snapshot
from tests.test_pipeline_ray import make_worlds

pytestmark = [pytest.mark.slow, pytest.mark.ray]

WORKER_RESOURCE = "grit_worker"
NODE_CPUS = 4  # logical: one node alone can host every pool (1 spaCy + 1 detector + expansion + tasks)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _add_worker(cluster):
    return cluster.add_node(num_cpus=NODE_CPUS, resources={WORKER_RESOURCE: 1}, object_store_memory=80 * 2**20)


@pytest.fixture(scope="module")
def cluster():
    from ray.cluster_utils import Cluster

    # The head has CPUs but not the worker resource: nothing of the pipeline may run there.
    cluster = Cluster(initialize_head=True, connect=False,
                      head_node_args={"num_cpus": 2, "object_store_memory": 80 * 2**20,
                                      "dashboard_port": _free_port()})
    try:
        workers = [_add_worker(cluster), _add_worker(cluster)]
        cluster.wait_for_nodes(timeout=120)
        yield cluster, workers
    finally:
        cluster.shutdown()


@pytest.fixture(scope="module")
def worlds(tmp_path_factory):
    return make_worlds(tmp_path_factory.mktemp("multinode"), clean_shards=6, samples_per_shard=12)


def _grit_run(address: str, input_dir: Path, output: Path, env_extra: dict | None = None) -> subprocess.Popen:
    args = [sys.executable, "-m", "grit_pipeline", "run", "--input", str(input_dir), "--output", str(output),
            "--ray-address", address, "--node-resource", WORKER_RESOURCE, "--text-batch-size", "4",
            "--ground-batch-size", "2", "--no-progress", *NOOP_FLAGS]
    env = {**os.environ, "NO_ALBUMENTATIONS_UPDATE": "1", "HF_HUB_OFFLINE": "1", "RAY_USAGE_STATS_ENABLED": "0",
           **(env_extra or {})}
    env.pop("RAY_ADDRESS", None)
    return subprocess.Popen(args, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _finish(process: subprocess.Popen, timeout: float = 400) -> tuple[int, str, str]:
    out, err = process.communicate(timeout=timeout)
    return process.returncode, out, err


def _check_build(output: Path, reference: Path, keys: int) -> None:
    assert snapshot(output) == snapshot(reference)
    grit, rejects = all_rows(output)
    got = [r["key"] for r in grit + rejects]
    assert len(got) == len(set(got)) == keys
    assert not (output / "_parts").exists() and not temp_files(output)


def test_driver_killed_mid_run_then_rerun_on_the_worker_nodes(cluster, worlds, tmp_path):
    """The driver process SIGKILLs itself once one shard is committed; the cluster cleans up its job; the
    rerun skips the committed shards, discards staged parts and gives the local engine's build. All work
    ran on the worker nodes (the head lacks the resource)."""
    ray_cluster, workers = cluster
    root, local = worlds
    output = tmp_path / "grit"
    killed = _grit_run(ray_cluster.address, root / "broken", output, {"GRIT_FAULT_INJECTION": "1", "GRIT_FAULT_KILL_DRIVER_AFTER_COMMITS": "1"})
    code, _, err = _finish(killed)
    assert code == -signal.SIGKILL, err[-3000:]
    done = len(done_names(output))
    assert 1 <= done
    code, _, err = _finish(_grit_run(ray_cluster.address, root / "broken", output))
    assert code == 0, err[-4000:]
    _check_build(output, local["broken"], keys=25)
    last_run = json.loads((output / "_run.json").read_text())["last_run"]
    assert last_run["shards_skipped"] >= done
    # Parts were written and shards committed on worker nodes only; so did the stage actors run.
    worker_ids = {w.node_id for w in workers}
    nodes = last_run["nodes"]
    assert set(nodes) <= worker_ids and sum(n["commits"] for n in nodes.values()) == 5 - last_run["shards_skipped"]
    from ray.util.state import list_actors

    actors = list_actors(address=ray_cluster.address, detail=True, limit=1000)
    stage_nodes = {a.node_id for a in actors if "MapWorker" in a.class_name or "Write" in a.class_name}
    assert stage_nodes and stage_nodes <= worker_ids, (stage_nodes, worker_ids)


def test_a_worker_node_killed_mid_run(cluster, worlds, tmp_path):
    """One worker node's raylet (and its workers) is killed as soon as the first part is staged. Ray
    retries on the surviving node, or the run fails with a clear message and the rerun resumes; either
    way the build equals a clean run's."""
    ray_cluster, workers = cluster
    root, local = worlds
    output = tmp_path / "grit"
    process = _grit_run(ray_cluster.address, root / "clean", output)
    deadline = time.monotonic() + 300
    while not list((output / "_parts").glob("*/*.parquet")) and process.poll() is None:
        assert time.monotonic() < deadline, "no part was staged"
        time.sleep(0.05)
    victim = workers.pop(0)
    ray_cluster.remove_node(victim, allow_graceful=False)
    code, out, err = _finish(process)
    print(f"worker node killed mid-run: the run {'completed (Ray retried)' if code == 0 else 'failed: ' + err.strip()[-300:]}")
    if code != 0:
        assert "Traceback" not in err.strip().splitlines()[-1] and err.strip(), err[-3000:]
        code, out, err = _finish(_grit_run(ray_cluster.address, root / "clean", output))
        assert code == 0, err[-4000:]
    _check_build(output, local["clean"], keys=72)
    # (The last test of the module: the cluster keeps one worker node from here on.)
