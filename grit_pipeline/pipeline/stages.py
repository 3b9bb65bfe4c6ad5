"""The per-sample stages: plain classes over lists of sample dicts, the same for every engine.

A stage is built from the run's ``PipelineConfig``; ``setup()`` loads its model once (per process, per
Ray actor); ``__call__(samples)`` returns the samples with its fields filled in, finished samples passed
through untouched. The engines only decide where and in which batches these run, from what each stage
class declares: ``pool_setting`` and ``batch_setting`` (the ``PipelineConfig`` fields holding its actor
count and batch size), ``cpus`` and ``uses_gpu`` (what one of its actors needs).

Start-up (imports, model load) is timed apart from the work: ``ensure_setup`` measures it once per
process and the next sample the stage handles carries it in ``startup_s``; per-sample ``seconds`` hold only
the time spent processing batches.

- ``NounChunkStage`` (CPU, spaCy): noun chunks and their expansions (text core, one parse per caption).
- ``GroundStage`` (GPU): decodes the image, runs the detector (``detect_batch``) and class-agnostic NMS;
  stores every NMS survivor whatever its score, so the threshold can be changed afterwards.
- ``ExpandStage`` (CPU): applies the score threshold (``threshold_detections``), gives each kept chunk's box to
  its expansion (``assemble_record``) and serialises the grounded text.
"""
from __future__ import annotations

import time
from typing import Any

from grit_pipeline import status as S
from grit_pipeline.faults import SystemicFault, describe, is_systemic

from .config import PipelineConfig
from .sample import add_counts, add_seconds, finish, pack_detections, pending, unpack_detections

LIGHT_CPUS = 0.5  # a light stage (and the engine's read/write tasks) asks for half a CPU


class Stage:
    name = ""
    uses_gpu = False
    pool_setting: str | None = None      # config field: how many actors (None: one)
    batch_setting = "text_batch_size"    # config field: samples per batch
    cpus = 1.0                           # CPUs per actor

    def __init__(self, config: PipelineConfig):
        self.config = config
        self._ready = False
        self._startup_to_report: float | None = None

    def pool_size(self) -> int:
        return max(1, int(getattr(self.config, self.pool_setting))) if self.pool_setting else 1

    def batch_size(self) -> int:
        return max(1, int(getattr(self.config, self.batch_setting)))

    def setup(self) -> None:
        """Import modules and load models; called once (``ensure_setup``) before the first batch."""

    def ensure_setup(self) -> None:
        """Run ``setup`` once in this process and time it (reported with the next batch's first sample)."""
        if self._ready:
            return
        started = time.perf_counter()
        self.setup()
        self._ready = True
        self._startup_to_report = time.perf_counter() - started

    def process(self, samples: list[dict[str, Any]]) -> None:
        """Fill in this stage's fields of the pending samples (in place)."""
        raise NotImplementedError

    def __call__(self, samples: list[dict[str, Any]]) -> list[dict[str, Any]]:
        self.ensure_setup()
        if self._startup_to_report is not None and samples:
            startup = dict(samples[0].get("startup_s") or {})
            startup[self.name] = startup.get(self.name, 0.0) + self._startup_to_report
            samples[0]["startup_s"] = startup
            self._startup_to_report = None
        todo = [s for s in samples if pending(s)]
        started = time.perf_counter()
        if todo:
            try:
                self.process(todo)
            except SystemicFault:
                raise  # the machine's fault: the shard stops uncommitted (docs/robustness.md, "Fault model")
            except Exception as error:  # noqa: BLE001 - see _one_by_one
                self._one_by_one(todo, error)
        add_seconds(todo, self.name, time.perf_counter() - started)
        return samples

    def _one_by_one(self, samples: list[dict[str, Any]], batch_error: Exception) -> None:
        """The batch raised: rerun it sample by sample so that one bad sample costs one row (``stage_error``).

        When every sample fails on its own too, the fault is not in the data (a lost GPU, a broken model):
        the batch's error is raised and the shard is not committed, so a rerun retries it.
        """
        if isinstance(batch_error, MemoryError) or is_systemic(batch_error):
            raise batch_error
        failed = []
        for sample in samples:
            if not pending(sample):
                continue
            try:
                self.process([sample])
            except SystemicFault:
                raise
            except Exception as error:  # noqa: BLE001 - any other error of one sample becomes its reject
                if isinstance(error, MemoryError) or is_systemic(error):
                    raise SystemicFault(f"{self.name}: {describe(error)}") from error
                failed.append((sample, error))
        if len(failed) == len(samples) and len(samples) > 1:
            raise SystemicFault(f"{self.name}: every sample of a batch of {len(samples)} failed: "
                                f"{describe(batch_error)}") from batch_error
        for sample, error in failed:
            finish(sample, S.STAGE_ERROR, f"{self.name} failed on this sample: {type(error).__name__}: "
                   f"{str(error)[:300]}", self.name)


class NounChunkStage(Stage):
    name = "noun_chunks"
    pool_setting = "text_pool"

    def setup(self) -> None:
        from grit_pipeline.text import load_nlp

        self.nlp = load_nlp(self.config.spacy_model)

    def process(self, samples):
        from grit_pipeline.text import DEFAULT_ABSTRACT_NOUNS, CaptionSpans, caption_spans

        nouns = self.config.abstract_nouns if self.config.abstract_nouns is not None else DEFAULT_ABSTRACT_NOUNS

        def spans_of(captions):
            return caption_spans(captions, nlp=self.nlp, abstract_nouns=nouns, batch_size=self.config.text_batch_size)

        captions = [s["caption"] for s in samples]
        try:
            results = spans_of(captions)
        except Exception:  # noqa: BLE001 - one caption spaCy refuses (e.g. over nlp.max_length) must not sink the batch
            results = []
            for caption in captions:
                try:
                    results.extend(spans_of([caption]))
                except Exception as error:  # noqa: BLE001
                    results.append(CaptionSpans(error=f"spaCy failed on the caption: {type(error).__name__}: {str(error)[:200]}"))
        for sample, spans in zip(samples, results):
            if spans.error:
                finish(sample, S.BAD_CAPTION, spans.error, self.name)
            elif not spans.noun_chunks:
                finish(sample, S.NO_NOUN_CHUNKS, "no concrete noun chunk in the caption (after the abstract-noun filter)", self.name)
            else:
                sample["noun_chunk_spans"] = [list(span) for span in spans.noun_chunks]
                sample["ref_exp_spans"] = [list(span) for span in spans.ref_exps]


