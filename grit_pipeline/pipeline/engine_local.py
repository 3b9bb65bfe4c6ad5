"""The plain-Python engine: one shard at a time, stages in fixed batches, in this process.

Used by unit tests and ``--engine local``; the Ray engine runs the same stages (``run_stages``) in its
actors and gives the same output.
"""
from __future__ import annotations

import contextlib
import os
from typing import Any, Iterator

from .config import PipelineConfig


@contextlib.contextmanager
def one_torch_thread(stage_classes) -> Iterator[None]:
    """Run torch on one thread while the stages run (unless ``$OMP_NUM_THREADS`` says otherwise).

    The stages are a serial loop of Python, spaCy and small tensor work: with more threads, torch's OpenMP
    workers spin-wait between its short parallel regions, which on a 2-core machine cost 2.6x the CPU and
    4x the wall time of the demo detector's run under load (measured: 38 s vs 9.3 s for 1,024 images). A
    Ray actor gets the same single thread from Ray (``OMP_NUM_THREADS`` = its CPUs). A large model on
    many CPU cores is the Ray engine's job: one actor per core.
    """
    if not stage_classes or os.environ.get("OMP_NUM_THREADS"):
        yield
        return
    import torch  # (the stages import it anyway: spaCy's thinc, the detectors, torchvision's NMS)

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def run_stages(stages, samples: list[dict[str, Any]], progress=None) -> list[dict[str, Any]]:
    """Run ``stages`` one after the other over ``samples``, each in batches of its own batch size."""
    for stage in stages:
        size = stage.batch_size()
        for start in range(0, len(samples), size):
            stage(samples[start:start + size])
        if progress is not None:
            progress.stage(stage.name, len(samples))
    return samples


def _chunks(source, shard: str, size: int):
    """The shard's samples, ``size`` at a time (sources without ``read_chunks``: the whole shard as one)."""
    if hasattr(source, "read_chunks"):
        return source.read_chunks(shard, size)
    return [source.read(shard)]


def run_local(config: PipelineConfig, job, stage_classes, todo: list[str]) -> None:
    """Each shard in turn: read, every stage, commit. A fault of the machine (``SystemicFault``) stops the
    run with the shard it met uncommitted (``fault.shard`` names it); a rerun resumes from there."""
    from grit_pipeline.faults import SystemicFault

    stages = [cls(config) for cls in stage_classes]
    with one_torch_thread(stage_classes):
        for shard in todo:
            try:
                samples = [sample for chunk in _chunks(job.source, shard, config.chunk_rows)
                           for sample in run_stages(stages, chunk, job.progress)]
            except SystemicFault as fault:
                fault.shard = shard
                raise
            job.progress.samples_finished(shard, len(samples), len(samples))
            job.write(shard, samples)
