"""The Ray engine: the same stages as the local engine, spread over a machine's cores or a cluster's nodes.

The plan (``plan_operators``) fuses consecutive stages into one operator: a process runs them one after the
other on its batch, exactly as the local engine does, and no sample crosses a process boundary between
them. Only a stage that runs on GPUs gets an operator of its own (its actors hold the GPUs; the CPU stages
around it feed it from their own processes). The first operator reads its shards itself and the last one
writes, so on a machine or cluster without GPUs one operator does everything and image bytes never enter
Ray's object store:

    without GPUs:  shard names --[read, noun chunks, ground, expand, write parts] x one actor per CPU-->
    with GPUs:     shard names --[read, noun chunks] (max(--text-pool, --read-parallelism) actors)--> samples
                               --[ground] (--ground-pool actors, --num-gpus each)--> samples
                               --[expand, write parts] (one actor)-->
    then:          driver: receives one small row per part (keys, statuses), never samples; when a shard's
                   parts hold all its samples, a worker merges them into the final files, ``NNNNN.done``
                   last (see ``parts``): without GPUs the actor that wrote the shard's last part, before
                   its next shard (no other worker process to start), else a commit task.

Without GPUs the operator is a pool of plain Ray actors fed one shard at a time by the driver (``_run_fused``;
the shard of an actor that dies goes back to the queue); the pool has one actor per CPU of the cluster (not
more than the shards to do, nor than its memory holds at ACTOR_MEMORY_BYTES each). With GPUs the three
operators stream through Ray Data (``_run_streaming``), which applies backpressure between them. Every
actor and task also asks for a small share of ``config.node_resource`` when set, so a cluster can keep
the pipeline off nodes without that resource (e.g. the head). A stage's start-up (imports, model load)
runs once per actor, in its constructor. The driver's memory and CPU per sample do not depend on image
size: it holds keys and statuses of the shards in flight only.
"""
from __future__ import annotations

import contextlib
import math
import os
import signal
import sys
import time
from collections import deque
from dataclasses import dataclass
from typing import Any, Iterator

import pyarrow as pa

from .config import PipelineConfig
from .engine_local import _chunks, run_stages
from .parts import PART_INFO_SCHEMA, PartLedger, commit_shard, current_node, remove_stale_parts, write_parts
from .preflight import PreflightError, check_cluster_gpus
from .sample import rows_to_table, table_to_rows
from .stages import FUSED, LIGHT_CPUS

NODE_RESOURCE_SHARE = 0.001  # of config.node_resource per task/actor: placement only, never a limit
# What one actor of the fused operator may take (Python, spaCy, torch, a small detector, one input shard):
# the pool is never larger than the cluster's memory for Ray tasks divided by this.
ACTOR_MEMORY_BYTES = 1 << 30
# Bench only (`make bench`, entry `driver`): the former data path, where the driver receives every finished
# sample (image bytes included) and writes the shards itself, kept to measure what moving it saved.
DRIVER_WRITES_ENV = "GRIT_BENCH_DRIVER_WRITES"
# Crash-test hook: the driver SIGKILLs itself once it has seen this many shards committed.
KILL_DRIVER_ENV = "GRIT_FAULT_KILL_DRIVER_AFTER_COMMITS"


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
    ray.init(address="local", num_cpus=cpus, resources=resources, include_dashboard=False, log_to_driver=True,
             configure_logging=False, _system_config={"enable_worker_prestart": False}, runtime_env=runtime_env)
    return True


def stop_ray() -> None:
    """``ray.shutdown()``; a local cluster this process started has its processes killed all at once.

    Ray stops its own processes one after the other, giving each a second to exit (1.3-1.5 s of a run on two
    cores). By then the run has committed every shard or failed, so they have nothing left to save: the
    processes ``ray.init`` started (GCS, raylet, dashboard, monitors) and theirs (the raylet's agents and
    workers) get SIGKILL together, the children first so that the raylet reaps them, and are waited for.
    A Ray without the ``_global_node`` this relies on is stopped the plain way."""
    import ray

    try:
        from ray._private.worker import _global_node as node
    except ImportError:
        node = None
    started = getattr(node, "all_processes", None)
    if isinstance(started, dict):
        def kill_all_processes(**_ignored) -> None:
            _kill_process_tree([info.process for infos in started.values() for info in infos])

        node.kill_all_processes = kill_all_processes
    ray.shutdown()


