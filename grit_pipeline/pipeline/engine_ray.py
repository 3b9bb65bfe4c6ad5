"""The Ray Data engine: one streaming pass over all shards; workers do all the reading and writing.

    shards --read (tasks, ``read_parallelism`` at a time)--> samples
           --noun_chunks / ground / expand (actor pools, as each stage class declares)-->
           --write parts (tasks: each batch's samples into OUTPUT/_parts/NNNNN/, see ``parts``)-->
    driver: receives one small row per part (keys, statuses), never samples; when a shard's parts hold all
            its samples, a commit task on a worker merges them into the final files, ``NNNNN.done`` last.

The plan is built from the stage classes' declarations (pool and batch size settings, CPUs, GPU); every
task and actor also asks for a small share of ``config.node_resource`` when set, so a cluster can keep the
pipeline off nodes without that resource (e.g. the head). Ray Data's streaming executor applies
backpressure between operators, and at most ``read_parallelism`` shards are read at a time, so memory
depends on batch and pool sizes, not on the number of shards. The driver's memory and CPU per sample do not
depend on image size: it holds keys and statuses of the shards in flight only.
"""
from __future__ import annotations

import os
import signal
import sys
from typing import Any

import pyarrow as pa

from .config import PipelineConfig
from .parts import PART_INFO_SCHEMA, PartLedger, commit_shard, current_node, remove_stale_parts, write_parts
from .sample import rows_to_table, table_to_rows
from .stages import FUSED, LIGHT_CPUS

READ_BLOCK_ROWS = 256  # samples per block a read task yields (bounds block size; an input shard is ~10k)
NODE_RESOURCE_SHARE = 0.001  # of config.node_resource per task/actor: placement only, never a limit
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
    common = dict(include_dashboard=False, log_to_driver=True, configure_logging=False)
    address = config.ray_address or os.environ.get("RAY_ADDRESS")
    if address:
        ray.init(address=address, configure_logging=False)
        return True
    # Logical CPUs: all cores, but at least enough for both actor pools plus the light reading and expansion
    # work, so the pipeline can always be scheduled on a small machine (Ray oversubscribes; the OS shares).
    cpus = max(config.resolved_num_cpus(), config.text_pool + config.ground_pool + 2)
    resources = {config.node_resource: 1.0} if config.node_resource else None
    # address="local": always a fresh in-process cluster, never one a `ray start` left on this machine.
    ray.init(address="local", num_cpus=cpus, resources=resources, **common)
    return True


def read_shards(batch, source):
    """Map task: shard names -> that shard's samples, in blocks of READ_BLOCK_ROWS rows."""
    for shard in batch.column("shard").to_pylist():
        samples = source.read(shard)
        for start in range(0, len(samples), READ_BLOCK_ROWS):
            yield rows_to_table(samples[start:start + READ_BLOCK_ROWS])


def write_parts_batch(table, sink_url):
    """Map task: finished samples -> part files under ``sink_url``; returns one ``PART_INFO_SCHEMA`` row each."""
    return pa.Table.from_pylist(write_parts(sink_url, table_to_rows(table), node=current_node()),
                                schema=PART_INFO_SCHEMA)


class _StageActor:
    """Ray actor hosting one stage; its start-up (imports, model load) runs once, in the constructor."""

    def __init__(self, stage_class, config):
        self.stage = stage_class(config)
        self.setup_error = None
        try:
            self.stage.ensure_setup()
        except Exception as error:  # noqa: BLE001 - raised on the first batch instead: an actor that dies in
            self.setup_error = error  # its constructor makes Ray retry and log it for ever; a failed batch stops the run

    def __call__(self, table):
        if self.setup_error is not None:
            raise self.setup_error
        return rows_to_table(self.stage(table_to_rows(table)))


def actor_class(stage_class) -> type:
    """An actor class named after the stage (NounChunks, Ground, Expand), as Ray Data's progress shows it."""
    name = "".join(part.title() for part in stage_class.name.split("_"))
    return type(name, (_StageActor,), {"__module__": __name__})


