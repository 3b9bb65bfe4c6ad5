"""Step 2.5 of GRIT: a chunk's boxes go to its expansion. Spans + kept detections -> a GRIT record."""
from __future__ import annotations

from typing import Sequence

from grit_pipeline.detectors.base import Detection
from grit_pipeline.record import GritRecord
from grit_pipeline.text import CaptionSpans


def assemble_record(
    key: str,
    caption: str,
    width: int,
    height: int,
    spans: CaptionSpans,
    kept: Sequence[Detection],
    id: int | None = None,
    url: str | None = None,
    clip_similarity_vitb32: float | None = None,
    clip_similarity_vitl14: float | None = None,
) -> GritRecord:
    """Build and validate the GrIT-20M record: one noun_chunks item and one ref_exps item per kept box.

    ``noun_chunks[j]`` is ``[*chunk span, *box, score]`` of ``kept[j]`` and ``ref_exps[j]`` the same box on the
    chunk's expansion, so the two columns stay one-to-one as in the released data (the containment rule
    is applied later, by the serializer).
    """
    noun_chunks, ref_exps = [], []
    for detection in kept:
        box_and_score = [float(v) for v in detection.box] + [float(detection.score)]
        chunk_start, chunk_end = spans.noun_chunks[detection.phrase_index]
        exp_start, exp_end = spans.ref_exps[detection.phrase_index]
        noun_chunks.append([float(chunk_start), float(chunk_end), *box_and_score])
        ref_exps.append([float(exp_start), float(exp_end), *box_and_score])
    return GritRecord(
        key=str(key),
        caption=caption,
        width=int(width),
        height=int(height),
        noun_chunks=noun_chunks,
        ref_exps=ref_exps,
        id=id,
        url=url,
        clip_similarity_vitb32=clip_similarity_vitb32,
        clip_similarity_vitl14=clip_similarity_vitl14,
    ).validate()
