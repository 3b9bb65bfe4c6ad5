"""`grit instruct` throughput on one core beside `grit run`'s text stages, on the same 4,000 records.

- ``instruct_core_records_per_s``: ``make_conversation`` alone (validation, selection, both kinds of turn);
- ``instruct_local_records_per_s``: `grit instruct --engine local` end to end over a 2-shard GRIT build
  (reading tar + parquet, the stage, the four writers, atomic commits), start-up included;
- ``text_stages_records_per_s``: `grit run`'s noun-chunk stage on the same captions (``caption_spans``: spaCy
  noun chunks and their expansions), the step every GRIT record goes through before any detector.
"""
from __future__ import annotations

import io
import json
import os
import tarfile
import tempfile
import time

RECORDS = 4000
SHARDS = 2
COLOURS = ("red", "green", "blue", "yellow", "white", "black")
SHAPES = ("square", "ball", "box", "triangle", "dog", "car")


def _record(n: int) -> dict:
    a, b = (COLOURS[n % 6], SHAPES[n % 5]), (COLOURS[(n + 2) % 6], SHAPES[(n + 3) % 6])
    caption = f"a {a[0]} {a[1]} on the left of a {b[0]} {b[1]} in a small room"
    spans = []
    for (colour, shape), box in ((a, (0.05, 0.1, 0.45, 0.6)), (b, (0.55, 0.4, 0.95, 0.9))):
        phrase = f"a {colour} {shape}"
        start = caption.index(phrase)
        spans.append([float(start), float(start + len(phrase)), *box, 0.9])
    ref_exps = [list(spans[0]), [spans[1][0], float(caption.index(" in a small room")), *spans[1][2:]]]
    return {"key": f"{n:09d}", "caption": caption, "width": 64, "height": 64, "noun_chunks": spans,
            "ref_exps": ref_exps}


def _write_build(folder: str, records: list[dict]) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq
    from PIL import Image

    buffer = io.BytesIO()
    Image.new("RGB", (64, 64), (120, 130, 140)).save(buffer, format="JPEG")
    jpeg = buffer.getvalue()
    per = len(records) // SHARDS
    for s in range(SHARDS):
        part = records[s * per:(s + 1) * per]
        with tarfile.open(os.path.join(folder, f"{s:05d}.tar"), "w") as tar:
            for r in part:
                for ext, data in (("jpg", jpeg), ("json", json.dumps(r).encode()), ("txt", b"<grounding>...")):
                    info = tarfile.TarInfo(f"{r['key']}.{ext}")
                    info.size = len(data)
                    tar.addfile(info, io.BytesIO(data))
        pq.write_table(pa.Table.from_pylist(part), os.path.join(folder, f"{s:05d}.parquet"))


def run() -> dict:
    from grit_pipeline.instruct import InstructParams, make_conversation
    from grit_pipeline.instruct_build import InstructConfig, run_instruct
    from grit_pipeline.text import caption_spans, load_nlp

    records = [_record(n) for n in range(RECORDS)]
    params = InstructParams()
    started = time.perf_counter()
    turns = sum(len(make_conversation(r, params).samples) for r in records)
    core_s = time.perf_counter() - started

    with tempfile.TemporaryDirectory() as root:
        build, output = os.path.join(root, "build"), os.path.join(root, "instruct")
        os.makedirs(build)
        _write_build(build, records)
        started = time.perf_counter()
        summary = run_instruct(InstructConfig(input=build, output=output, engine="local", progress=False))
        local_s = time.perf_counter() - started

    nlp = load_nlp()
    captions = [r["caption"] for r in records]
    caption_spans(captions[:200], nlp=nlp)  # warm-up
    started = time.perf_counter()
    caption_spans(captions, nlp=nlp, batch_size=256)
    text_s = time.perf_counter() - started
    return {
        "records": RECORDS,
        "turns": turns,
        "instruct_core_records_per_s": round(RECORDS / core_s, 1),
        "instruct_local_records_per_s": round(RECORDS / local_s, 1),
        "instruct_local_counts": summary.counts,
        "text_stages_records_per_s": round(RECORDS / text_s, 1),
        "instruct_local_vs_text_stages": round(text_s / local_s, 2),
        "load_average_1min": round(os.getloadavg()[0], 2),
    }
