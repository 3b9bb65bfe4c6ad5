"""The Ray engine: the same stages as the local engine, spread over a machine's cores or a cluster's nodes.

This module connects to (or starts) Ray, picks one of two execution plans and accounts for what the workers
wrote. The plan (``ray_operators.plan_operators``) fuses consecutive stages into one operator: a process runs
them one after the other on its batch, exactly as the local engine does, and no sample crosses a process
boundary between them. Only a stage that runs on GPUs gets an operator of its own (its actors hold the GPUs;
the CPU stages around it feed it from their own processes). The first operator reads its shards itself and
the last one writes, so on a machine or cluster without GPUs one operator does everything and image bytes
never enter Ray's object store:

    without GPUs:  shard names --[read, noun chunks, ground, expand, write parts] x one actor per CPU-->
                   (``ray_actor_pool``: plain Ray actors fed one shard at a time by the driver)
    with GPUs:     shard names --[read, noun chunks] (max(--text-pool, --read-parallelism) actors)--> samples
                               --[ground] (--ground-pool actors, --num-gpus each)--> samples
                               --[expand, write parts] (one actor)-->
                   (``ray_data_streaming``: Ray Data streams between the pools, with backpressure)
    then:          driver: receives one small row per part (keys, statuses), never samples; when a shard's
                   parts hold all its samples, a worker merges them into the final files, ``NNNNN.done``
                   last (see ``parts``): without GPUs the actor that wrote the shard's last part, before
                   its next shard (no other worker process to start), else a commit task.

Every actor and task also asks for a small share of ``config.node_resource`` when set, so a cluster can keep
the pipeline off nodes without that resource (e.g. the head). A stage's start-up (imports, model load) runs
once per actor, in its constructor. The driver's memory and CPU per sample do not depend on image size: it
holds keys and statuses of the shards in flight only.
"""
from __future__ import annotations

import contextlib
import math
import os
import sys
import time
from typing import TYPE_CHECKING, Any, Iterator

from grit_pipeline import fault_injection

from .config import PipelineConfig
from .parts import PartLedger, commit_shard, remove_stale_parts
from .preflight import PreflightError, check_cluster_gpus
from .ray_actor_pool import run_fused
from .ray_data_streaming import run_streaming
from .ray_operators import (Operator, check_cluster_cpus, fused_pool, machine_fault, placement, plan_operators,
                            streaming_cpus)
from .stages import FUSED, LIGHT_CPUS

if TYPE_CHECKING:
    from .api import ShardJob

RAY_EXIT_WAIT_S = 5.0  # how long stop_ray waits for a local Ray's processes to exit (then kills them)
_local_ray: list = []  # psutil.Process of each process the last init_ray's ray.init started

def init_ray(config: PipelineConfig) -> bool:
    """Connect to ``config.ray_address`` (else ``$RAY_ADDRESS``, which ``ray job submit`` sets for its
    drivers) or start a local Ray in this process. True when this call connected/started it."""
    import ray

    if ray.is_initialized():
        return False
    address = config.ray_address or os.environ.get("RAY_ADDRESS")
    if address:
        try:
            ray.init(address=address, configure_logging=False)
        except Exception as error:  # noqa: BLE001 - e.g. ConnectionError: one line, not Ray's traceback
            message = " ".join(str(error).split())[:300]
            raise PreflightError(f"cannot connect to the Ray cluster at {address}: {type(error).__name__}: "
                                 f"{message}") from error
        return True
    cpus = config.resolved_num_cpus()
    if config.resolved_num_gpus(cluster_gpus=local_gpus()) > 0:
        # The streaming plan: at least enough logical CPUs for all its actor pools and commits, so it can
        # always be scheduled on a small machine (Ray oversubscribes; the OS shares).
        cpus = max(cpus, math.ceil(streaming_cpus(config, FUSED)))
    resources = {config.node_resource: 1.0} if config.node_resource else None
    # address="local": always a fresh in-process cluster, never one a `ray start` left on this machine.
    # No worker is started ahead: the actors start their own, and idle ones would only cost start-up CPU.
    # A detector from outside imported from a folder off site-packages (module:Class in a tests/ folder, an
    # entry point next to it): the workers get that folder on their PYTHONPATH (docs/detectors.md).
    from grit_pipeline.detectors.base import plugin_import_paths

    folders = plugin_import_paths(config.detector)
    pythonpath = os.pathsep.join(folders + [p for p in [os.environ.get("PYTHONPATH")] if p])
    runtime_env = {"env_vars": {"PYTHONPATH": pythonpath}} if folders else None
    import psutil

    before = {child.pid for child in psutil.Process().children()}
    ray.init(address="local", num_cpus=cpus, resources=resources, include_dashboard=False, log_to_driver=True,
             configure_logging=False, _system_config={"enable_worker_prestart": False}, runtime_env=runtime_env)
    # The processes ray.init started (GCS, raylet, dashboard, monitors): stop_ray sees them and theirs gone.
    _local_ray[:] = [child for child in psutil.Process().children() if child.pid not in before and _of_ray(child)]
    return True


