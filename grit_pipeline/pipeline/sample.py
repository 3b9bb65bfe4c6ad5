"""The pipeline sample: one plain dict per input key, flowing through the stages.

The same fixed Arrow schema is used for Ray Data blocks and for the stage-by-stage parquet files, so a
sample round-trips between stages without any change (float64 stays float64, None stays None).
A sample whose ``status`` is set is finished (rejected or grounded); later stages pass it through.
"""
from __future__ import annotations

from typing import Any, Iterable

import pyarrow as pa

SPANS = pa.list_(pa.list_(pa.int64()))     # [[start, end], ...] char offsets into the caption
FLOATS = pa.list_(pa.list_(pa.float64()))  # [[...numbers...], ...]

SAMPLE_SCHEMA = pa.schema(
    [
        pa.field("key", pa.string()),
        pa.field("source_shard", pa.string()),
        pa.field("shard_total", pa.int64()),        # samples in this input shard (end-of-shard detection)
        pa.field("caption", pa.string()),
        pa.field("url", pa.string()),
        pa.field("id", pa.int64()),
        pa.field("clip_similarity_vitb32", pa.float64()),
        pa.field("clip_similarity_vitl14", pa.float64()),
        pa.field("image_bytes", pa.binary()),       # original bytes; dropped once a sample is rejected
        pa.field("image_ext", pa.string()),         # jpg / png / webp: the tar member it came from
        pa.field("width", pa.int64()),              # of the decoded image
        pa.field("height", pa.int64()),
        pa.field("status", pa.string()),            # None while in flight; a status.py value when finished
        pa.field("reason", pa.string()),
        pa.field("stage", pa.string()),             # stage that set the status
        pa.field("noun_chunk_spans", SPANS),
        pa.field("ref_exp_spans", SPANS),
        pa.field("detections", FLOATS),             # post-NMS, any score: see pack_detections
        pa.field("noun_chunks", FLOATS),            # GrIT-20M columns (grounded samples)
        pa.field("ref_exps", FLOATS),
        pa.field("dropped_boxes", FLOATS),          # post-NMS detections at/below threshold, noun_chunks format
        pa.field("grounded_text", pa.string()),
        pa.field("seconds", pa.map_(pa.string(), pa.float64())),  # time spent on this sample per stage
        # A stage process's start-up (imports, model load), carried once by the first sample it handles and
        # taken off before writing: reported per run, never mixed into the per-sample ``seconds``.
        pa.field("startup_s", pa.map_(pa.string(), pa.float64())),
        # Fault-model events met while processing this sample's batch (e.g. {"oom_splits": 2}): summed into
        # the shard's stats, never part of a GRIT row.
        pa.field("fault_counts", pa.map_(pa.string(), pa.int64())),
    ]
)
SAMPLE_FIELDS = tuple(SAMPLE_SCHEMA.names)


def new_sample(**values: Any) -> dict[str, Any]:
    """A sample dict with every field present (None unless given)."""
    sample = dict.fromkeys(SAMPLE_FIELDS)
    unknown = set(values) - set(SAMPLE_FIELDS)
    if unknown:
        raise KeyError(f"unknown sample fields {sorted(unknown)}")
    sample.update(values)
    return sample


def finish(sample: dict[str, Any], status: str, reason: str | None, stage: str) -> dict[str, Any]:
    """Mark a sample finished with a status; rejected samples drop their image bytes."""
    from grit_pipeline import status as statuses

    sample["status"] = status
    sample["reason"] = reason
    sample["stage"] = stage
    if status not in statuses.KEPT:
        sample["image_bytes"] = None
    return sample


def pending(sample: dict[str, Any]) -> bool:
    return sample.get("status") is None


def add_seconds(samples: list[dict[str, Any]], stage: str, seconds: float) -> None:
    """Share a batch's wall time equally among its samples (per-shard timings are sums of these)."""
    if not samples:
        return
    each = seconds / len(samples)
    for sample in samples:
        timings = dict(sample.get("seconds") or {})
        timings[stage] = timings.get(stage, 0.0) + each
        sample["seconds"] = timings


def add_counts(sample: dict[str, Any], counts: dict[str, int]) -> None:
    """Add ``counts`` to the sample's ``fault_counts``."""
    merged = dict(sample.get("fault_counts") or {})
    for name, n in counts.items():
        merged[name] = merged.get(name, 0) + n
    sample["fault_counts"] = merged


def pack_detections(detections) -> list[list[float]]:
    """Detections -> the ``detections`` column: ``[phrase_index, x1, y1, x2, y2, score]`` per detection."""
    return [[float(d.phrase_index), *map(float, d.box), float(d.score)] for d in detections]


def unpack_detections(rows) -> list:
    """The ``detections`` column -> ``Detection`` objects (the inverse of ``pack_detections``)."""
    from grit_pipeline.detectors.base import Detection

    return [Detection(int(v[0]), (v[1], v[2], v[3], v[4]), v[5]) for v in rows or []]


def rows_to_table(rows: Iterable[dict[str, Any]]) -> pa.Table:
    rows = list(rows)
    _maps_to_dicts(rows)  # Arrow maps come back as lists of pairs; accept both
    return pa.Table.from_pylist(rows, schema=SAMPLE_SCHEMA)


def table_to_rows(table: pa.Table) -> list[dict[str, Any]]:
    if table.schema != SAMPLE_SCHEMA:
        for name in SAMPLE_FIELDS:  # files written before a field existed read it as null
            if name not in table.column_names:
                table = table.append_column(SAMPLE_SCHEMA.field(name), pa.nulls(len(table), SAMPLE_SCHEMA.field(name).type))
        table = table.select(list(SAMPLE_FIELDS)).cast(SAMPLE_SCHEMA)
    return _maps_to_dicts(table.to_pylist())


def _maps_to_dicts(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    for row in rows:
        for name in ("seconds", "startup_s", "fault_counts"):
            if isinstance(row.get(name), list):
                row[name] = dict(row[name])
    return rows
