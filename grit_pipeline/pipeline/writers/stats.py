"""``_stats/NNNNN.json``: counts per status, boxes, text spans, score histogram and stage timings."""
from __future__ import annotations

import json

from grit_pipeline import status as S
from .. import layout

HISTOGRAM_BINS = 20


def filename(shard: str) -> str:
    return layout.stats_name(shard)


def shard_stats(samples, context) -> dict:
    """The per-shard statistics (see docs/DESIGN.md, Output layout)."""
    from grit_pipeline.serialize import select_entities

    counts = {name: 0 for name in S.ALL}
    histogram = [0] * HISTOGRAM_BINS
    boxes = spans = span_words = 0
    timings: dict[str, float] = {}
    faults: dict[str, int] = {}
    for s in samples:
        for name, n in (s.get("fault_counts") or {}).items():
            faults[name] = faults.get(name, 0) + n
        counts[s["status"]] = counts.get(s["status"], 0) + 1
        for stage, seconds in (s.get("seconds") or {}).items():
            timings[stage] = timings.get(stage, 0.0) + seconds
        scores = [item[6] for item in (s.get("noun_chunks") or [])] + [item[6] for item in (s.get("dropped_boxes") or [])]
        for score in scores:
            histogram[min(HISTOGRAM_BINS - 1, max(0, int(score * HISTOGRAM_BINS)))] += 1
        if s["status"] in S.KEPT:
            boxes += len(s["noun_chunks"])
            # Text spans as the paper counts them: the linked expressions of the training text
            # (identical spans grouped, contained expressions dropped).
            entities = select_entities(s, min_score=context.box_threshold, phrase_mode=context.phrase_mode)
            spans += len(entities)
            span_words += sum(len(s["caption"][e.start:e.end].split()) for e in entities)
    return {
        "shard": context.shard,
        "input": context.input,
        "samples": len(samples),
        "counts": counts,
        "images": counts.get(S.GROUNDED, 0),
        "boxes": boxes,
        "spans": spans,
        "span_words": span_words,
        "score_histogram": {
            "edges": [round(i / HISTOGRAM_BINS, 10) for i in range(HISTOGRAM_BINS + 1)],
            "counts": histogram,
        },
        "timings_s": {stage: round(seconds, 6) for stage, seconds in sorted(timings.items())},
        # Out-of-memory halvings of detector batches and other fault-model events (docs/robustness.md)
        "faults": dict(sorted(faults.items())),
    }


def write(samples, file, context) -> None:
    file.write(json.dumps(shard_stats(samples, context), indent=1, sort_keys=True).encode("utf-8"))