def placement(config: PipelineConfig, cpus: float, gpus: float = 0) -> dict[str, Any]:
    """Ray resource arguments of one task or actor."""
    args: dict[str, Any] = {"num_cpus": cpus}
    if gpus > 0:
        args["num_gpus"] = gpus
    if config.node_resource:
        args["resources"] = {config.node_resource: NODE_RESOURCE_SHARE}
    return args


def check_cluster_cpus(config: PipelineConfig, cluster_cpus: float, stage_classes=FUSED) -> None:
    """Fail fast with a clear message where the actor pools can never all be scheduled (Ray would wait)."""
    stages = [cls(config) for cls in stage_classes]
    pools = [s for s in stages if s.pool_setting]
    # The actors hold their CPUs for the whole run; read and write tasks need LIGHT_CPUS beside them.
    needed = sum(s.cpus * s.pool_size() for s in stages) + LIGHT_CPUS
    if cluster_cpus < needed:
        flags = " + ".join(f"--{s.pool_setting.replace('_', '-')} {s.pool_size()}" for s in pools) or "no pools"
        light = sum(s.cpus for s in stages if not s.pool_setting) + LIGHT_CPUS
        where = f" with the resource {config.node_resource!r}" if config.node_resource else ""
        raise RuntimeError(
            f"the Ray cluster has {cluster_cpus:g} CPUs{where} but the pipeline needs {needed:g} "
            f"({flags} actors of 1 CPU, plus {light:g} for reading, expansion and writing); start the "
            f"nodes with more --num-cpus or use smaller pools")


def usable_cpus(config: PipelineConfig) -> float:
    """CPUs of the alive nodes the pipeline may use (those with ``config.node_resource`` when set)."""
    import ray

    nodes = [n for n in ray.nodes() if n.get("Alive")]
    if config.node_resource:
        nodes = [n for n in nodes if n["Resources"].get(config.node_resource, 0) > 0]
    return sum(n["Resources"].get("CPU", 0) for n in nodes)


def check_shared_storage(*urls: str) -> None:
    """Workers and the driver are different processes: a per-process filesystem cannot carry a run."""
    for url in urls:
        if url and url.startswith("memory://"):
            raise ValueError(f"{url}: memory:// lives inside one process, but the Ray engine reads and writes "
                             f"in its worker processes; use a shared path or URL, or --engine local")


def build_dataset(config: PipelineConfig, job, stage_classes, todo: list[str], num_gpus: float, write: bool):
    import ray
    from ray.data import ActorPoolStrategy, TaskPoolStrategy

    ds = ray.data.from_items([{"shard": shard} for shard in todo], override_num_blocks=max(1, len(todo)))
    ds = ds.map_batches(read_shards, fn_kwargs={"source": job.source}, batch_size=1, batch_format="pyarrow",
                        compute=TaskPoolStrategy(size=max(1, config.read_parallelism)),
                        **placement(config, LIGHT_CPUS))
    for stage_class in stage_classes:
        stage = stage_class(config)  # its declarations; the model loads in the actors
        ds = ds.map_batches(actor_class(stage_class), fn_constructor_args=(stage_class, config),
                            batch_size=stage.batch_size(), batch_format="pyarrow",
                            compute=ActorPoolStrategy(size=stage.pool_size()),
                            **placement(config, stage.cpus, num_gpus if stage.uses_gpu else 0))
    if write:
        ds = ds.map_batches(write_parts_batch, fn_kwargs={"sink_url": job.sink.folder.url}, batch_size=None,
                            batch_format="pyarrow", **placement(config, LIGHT_CPUS))
    return ds