class GroundStage(Stage):
    name = "ground"
    uses_gpu = True
    pool_setting = "ground_pool"
    batch_setting = "ground_batch_size"

    def setup(self) -> None:
        import grit_pipeline.grounding  # noqa: F401 - torch and torchvision, imported here to be timed as start-up
        from grit_pipeline.detectors.base import get_detector

        options = dict(self.config.detector_options)
        if self.config.model:
            options["model"] = self.config.model
        if self.config.dtype:
            options["dtype"] = self.config.dtype
        self.detector = get_detector(self.config.detector, device=self.config.device,
                                     batch_size=self.config.ground_batch_size, **options)

    def process(self, samples):
        from grit_pipeline.grounding import detect_batch, nms_survivors
        from grit_pipeline.images import DEFAULT_MAX_PIXELS

        max_pixels = self.config.max_pixels or DEFAULT_MAX_PIXELS
        size = max(1, self.config.ground_batch_size)
        for start in range(0, len(samples), size):
            batch = samples[start:start + size]
            phrases = [[s["caption"][a:b] for a, b in s["noun_chunk_spans"]] for s in batch]
            counters: dict[str, int] = {}
            results = detect_batch([s["image_bytes"] for s in batch], phrases, self.detector, max_pixels=max_pixels,
                                   timeout_s=self.config.detector_timeout_s, counters=counters)
            if counters:  # (out-of-memory halvings: carried by the batch's first sample into the shard's stats)
                add_counts(batch[0], counters)
            for sample, result in zip(batch, results):
                sample["width"], sample["height"] = result.width, result.height
                if result.status is None:
                    # Every NMS survivor, whatever its score: the threshold is applied by the expand stage.
                    sample["detections"] = pack_detections(nms_survivors(result.detections, self.config.nms_iou))
                else:
                    finish(sample, result.status, result.reason, self.name)


class ExpandStage(Stage):
    name = "expand"
    cpus = LIGHT_CPUS
    pool_setting = "write_pool"

    # One actor expands and stages the parts of ~8 GPUs' output (0.4 ms of CPU per image, plus receiving the
    # samples and uploading the parts: docs/cluster.md, "Capacity model"); more GPUs, more of them.
    GPUS_PER_WRITER = 8

    def pool_size(self) -> int:
        if self.config.write_pool is not None:
            return max(1, int(self.config.write_pool))
        return max(1, -(-max(1, int(self.config.ground_pool)) // self.GPUS_PER_WRITER))

    def setup(self) -> None:
        # The heavy imports (grounding imports torch), so the first batch's time is the work only.
        import grit_pipeline.assemble  # noqa: F401
        import grit_pipeline.grounding  # noqa: F401
        import grit_pipeline.serialize  # noqa: F401

    def process(self, samples):
        from grit_pipeline.assemble import assemble_record
        from grit_pipeline.grounding import threshold_detections
        from grit_pipeline.record import RecordError
        from grit_pipeline.serialize import grounded_text
        from grit_pipeline.text import CaptionSpans

        config = self.config
        for sample in samples:
            decided = threshold_detections(unpack_detections(sample["detections"]), config.box_threshold,
                                           config.nms_iou)
            kept, dropped = decided.kept, decided.dropped
            spans = CaptionSpans([tuple(s) for s in sample["noun_chunk_spans"]], [tuple(s) for s in sample["ref_exp_spans"]])
            sample["dropped_boxes"] = [
                [float(spans.noun_chunks[d.phrase_index][0]), float(spans.noun_chunks[d.phrase_index][1]),
                 *map(float, d.box), float(d.score)]
                for d in dropped
            ]
            if decided.status != S.GROUNDED:
                finish(sample, decided.status, decided.reason, self.name)
                continue
            try:
                record = assemble_record(
                    sample["key"], sample["caption"], sample["width"], sample["height"], spans, kept,
                    id=sample["id"], url=sample["url"],
                    clip_similarity_vitb32=sample["clip_similarity_vitb32"],
                    clip_similarity_vitl14=sample["clip_similarity_vitl14"],
                )
            except (RecordError, IndexError, TypeError, ValueError) as error:
                finish(sample, S.DETECTOR_ERROR, f"detections do not make a valid record: {error}", self.name)
                continue
            sample["noun_chunks"] = record.noun_chunks
            sample["ref_exps"] = record.ref_exps
            sample["grounded_text"] = grounded_text(record, fmt=config.text_format, min_score=config.box_threshold,
                                                    phrase_mode=config.phrase_mode, grid=config.grid,
                                                    cell_rule=config.cell_rule)
            finish(sample, S.GROUNDED, None, self.name)


# Stage-by-stage mode: which per-sample stages each named stage runs.
STAGE_CLASSES = {
    "noun_chunks": (NounChunkStage,),
    "ground": (GroundStage,),
    "expand": (ExpandStage,),
    "write": (),
}
FUSED = (NounChunkStage, GroundStage, ExpandStage)