def _of_ray(process) -> bool:
    """Whether a process runs a program of the ``ray`` package (not some other child of this process)."""
    import psutil

    try:
        return any(f"{os.sep}ray{os.sep}" in part for part in process.cmdline())
    except psutil.Error:
        return False


def stop_ray() -> None:
    """``ray.shutdown()``, then, for a local Ray this process started, wait until its processes and theirs
    (the raylet's agents and workers, which exit once the raylet is gone) are gone: none outlives the run.

    Ray stops its processes one after the other, giving each up to a second to exit: about 1.4 s of a run
    (docs/robustness.md; it has no public call to kill them at once). A process still there after
    RAY_EXIT_WAIT_S is killed."""
    import psutil
    import ray

    processes = list(_local_ray)
    for top in _local_ray:
        with contextlib.suppress(psutil.Error):
            processes += top.children(recursive=True)
    _local_ray.clear()
    ray.shutdown()
    for last_try in (False, True):
        deadline = time.monotonic() + RAY_EXIT_WAIT_S
        while time.monotonic() < deadline and any(_running(p) for p in processes):
            time.sleep(0.02)
        if last_try:
            break
        for process in processes:
            with contextlib.suppress(psutil.Error):
                if _running(process):
                    process.kill()


def _running(process) -> bool:
    """Whether a ``psutil.Process`` is still there (a zombie waits only to be reaped)."""
    import psutil

    try:
        return process.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def local_gpus() -> float:
    """GPUs of this machine as Ray counts them (without importing torch)."""
    try:
        from ray._private.accelerators import get_accelerator_manager_for_resource

        return float(get_accelerator_manager_for_resource("GPU").get_current_node_num_accelerators() or 0)
    except Exception:  # noqa: BLE001 - an unknown Ray layout: assume none (device=auto still finds CUDA later)
        return 0.0


def usable_nodes(config: PipelineConfig) -> list[dict[str, float]]:
    """The resources of each alive node the pipeline may use (those with ``config.node_resource`` when set)."""
    import ray

    nodes = [n["Resources"] for n in ray.nodes() if n.get("Alive")]
    return [n for n in nodes if n.get(config.node_resource, 0) > 0] if config.node_resource else nodes


def usable_resources(config: PipelineConfig, nodes: list[dict[str, float]] | None = None) -> tuple[float, float]:
    """CPUs and memory (bytes for tasks) of the alive nodes the pipeline may use (``nodes``: of usable_nodes)."""
    nodes = usable_nodes(config) if nodes is None else nodes
    return sum(n.get("CPU", 0) for n in nodes), sum(n.get("memory", 0) for n in nodes)


def check_shared_storage(*urls: str) -> None:
    """Workers and the driver are different processes: a per-process filesystem cannot carry a run."""
    for url in urls:
        if url and url.startswith("memory://"):
            raise ValueError(f"{url}: memory:// lives inside one process, but the Ray engine reads and writes "
                             f"in its worker processes; use a shared path or URL, or --engine local")


# --- running ---------------------------------------------------------------------------------------------------

def run_ray(config: PipelineConfig, job: ShardJob, stage_classes, todo: list[str]) -> None:
    """Finish the shards ``todo`` of ``job`` on Ray: connect (or start a local Ray, stopped at the end), plan
    the operators for the cluster's GPUs and run them (``run_plan``)."""
    import ray

    check_shared_storage(job.source.url, job.sink.folder.url)
    started = time.perf_counter()
    started_here = init_ray(config)
    try:
        nodes = usable_nodes(config)
        cpus, memory = usable_resources(config, nodes)
        if config.node_resource and not cpus:
            raise PreflightError(f"no node of the Ray cluster has the resource {config.node_resource!r} "
                                 f"(start worker nodes with --resources '{{\"{config.node_resource}\": 1}}')")
        # Ask the cluster, not this process: a CPU-only head node still drives GPU workers.
        num_gpus = config.resolved_num_gpus(cluster_gpus=ray.cluster_resources().get("GPU", 0))
        check_cluster_gpus(num_gpus, [n.get("GPU", 0.0) for n in nodes])
        operators = plan_operators(stage_classes, gpus=num_gpus > 0)
        job.add_startup({"ray": time.perf_counter() - started})
        if len(operators) > 1:
            check_cluster_cpus(config, cpus, stage_classes)
        run_plan(config, job, operators, todo, cpus, memory, num_gpus)
    finally:
        if started_here:
            stop_ray()
        sys.stderr.flush()


