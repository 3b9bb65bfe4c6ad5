"""The Ray engine's plan with GPUs: the operators' actor pools streamed through Ray Data, which applies
backpressure between them.

    shard names --[read, noun chunks] (max(--text-pool, --read-parallelism) actors)--> samples
                --[ground] (--ground-pool actors, --num-gpus each)--> samples
                --[expand, write parts] (one actor)--> PartInfo rows

A fault of the machine ends an actor's process; Ray Data replaces it (at most ``--max-actor-replacements``
restarts per actor) and retries its batch (``ray_operators.OperatorActor.__call__``).
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any, Iterator

from .config import PipelineConfig
from .ray_operators import Operator, actor_class, placement

if TYPE_CHECKING:
    from .api import ShardJob


def run_streaming(config: PipelineConfig, job: ShardJob, operators: list[Operator], todo: list[str],
                  num_gpus: float) -> Iterator[dict[str, Any]]:
    """The plan with GPU operators: Ray Data streams batches between the operators' actor pools."""
    for table in build_dataset(config, job, operators, todo, num_gpus).iter_batches(
            batch_format="pyarrow", batch_size=None, prefetch_batches=1):
        yield from table.to_pylist()


def build_dataset(config: PipelineConfig, job: ShardJob, operators: list[Operator], todo: list[str],
                  num_gpus: float):
    """The Ray Data dataset of the plan: one block per shard name, then each operator's actor pool; the
    operator that writes gets the sink's folder (``job.sink.folder.url``)."""
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
    sink_url = job.sink.folder.url
    for operator in operators:
        # The reading operator takes one shard name per call; the others --chunk-rows samples.
        ds = ds.map_batches(actor_class(operator),
                            fn_constructor_args=(operator, config, job.source if operator.reads else None,
                                                 sink_url if operator.writes else None),
                            batch_size=1 if operator.reads else config.chunk_rows, batch_format="pyarrow",
                            compute=ActorPoolStrategy(size=operator.pool_size(config)),
                            max_restarts=config.max_actor_replacements,
                            **placement(config, operator.cpus(config), num_gpus if operator.gpu else 0))
    return ds
