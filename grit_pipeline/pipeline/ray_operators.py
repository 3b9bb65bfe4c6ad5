"""The Ray engine's plan: consecutive stages fused into operators, and the actor that runs an operator.

Shared by its two execution plans: ``ray_actor_pool`` (no GPUs: one operator, a pool of Ray actors the
driver feeds shard by shard) and ``ray_data_streaming`` (GPUs: the operators' actor pools streamed through
Ray Data). ``engine_ray`` picks one (see its docstring for the picture).
"""
from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from typing import Any, Iterator

import pyarrow as pa

from .config import PipelineConfig
from .engine_local import _chunks, run_stages
from .parts import PART_INFO_SCHEMA, commit_shard, current_node, write_parts
from .preflight import PreflightError
from .sample import rows_to_table, table_to_rows
from .stages import FUSED, LIGHT_CPUS

NODE_RESOURCE_SHARE = 0.001  # of config.node_resource per task/actor: placement only, never a limit
# What one actor of the fused operator may take (Python, spaCy, torch, a small detector, one input shard):
# the pool is never larger than the cluster's memory for Ray tasks divided by this.
ACTOR_MEMORY_BYTES = 1 << 30


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