def run_plan(config: PipelineConfig, job: ShardJob, operators: list[Operator], todo: list[str], cpus: float,
             memory: float, num_gpus: float) -> None:
    """Run ``operators`` over the shards ``todo``: one operator in a pool of actors (``ray_actor_pool``),
    several streamed through Ray Data (``ray_data_streaming``); workers commit each complete shard."""
    if len(operators) == 1:
        pool, actor_cpus = fused_pool(len(todo), cpus, memory)
        job.progress.message(f"Ray: {pool} {operators[0].name} actor(s) of {actor_cpus:g} CPU "
                             f"({cpus:g} CPUs in the cluster, {len(todo)} shards to do)")
        commit_on_workers(config, run_fused(config, job, operators[0], todo, pool, actor_cpus), job, todo)
    else:
        commit_on_workers(config, run_streaming(config, job, operators, todo, num_gpus), job, todo)


def _commit_task(storage_retry: tuple[int, float], *args) -> dict[str, Any]:
    """``parts.commit_shard`` as a Ray task, under the run's storage retry policy."""
    from grit_pipeline.faults import configure_storage_retry

    configure_storage_retry(*storage_retry)
    return commit_shard(*args)


def commit_on_workers(config: PipelineConfig, part_infos: Iterator[dict[str, Any]], job: ShardJob,
                      todo: list[str]) -> None:
    """Account for the parts the workers wrote and have each complete shard committed by a worker.

    The ledger releases a shard's keys as soon as its commit is asked for: the driver holds the keys of the
    shards in flight only, and per committed shard its counts."""
    import ray

    from ray.exceptions import ActorDiedError, ActorUnavailableError, RayTaskError

    from grit_pipeline.faults import StorageError

    # A commit is idempotent: Ray retries it on a lost worker, and on storage that kept failing.
    commit = ray.remote(_commit_task).options(max_retries=3, retry_exceptions=[StorageError],
                                              **placement(config, LIGHT_CPUS))
    sink_ref, source_ref = ray.put(job.sink), ray.put(job.source)
    storage_retry = (config.storage_retries, config.storage_backoff_s)
    ledger = PartLedger()
    pending: dict[Any, tuple[str, list[str], dict[str, int], bool]] = {}  # ref -> (shard, parts, counts, on actor)

    def submit(shard: str, parts: list[str], counts: dict[str, int], actor=None) -> None:
        """A commit on ``actor`` (the one that wrote the shard's last part), else as a task on any worker."""
        args = (shard, parts, job.expected[shard], job.describe(shard))
        ref = (actor.commit.remote(sink_ref, *args) if actor is not None
               else commit.remote(storage_retry, sink_ref, source_ref, *args))
        pending[ref] = (shard, parts, counts, actor is not None)

    def harvest(timeout: float | None) -> None:
        ready, _ = ray.wait(list(pending), num_returns=len(pending), timeout=timeout)
        for ref in ready:
            shard, parts, counts, on_actor = pending.pop(ref)
            try:
                result = ray.get(ref)  # a commit task that failed all its retries fails the run here
            except (ActorDiedError, ActorUnavailableError, RayTaskError) as error:
                if not on_actor or (isinstance(error, RayTaskError) and not machine_fault(error)):
                    raise
                # the actor was lost before it committed, or its storage kept failing: a task does it
                submit(shard, parts, counts)
                continue
            job.count_node(result["node"], "commits")
            job.committed(shard, result["samples"], counts)
            fault_injection.maybe_kill("driver_after_commits")

    for info in part_infos:
        if ledger.add(info):
            job.count_node(info["node"], "parts")
            job.progress.samples_finished(info["shard"], info["shard_total"], len(info["keys"]))
            if ledger.complete(info["shard"]):
                parts, counts = ledger.seal(info["shard"])
                submit(info["shard"], parts, counts, info.get("actor"))
        # else: a duplicate attempt's part, never merged, deleted with the shard's staging
        if pending:
            harvest(timeout=0)
    partial = ledger.incomplete()
    if partial:
        raise RuntimeError(f"samples lost in the Ray pipeline (shard: samples received): {partial}")
    for shard in todo:
        if not ledger.seen(shard):  # a shard without samples sends nothing through the pipeline
            submit(shard, [], {})
    while pending:
        harvest(timeout=None)
    job.add_startup(ledger.startup_s)
    job.summary.duplicate_parts = len(ledger.rejected)
    remove_stale_parts(job.sink.folder.url, todo)  # parts of duplicate attempts that arrived after a commit