def _kill_process_tree(popens: list) -> None:
    """SIGKILL the descendants of the ``subprocess.Popen`` processes ``popens``, then those processes; wait
    (at most a few seconds) until each is gone or a zombie, and reap the ``popens``."""
    import psutil

    tops, below = [], []
    for popen in popens:
        try:
            top = psutil.Process(popen.pid)
            below += top.children(recursive=True)
            tops.append(top)
        except psutil.Error:  # already gone
            continue
    for group in (below, tops):
        for process in group:
            try:
                process.kill()
            except psutil.Error:
                pass
        deadline = time.monotonic() + 3.0
        while time.monotonic() < deadline and any(_running(p) for p in group):
            time.sleep(0.01)
    for popen in popens:
        popen.poll()


def _running(process) -> bool:
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


# --- the plan ------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Operator:
    """Consecutive stages run by one process per batch; the first operator reads, the last one writes."""

    stages: tuple[type, ...]
    reads: bool
    writes: bool
    gpu: bool = False

    @property
    def name(self) -> str:
        """E.g. ``ReadNounChunks``, ``Ground``, ``ExpandWrite`` (what Ray's actor list and progress show)."""
        words = (["Read"] if self.reads else []) + [cls.__name__.removesuffix("Stage") for cls in self.stages]
        return "".join(words + (["Write"] if self.writes else [])) or "Stages"

    def pool_size(self, config: PipelineConfig) -> int:
        """Actors of this operator in the streaming plan: the largest pool setting of its stages; the
        reading operator has at least ``read_parallelism`` (each of its actors reads one shard at a time)."""
        pools = [cls(config).pool_size() for cls in self.stages] + ([config.read_parallelism] if self.reads else [])
        return max(pools or [1])

    def cpus(self, config: PipelineConfig) -> float:
        return max([cls(config).cpus for cls in self.stages] or [LIGHT_CPUS])


def plan_operators(stage_classes, gpus: bool) -> list[Operator]:
    """Fuse consecutive stages into operators; with ``gpus``, a stage that uses a GPU stands alone."""
    groups: list[tuple[tuple[type, ...], bool]] = []
    current: list[type] = []
    for cls in stage_classes:
        if gpus and cls.uses_gpu:
            if current:
                groups.append((tuple(current), False))
                current = []
            groups.append(((cls,), True))
        else:
            current.append(cls)
    if current or not groups:
        groups.append((tuple(current), False))
    last = len(groups) - 1
    return [Operator(stages, reads=i == 0, writes=i == last, gpu=gpu) for i, (stages, gpu) in enumerate(groups)]


