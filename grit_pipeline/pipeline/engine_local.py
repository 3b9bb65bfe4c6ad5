"""The plain-Python engine: one shard at a time, stages in fixed batches, in this process.

Used by unit tests and ``--engine local``; the Ray engine runs the same stages and gives the same output.
"""
from __future__ import annotations

from typing import Any, Callable

from .config import PipelineConfig


def run_local(config: PipelineConfig, source, stage_classes, todo: list[str],
              commit: Callable[[str, list[dict[str, Any]]], None], progress) -> None:
    stages = [cls(config) for cls in stage_classes]
    batch_sizes = [config.ground_batch_size if s.uses_gpu else config.text_batch_size for s in stages]
    for shard in todo:
        samples = source.read(shard)
        for stage, size in zip(stages, batch_sizes):
            size = max(1, size)
            for start in range(0, len(samples), size):
                stage(samples[start:start + size])
            progress.stage(stage.name, len(samples))
        progress.samples_finished(shard, len(samples), len(samples))
        commit(shard, samples)