def run_ray(config: PipelineConfig, job, stage_classes, todo: list[str]) -> None:
    import ray

    check_shared_storage(job.source.url, job.sink.folder.url)
    started_here = init_ray(config)
    try:
        context = ray.data.DataContext.get_current()
        context.enable_progress_bars = bool(config.progress)
        context.print_on_execution_start = bool(config.progress)
        if config.object_store_limit_mb:
            from ray.data import ExecutionResources

            # Backpressure holds the blocks in flight under this many bytes (Ray's default: a share of
            # the object store, i.e. of the machine's memory).
            context.execution_options.resource_limits = ExecutionResources.for_limits(
                object_store_memory=config.object_store_limit_mb * 1024 * 1024)
        if config.node_resource and not usable_cpus(config):
            raise RuntimeError(f"no node of the Ray cluster has the resource {config.node_resource!r} "
                               f"(start worker nodes with --resources '{{\"{config.node_resource}\": 1}}')")
        check_cluster_cpus(config, usable_cpus(config), stage_classes)
        # Ask the cluster, not this process: a CPU-only head node still drives GPU workers.
        num_gpus = config.resolved_num_gpus(cluster_gpus=ray.cluster_resources().get("GPU", 0))
        driver_writes = os.environ.get(DRIVER_WRITES_ENV) == "1"
        ds = build_dataset(config, job, stage_classes, todo, num_gpus, write=not driver_writes)
        if driver_writes:
            _collect_on_driver(ds, job, todo)
        else:
            _commit_on_workers(config, ds, job, todo)
    finally:
        if started_here:
            ray.shutdown()
        sys.stderr.flush()


def _commit_on_workers(config: PipelineConfig, ds, job, todo: list[str]) -> None:
    """Account for the parts the workers wrote and have each complete shard committed by a worker."""
    import ray

    commit = ray.remote(commit_shard).options(max_retries=3, **placement(config, LIGHT_CPUS))
    sink_ref, source_ref = ray.put(job.sink), ray.put(job.source)
    ledger = PartLedger()
    pending: dict[Any, str] = {}

    def submit(shard: str, parts: list[str]) -> None:
        ref = commit.remote(sink_ref, source_ref, shard, parts, job.expected[shard], job.describe(shard))
        pending[ref] = shard

    def harvest(timeout: float | None) -> None:
        ready, _ = ray.wait(list(pending), num_returns=len(pending), timeout=timeout)
        for ref in ready:
            shard = pending.pop(ref)
            result = ray.get(ref)  # a commit that failed all its retries fails the run here
            job.count_node(result["node"], "commits")
            parts = ledger.shards.get(shard)
            job.committed(shard, result["samples"], dict(parts.counts) if parts else {})
            if os.environ.get(KILL_DRIVER_ENV) and len(job.summary.shards_written) >= int(os.environ[KILL_DRIVER_ENV]):
                os.kill(os.getpid(), signal.SIGKILL)

    for table in ds.iter_batches(batch_format="pyarrow", batch_size=None, prefetch_batches=1):
        for info in table.to_pylist():
            if not ledger.add(info):
                continue  # a duplicate attempt's part: never merged, deleted with the shard's staging
            job.count_node(info["node"], "parts")
            job.progress.samples_finished(info["shard"], info["shard_total"], len(info["keys"]))
            if ledger.complete(info["shard"]):
                submit(info["shard"], ledger.shards[info["shard"]].parts)
        if pending:
            harvest(timeout=0)
    partial = ledger.incomplete()
    if partial:
        raise RuntimeError(f"samples lost in the Ray pipeline (shard: samples received): {partial}")
    for shard in todo:
        if shard not in ledger.shards:  # a shard without samples sends nothing through the dataset
            submit(shard, [])
    while pending:
        harvest(timeout=None)
    job.add_startup(ledger.startup_s)
    remove_stale_parts(job.sink.folder.url, todo)  # parts of duplicate attempts that arrived after a commit


def _collect_on_driver(ds, job, todo: list[str]) -> None:
    """The former data path (bench comparison only): every finished sample to the driver, which writes."""
    buffers: dict[str, list[dict[str, Any]]] = {}
    for table in ds.iter_batches(batch_format="pyarrow", batch_size=None, prefetch_batches=1):
        for row in table_to_rows(table):
            buffer = buffers.setdefault(row["source_shard"], [])
            buffer.append(row)
            if len(buffer) == row["shard_total"]:
                job.write(row["source_shard"], buffers.pop(row["source_shard"]))
    for shard in todo:
        if shard not in job.summary.shards_written:
            job.write(shard, job.source.read(shard))
