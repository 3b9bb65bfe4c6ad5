"""The plain-Python engine: one shard at a time, stages in fixed batches, in this process.

Used by unit tests and ``--engine local``; the Ray engine runs the same stages (``run_stages``) in its
actors and gives the same output.
"""
from __future__ import annotations

from typing import Any

from .config import PipelineConfig


def run_stages(stages, samples: list[dict[str, Any]], progress=None) -> list[dict[str, Any]]:
    """Run ``stages`` one after the other over ``samples``, each in batches of its own batch size."""
    for stage in stages:
        size = stage.batch_size()
        for start in range(0, len(samples), size):
            stage(samples[start:start + size])
        if progress is not None:
            progress.stage(stage.name, len(samples))
    return samples


def run_local(config: PipelineConfig, job, stage_classes, todo: list[str]) -> None:
    stages = [cls(config) for cls in stage_classes]
    for shard in todo:
        samples = run_stages(stages, job.source.read(shard), job.progress)
        job.progress.samples_finished(shard, len(samples), len(samples))
        job.write(shard, samples)
