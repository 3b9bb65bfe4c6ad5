"""Which engine runs a job when none is named (``--engine auto``, the default).

- A Ray cluster is named (``--ray-address`` or ``$RAY_ADDRESS``), or this process is connected to Ray already
  (a notebook, a test session): ``ray``.
- One machine: ``ray`` only when the job is large enough for Ray's parallel actors to win back its fixed
  cost, else ``local``. Ray runs one actor per core, each on whole shards, so it is ``k = RAY_EFFICIENCY x
  min(cores, shards to do)`` times faster than the local engine once started, and costs RAY_FIXED_S more
  seconds (starting Ray, one more set of imports and model loads per actor, stopping it). With ``W`` the
  local engine's seconds of work for the job (images x the detector's seconds per image on one core), Ray
  is faster when ``W x (1 - 1/k) > RAY_FIXED_S``.

The constants are measured on a 2-core machine shared with other jobs (``make bench``, entry ``engines``;
docs/benchmarks.md);
for a detector without a measured cost (``hf``, a registered backend) HEAVY_DETECTOR_S is assumed, so
those go to Ray from a few dozen images on two or more cores.
"""
from __future__ import annotations

import os
import sys

from .config import PipelineConfig

# Ray's extra wall seconds on one machine (starting Ray and its workers, stopping it): 2.5-3.4 s measured on
# 2 cores at load 1-2 (docs/benchmarks.md); 10 s and more under load (4.5 runnable processes per core: 17 s).
RAY_FIXED_S = 4.0
RAY_EFFICIENCY = 0.85   # the Ray engine's rate per actor relative to the local engine, once started (0.86-0.94)
# The local engine's seconds per image on one core once started (`grit synth` images; 2.3-2.4 ms and
# 3.7-4.5 ms measured).
DETECTOR_SECONDS = {"noop": 0.0024, "demo": 0.0045}
HEAVY_DETECTOR_S = 0.5  # a real detector on a CPU core is slower than this
SAMPLED_SHARDS = 8      # shards whose size is read to estimate the job (their parquet footers only, concurrently)


def choose_engine(config: PipelineConfig, source, todo: list[str]) -> tuple[str, str]:
    """``(engine, reason)`` for ``config.engine == "auto"``; a named engine is kept as it is."""
    if config.engine != "auto":
        return config.engine, "--engine"
    if config.ray_address or os.environ.get("RAY_ADDRESS"):
        return "ray", "a Ray cluster address is given"
    if "ray" in sys.modules and sys.modules["ray"].is_initialized():
        return "ray", "this process is connected to Ray already"
    cores = config.resolved_num_cpus()
    images = estimate_images(source, todo)
    per_image = DETECTOR_SECONDS.get(config.detector, HEAVY_DETECTOR_S)
    work_s = images * per_image
    ray_gain_s = ray_gain(work_s, cores, len(todo))
    what = f"{images:,} images of {config.detector} (~{work_s:.0f} s on one core), {min(cores, len(todo))} of " \
           f"{cores} cores usable by Ray (one shard per core)"
    if ray_gain_s > RAY_FIXED_S:
        return "ray", f"one machine: {what}; Ray saves ~{ray_gain_s - RAY_FIXED_S:.0f} s after its start-up"
    return "local", f"one machine: {what}; Ray's start-up (~{RAY_FIXED_S:.0f} s) would cost more than " \
                    f"its parallel cores save (~{ray_gain_s:.0f} s)"


def ray_gain(work_s: float, cores: int, shards: int) -> float:
    """Seconds Ray's actors save on ``work_s`` seconds of one-core work, before its fixed cost."""
    k = RAY_EFFICIENCY * min(cores, shards)
    return work_s * (1 - 1 / k) if k > 1 else 0.0


def estimate_images(source, todo: list[str]) -> int:
    """Images in the shards to do, from up to SAMPLED_SHARDS of them (their mean size times the count)."""
    if not todo:
        return 0
    from .index import read_concurrently

    step = max(1, len(todo) // SAMPLED_SHARDS)
    # A fixed number of footers, read at once: one request's latency whatever the number of shards.
    sizes = read_concurrently(source.size_hint, todo[::step][:SAMPLED_SHARDS], progress=False)
    known = [n for n in sizes if n is not None]
    if not known:
        return 0
    return round(sum(known) / len(known) * len(todo))
