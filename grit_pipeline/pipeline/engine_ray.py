"""The Ray Data engine: one streaming pass over all shards, stages as Ray Data operators.

    shards --read (tasks, ``read_parallelism`` at a time)--> samples
           --noun_chunks (CPU actor pool, spaCy loaded once per actor)-->
           --ground (actor pool with ``num_gpus`` each, detector loaded once per actor)-->
           --expand (CPU tasks)--> driver: collects each shard's samples, commits it when complete

Ray Data's streaming executor applies backpressure between operators, and at most ``read_parallelism``
shards are being read at a time, so memory depends on batch and pool sizes, not on the number of shards.
Every sample carries its shard's name and size; the driver commits a shard (sorted by key) as soon as all
its samples arrived, so output never depends on the order Ray schedules batches in.
"""
from __future__ import annotations

import sys
from collections import defaultdict
from typing import Any, Callable

from .config import PipelineConfig
from .sample import rows_to_table, table_to_rows

READ_BLOCK_ROWS = 256  # samples per block a read task yields (bounds block size; an input shard is ~10k)
LIGHT_TASK_CPUS = 0.5  # read and expand tasks are light; they must fit beside the actor pools


def init_ray(config: PipelineConfig) -> bool:
    """Connect to ``config.ray_address`` (else ``$RAY_ADDRESS``, which ``ray job submit`` sets for its
    drivers) or start a local Ray in this process. True when this call connected/started it."""
    import os

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
    # address="local": always a fresh in-process cluster, never one a `ray start` left on this machine.
    ray.init(address="local", num_cpus=cpus, **common)
    return True


def read_shards(batch, source):
    """Map task: shard names -> that shard's samples, in blocks of READ_BLOCK_ROWS rows."""
    for shard in batch.column("shard").to_pylist():
        samples = source.read(shard)
        for start in range(0, len(samples), READ_BLOCK_ROWS):
            yield rows_to_table(samples[start:start + READ_BLOCK_ROWS])


class _StageActor:
    """Ray actor hosting one stage (its model loaded once, in the constructor)."""

    def __init__(self, stage_class, config):
        self.stage = stage_class(config)
        self.stage.setup()
        self.stage._ready = True

    def __call__(self, table):
        return rows_to_table(self.stage(table_to_rows(table)))


# Named per stage so Ray Data's progress shows MapBatches(NounChunks) -> MapBatches(Ground) -> ...
class NounChunks(_StageActor):
    pass


class Ground(_StageActor):
    pass


class Expand(_StageActor):
    pass


ACTOR_CLASSES = {"noun_chunks": NounChunks, "ground": Ground, "expand": Expand}


def check_cluster_cpus(config: PipelineConfig, cluster_cpus: float) -> None:
    """Fail fast with a clear message where the actor pools can never all be scheduled (Ray would wait)."""
    needed = config.text_pool + config.ground_pool + 2 * LIGHT_TASK_CPUS  # + read tasks + expansion actor
    if cluster_cpus < needed:
        raise RuntimeError(
            f"the Ray cluster has {cluster_cpus:g} CPUs but the pipeline needs {needed:g} "
            f"(--text-pool {config.text_pool} + --ground-pool {config.ground_pool} actors of 1 CPU, "
            f"plus {2 * LIGHT_TASK_CPUS:g} for reading and expansion); start the head with more --num-cpus "
            f"or use smaller pools")


def run_ray(config: PipelineConfig, source, stage_classes, todo: list[str],
            commit: Callable[[str, list[dict[str, Any]]], None], progress) -> None:
    import ray
    from ray.data import ActorPoolStrategy, TaskPoolStrategy

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
        check_cluster_cpus(config, ray.cluster_resources().get("CPU", 0))
        ds = ray.data.from_items([{"shard": shard} for shard in todo], override_num_blocks=max(1, len(todo)))
        ds = ds.map_batches(read_shards, fn_kwargs={"source": source}, batch_size=1, batch_format="pyarrow",
                            compute=TaskPoolStrategy(size=max(1, config.read_parallelism)), num_cpus=LIGHT_TASK_CPUS)
        # Ask the cluster, not this process: a CPU-only head node still drives GPU workers.
        num_gpus = config.resolved_num_gpus(cluster_gpus=ray.cluster_resources().get("GPU", 0))
        for stage_class in stage_classes:
            if stage_class.uses_gpu:
                gpu_args = {"num_gpus": num_gpus} if num_gpus > 0 else {}
                ds = ds.map_batches(ACTOR_CLASSES.get(stage_class.name, _StageActor),
                                    fn_constructor_args=(stage_class, config),
                                    batch_size=max(1, config.ground_batch_size), batch_format="pyarrow",
                                    compute=ActorPoolStrategy(size=max(1, config.ground_pool)), num_cpus=1, **gpu_args)
            elif stage_class.name == "noun_chunks":
                ds = ds.map_batches(ACTOR_CLASSES.get(stage_class.name, _StageActor),
                                    fn_constructor_args=(stage_class, config),
                                    batch_size=max(1, config.text_batch_size), batch_format="pyarrow",
                                    compute=ActorPoolStrategy(size=max(1, config.text_pool)), num_cpus=1)
            else:
                # An actor, not a task per batch: a fresh task would pay the module imports every time.
                ds = ds.map_batches(ACTOR_CLASSES.get(stage_class.name, _StageActor),
                                    fn_constructor_args=(stage_class, config),
                                    batch_size=max(1, config.text_batch_size), batch_format="pyarrow",
                                    compute=ActorPoolStrategy(size=1), num_cpus=LIGHT_TASK_CPUS)

        buffers: dict[str, list[dict[str, Any]]] = defaultdict(list)
        committed: set[str] = set()
        for table in ds.iter_batches(batch_format="pyarrow", batch_size=None, prefetch_batches=1):
            rows = table_to_rows(table)
            for row in rows:
                progress.samples_finished(row["source_shard"], row["shard_total"], 1)
            for row in rows:
                shard = row["source_shard"]
                buffer = buffers[shard]
                buffer.append(row)
                if len(buffer) == row["shard_total"]:
                    commit(shard, buffers.pop(shard))
                    committed.add(shard)
        if buffers:
            partial = {shard: len(rows) for shard, rows in buffers.items()}
            raise RuntimeError(f"samples lost in the Ray pipeline (shard: samples received): {partial}")
        for shard in todo:
            if shard not in committed:  # a shard without samples sends nothing through the dataset
                samples = source.read(shard)
                if samples:
                    raise RuntimeError(f"shard {shard}: none of its {len(samples)} samples came out of the pipeline")
                commit(shard, samples)
    finally:
        if started_here:
            ray.shutdown()
        sys.stderr.flush()
