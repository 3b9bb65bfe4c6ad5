"""The plain-Python engine: one shard at a time, stages in fixed batches, in this process.

Used by unit tests and ``--engine local``; the Ray engine runs the same stages and gives the same output.
"""
from __future__ import annotations

from .config import PipelineConfig


def run_local(config: PipelineConfig, job, stage_classes, todo: list[str]) -> None:
    stages = [cls(config) for cls in stage_classes]
    for shard in todo:
        samples = job.source.read(shard)
        for stage in stages:
            size = stage.batch_size()
            for start in range(0, len(samples), size):
                stage(samples[start:start + size])
            job.progress.stage(stage.name, len(samples))
        job.progress.samples_finished(shard, len(samples), len(samples))
        job.write(shard, samples)