def fused_pool(units: int, cpus: float, memory_bytes: float | None) -> tuple[int, float]:
    """Actors of the one-operator plan and the CPUs each asks for: one per CPU, no more than ``units``
    (shards to do) nor than ``memory_bytes`` holds; LIGHT_CPUS stay free for the commit tasks."""
    pool = max(1, min(units, int(cpus)))
    if memory_bytes:
        pool = max(1, min(pool, int(memory_bytes // ACTOR_MEMORY_BYTES)))
    return pool, max(0.1, min(1.0, (cpus - LIGHT_CPUS) / pool))


def placement(config: PipelineConfig, cpus: float, gpus: float = 0) -> dict[str, Any]:
    """Ray resource arguments of one task or actor."""
    args: dict[str, Any] = {"num_cpus": cpus}
    if gpus > 0:
        args["num_gpus"] = gpus
    if config.node_resource:
        args["resources"] = {config.node_resource: NODE_RESOURCE_SHARE}
    return args


def streaming_cpus(config: PipelineConfig, stage_classes=FUSED) -> float:
    """CPUs the streaming plan holds: its actors for the whole run, plus LIGHT_CPUS for commit tasks."""
    operators = plan_operators(stage_classes, gpus=True)
    return sum(op.cpus(config) * op.pool_size(config) for op in operators) + LIGHT_CPUS


def check_cluster_cpus(config: PipelineConfig, cluster_cpus: float, stage_classes=FUSED) -> None:
    """Fail fast with a clear message where the streaming plan's actor pools can never all be scheduled
    (Ray would wait). The fused plan is sized from the cluster and always fits."""
    pooled = [cls(config) for cls in stage_classes if cls.pool_setting]
    needed = streaming_cpus(config, stage_classes)
    if cluster_cpus < needed:
        flags = " + ".join(f"--{s.pool_setting.replace('_', '-')} {s.pool_size()}" for s in pooled) or "no pools"
        light = needed - sum(s.cpus * s.pool_size() for s in pooled)
        where = f" with the resource {config.node_resource!r}" if config.node_resource else ""
        raise PreflightError(
            f"the Ray cluster has {cluster_cpus:g} CPUs{where} but the pipeline needs {needed:g} "
            f"({flags} actors of 1 CPU, plus {light:g} for reading, expansion and writing); start the "
            f"nodes with more --num-cpus or use smaller pools")


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


# --- the actors ----------------------------------------------------------------------------------------------

class OperatorActor:
    """One process of an operator: its stages set up once (imports, model load) in the constructor.

    A setup error is raised on the first batch instead: an actor that dies in its constructor makes Ray
    retry and log it for ever, a failed batch stops the run with its cause."""

    def __init__(self, operator: Operator, config: PipelineConfig, source=None, sink_url: str | None = None):
        from grit_pipeline.faults import configure_storage_retry

        configure_storage_retry(config.storage_retries, config.storage_backoff_s)
        self.operator, self.source, self.sink_url = operator, source, sink_url
        self.chunk_rows = config.chunk_rows
        self.stages = [cls(config) for cls in operator.stages]
        self.setup_error = None
        try:
            for stage in self.stages:
                stage.ensure_setup()
        except Exception as error:  # noqa: BLE001 - see the class docstring
            self.setup_error = error

    def commit(self, sink, shard: str, part_names: list[str], params: dict, input_description: str) -> dict:
        """``parts.commit_shard`` in this actor's process (the fused plan: no other worker to start)."""
        return commit_shard(sink, self.source, shard, part_names, params, input_description)

    def run_shard(self, shard: str) -> Iterator[list[dict[str, Any]]]:
        """Read one shard, run the stages ``--chunk-rows`` samples at a time and write each chunk as a part;
        yields each part's ``PartInfo`` rows (the fused plan: a streaming generator task)."""
        if self.setup_error is not None:
            raise self.setup_error
        for chunk in _chunks(self.source, shard, self.chunk_rows):  # streamed: one chunk's images in memory
            chunk = run_stages(self.stages, chunk)
            yield write_parts(self.sink_url, chunk, node=current_node())
            del chunk  # (the image bytes of a chunk are on disk now)

    def __call__(self, table: pa.Table) -> Iterator[pa.Table]:
        """A Ray Data batch (the streaming plan): shard names when the operator reads, else samples;
        yields samples, or ``PART_INFO_SCHEMA`` rows when it writes.

        A fault of the machine ends this actor's process: Ray Data starts a replacement (at most
        ``--max-actor-replacements`` restarts per actor) and retries the batch there; samples a retry hands
        on twice are refused by the driver's ledger."""
        try:
            yield from self._batches(table)
        except Exception as error:  # noqa: BLE001 - only faults of the machine end the process
            if not machine_fault(error):
                raise
            print(f"[grit] {type(self).__name__} actor stops on a fault of the machine ({fault_line(error)}); "
                  f"Ray Data replaces it and retries the batch", file=sys.stderr, flush=True)
            os._exit(1)

    def _batches(self, table: pa.Table) -> Iterator[pa.Table]:
        if self.setup_error is not None:
            raise self.setup_error
        if self.operator.reads:
            for shard in table.column("shard").to_pylist():
                for chunk in _chunks(self.source, shard, self.chunk_rows):
                    yield self._handed_on(chunk)
        else:
            yield self._handed_on(table_to_rows(table))

    def _handed_on(self, samples: list[dict[str, Any]]) -> pa.Table:
        samples = run_stages(self.stages, samples)
        if self.operator.writes:
            return pa.Table.from_pylist(write_parts(self.sink_url, samples, node=current_node()),
                                        schema=PART_INFO_SCHEMA)
        return rows_to_table(samples)


def actor_class(operator: Operator) -> type:
    """``OperatorActor`` under the operator's name (Ray's actor list and Ray Data's progress show it)."""
    return type(operator.name, (OperatorActor,), {"__module__": __name__})


# --- running ---------------------------------------------------------------------------------------------------

def run_ray(config: PipelineConfig, job, stage_classes, todo: list[str]) -> None:
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
        if os.environ.get(DRIVER_WRITES_ENV) == "1":
            _collect_on_driver(config, job, stage_classes, todo, num_gpus)
        elif len(operators) == 1:
            pool, actor_cpus = fused_pool(len(todo), cpus, memory)
            job.progress.message(f"Ray: {pool} {operators[0].name} actor(s) of {actor_cpus:g} CPU "
                                 f"({cpus:g} CPUs in the cluster, {len(todo)} shards to do)")
            _commit_on_workers(config, _run_fused(config, job, operators[0], todo, pool, actor_cpus), job, todo)
        else:
            check_cluster_cpus(config, cpus, stage_classes)
            _commit_on_workers(config, _run_streaming(config, job, operators, todo, num_gpus), job, todo)
    finally:
        if started_here:
            stop_ray()
        sys.stderr.flush()


def _run_fused(config: PipelineConfig, job, operator: Operator, todo: list[str], pool: int,
               actor_cpus: float) -> Iterator[dict[str, Any]]:
    """The one-operator plan: a queue of shards, one at a time per actor; yields every part's ``PartInfo``.

    An actor that dies (its node lost, its process killed) or stops a shard on a fault of the machine
    (``faults.SystemicFault``: a CUDA error, a hung detector call; or storage that kept failing) gives its
    shard back to the queue: the actor is killed and a fresh one takes its place, at most
    ``config.max_actor_replacements`` times per run (then the run stops with the last fault). The parts it
    wrote are either accepted already (a retry's copies of the same keys are then refused by the ledger) or
    never seen (the retry's are accepted). Each ``PartInfo`` carries its actor under "actor", so the shard's
    commit can run there (before the actor's next shard: Ray runs one caller's calls to an actor in order)."""
    import ray
    from ray.exceptions import ActorDiedError, ActorUnavailableError, ObjectLostError, OwnerDiedError, RayTaskError

    lost = (ActorDiedError, ActorUnavailableError, ObjectLostError, OwnerDiedError)
    worker = ray.remote(actor_class(operator)).options(max_restarts=0, max_task_retries=0,
                                                      **placement(config, actor_cpus))
    sink_url = job.sink.folder.url

    def new_actor():
        return worker.remote(operator, config, job.source, sink_url)

    actors = [new_actor() for _ in range(pool)]
    replacements_left = config.max_actor_replacements
    queue = deque(todo)
    running: dict[Any, tuple[Any, str]] = {}  # streaming generator -> (actor, shard)

    def start(actor) -> None:
        shard = queue.popleft()
        running[actor.run_shard.options(num_returns="streaming").remote(shard)] = (actor, shard)

    for actor in actors[:len(queue)]:
        start(actor)
    while running:
        ready, _ = ray.wait(list(running), num_returns=1)
        for generator in ready:
            actor, shard = running[generator]
            try:
                infos = ray.get(next(generator))
            except StopIteration:
                del running[generator]
                if queue:
                    start(actor)
                continue
            except (*lost, RayTaskError) as error:
                if isinstance(error, RayTaskError) and not machine_fault(error):
                    raise  # a bug or a refusal of the stages: the run stops with it
                del running[generator]
                actors.remove(actor)
                queue.appendleft(shard)
                what = "was lost" if isinstance(error, lost) else "stopped on a fault of the machine"
                fault = fault_line(error)
                with contextlib.suppress(Exception):
                    ray.kill(actor, no_restart=True)  # (a hung detector call dies with its process)
                if replacements_left > 0:
                    replacements_left -= 1
                    actors.append(new_actor())
                    job.summary.actors_replaced += 1
                elif not actors:
                    from grit_pipeline.faults import SystemicFault

                    stop = SystemicFault(f"every Ray actor was lost or stopped by a fault and "
                                         f"--max-actor-replacements {config.max_actor_replacements} are used up; "
                                         f"last: {fault}")
                    stop.shard = shard
                    raise stop from error
                print(f"[grit] a Ray actor {what} on shard {shard} ({fault}); the shard goes to another actor"
                      f" ({replacements_left} replacement(s) left)", file=sys.stderr, flush=True)
                busy = {a for a, _ in running.values()}
                for other in [a for a in actors if a not in busy][:len(queue)]:
                    start(other)
                continue
            for info in infos:
                yield info | {"actor": actor}


def machine_fault(error: BaseException) -> bool:
    """A worker's error that is a fault of the machine (the shard is retried), not of the stages' code."""
    from grit_pipeline.faults import StorageError, SystemicFault, is_systemic, is_transient_storage_error

    cause = getattr(error, "cause", None) or error
    return (isinstance(cause, (SystemicFault, StorageError, MemoryError)) or is_systemic(cause)
            or is_transient_storage_error(cause))


def fault_line(error: BaseException) -> str:
    """A worker's error in one line: the cause's type and message, not Ray's traceback."""
    cause = getattr(error, "cause", None) or error
    text = str(cause).strip().splitlines()
    return f"{type(cause).__name__}: {text[-1][:300] if text else ''}"


def _run_streaming(config: PipelineConfig, job, operators: list[Operator], todo: list[str],
                   num_gpus: float) -> Iterator[dict[str, Any]]:
    """The plan with GPU operators: Ray Data streams batches between the operators' actor pools."""
    for table in _build_dataset(config, job, operators, todo, num_gpus).iter_batches(
            batch_format="pyarrow", batch_size=None, prefetch_batches=1):
        yield from table.to_pylist()


def _build_dataset(config: PipelineConfig, job, operators: list[Operator], todo: list[str], num_gpus: float,
                   write: bool = True):
    import ray
    from ray.data import ActorPoolStrategy

    context = ray.data.DataContext.get_current()
    context.enable_progress_bars = bool(config.progress)
    context.print_on_execution_start = bool(config.progress)
    if config.object_store_limit_mb:
        from ray.data import ExecutionResources

        # Backpressure holds the blocks in flight under this many bytes (Ray's default: a share of
        # the object store, i.e. of the machine's memory).
        context.execution_options.resource_limits = ExecutionResources.for_limits(
            object_store_memory=config.object_store_limit_mb * 1024 * 1024)
    ds = ray.data.from_items([{"shard": shard} for shard in todo], override_num_blocks=max(1, len(todo)))
    sink_url = job.sink.folder.url if write else None
    for operator in operators:
        if not write and operator.writes:
            operator = Operator(operator.stages, operator.reads, writes=False, gpu=operator.gpu)
        # The reading operator takes one shard name per call; the others --chunk-rows samples.
        ds = ds.map_batches(actor_class(operator),
                            fn_constructor_args=(operator, config, job.source if operator.reads else None,
                                                 sink_url if operator.writes else None),
                            batch_size=1 if operator.reads else config.chunk_rows, batch_format="pyarrow",
                            compute=ActorPoolStrategy(size=operator.pool_size(config)),
                            max_restarts=config.max_actor_replacements,
                            **placement(config, operator.cpus(config), num_gpus if operator.gpu else 0))
    return ds


def _commit_task(storage_retry: tuple[int, float], *args) -> dict[str, Any]:
    """``parts.commit_shard`` as a Ray task, under the run's storage retry policy."""
    from grit_pipeline.faults import configure_storage_retry

    configure_storage_retry(*storage_retry)
    return commit_shard(*args)


def _commit_on_workers(config: PipelineConfig, part_infos: Iterator[dict[str, Any]], job, todo: list[str]) -> None:
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
            if os.environ.get(KILL_DRIVER_ENV) and len(job.summary.shards_written) >= int(os.environ[KILL_DRIVER_ENV]):
                os.kill(os.getpid(), signal.SIGKILL)

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


def _collect_on_driver(config: PipelineConfig, job, stage_classes, todo: list[str], num_gpus: float) -> None:
    """The former data path (bench comparison only): every finished sample to the driver, which writes."""
    operators = plan_operators(stage_classes, gpus=num_gpus > 0)
    buffers: dict[str, list[dict[str, Any]]] = {}
    ds = _build_dataset(config, job, operators, todo, num_gpus, write=False)
    for table in ds.iter_batches(batch_format="pyarrow", batch_size=None, prefetch_batches=1):
        for row in table_to_rows(table):
            buffer = buffers.setdefault(row["source_shard"], [])
            buffer.append(row)
            if len(buffer) == row["shard_total"]:
                job.write(row["source_shard"], buffers.pop(row["source_shard"]))
    for shard in todo:
        if shard not in job.summary.shards_written:
            job.write(shard, job.source.read(shard))
