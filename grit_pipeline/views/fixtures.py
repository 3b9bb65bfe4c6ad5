"""Tiny datasets in both layouts the views read, for tests and for trying the views without a build.

``write_example_build(root)`` writes ``root/inputs`` (img2dataset input shard) and ``root/build`` (a GRIT
build in the docs/DESIGN.md output layout, with grounded rows, rejects of several statuses, stats and
``_run.json``); ``write_example_grit20m(root)`` writes img2dataset shards as a GrIT-20M download leaves
them. Both return the records they wrote so a test can compare what a page shows with what is stored.
Images are drawn with PIL: each object is a filled rectangle exactly where its box says.
"""
from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
from PIL import Image, ImageDraw

from grit_pipeline import status as st
from grit_pipeline.record import GRIT_SCHEMA, GritRecord
from grit_pipeline.serialize import select_entities

HOSTILE_CAPTION = ('<img src=x onerror="window.__pwned=1">a red box <script>window.__pwned=2</script>'
                   ' & "quoted" </p><b>bold?</b> \u2028{cards}')
HOSTILE_REASON = '<script>window.__pwned=3</script> reason with <i>markup</i>'
HOSTILE_URL = 'javascript:window.__pwned=4//"><svg onload="window.__pwned=5">'

_OBJECT_COLOURS = {"red": (220, 30, 30), "green": (30, 170, 60), "blue": (40, 70, 220), "yellow": (230, 200, 20)}


def _image(width: int, height: int, objects: list[tuple[str, tuple[float, float, float, float]]]) -> bytes:
    image = Image.new("RGB", (width, height), (235, 235, 230))
    draw = ImageDraw.Draw(image)
    for colour, (x1, y1, x2, y2) in objects:
        draw.rectangle([x1 * width, y1 * height, x2 * width - 1, y2 * height - 1], fill=_OBJECT_COLOURS[colour])
    out = io.BytesIO()
    image.save(out, format="JPEG", quality=92)
    return out.getvalue()


def _span(caption: str, phrase: str, box, score) -> list[float]:
    start = caption.index(phrase)
    return [float(start), float(start + len(phrase)), *map(float, box), float(score)]


def _add(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    info.mtime = 0
    tar.addfile(info, io.BytesIO(data))


def _grounded_examples() -> list[dict[str, Any]]:
    """(record, image objects) for the kept samples; boxes and spans line up with the drawn objects."""
    out = []
    cap = "a red box next to a blue ball on the floor"
    out.append(dict(
        key="000000000", caption=cap, width=320, height=240,
        noun_chunks=[_span(cap, "a red box", (0.10, 0.20, 0.45, 0.70), 0.91),
                     _span(cap, "a blue ball", (0.60, 0.50, 0.90, 0.90), 0.78)],
        ref_exps=[_span(cap, "a red box next to a blue ball on the floor", (0.10, 0.20, 0.45, 0.70), 0.91),
                  _span(cap, "a blue ball on the floor", (0.60, 0.50, 0.90, 0.90), 0.78)],
        dropped_boxes=[_span(cap, "the floor", (0.0, 0.8, 1.0, 1.0), 0.40)],
        objects=[("red", (0.10, 0.20, 0.45, 0.70)), ("blue", (0.60, 0.50, 0.90, 0.90))],
    ))
    cap = "two green leaves"
    out.append(dict(
        key="000000001", caption=cap, width=200, height=300,
        noun_chunks=[_span(cap, "two green leaves", (0.05, 0.05, 0.40, 0.30), 0.88),
                     _span(cap, "two green leaves", (0.50, 0.60, 0.95, 0.95), 0.70)],
        ref_exps=[_span(cap, "two green leaves", (0.05, 0.05, 0.40, 0.30), 0.88),
                  _span(cap, "two green leaves", (0.50, 0.60, 0.95, 0.95), 0.70)],
        dropped_boxes=[],
        objects=[("green", (0.05, 0.05, 0.40, 0.30)), ("green", (0.50, 0.60, 0.95, 0.95))],
    ))
    cap = HOSTILE_CAPTION
    out.append(dict(
        key="000000002", caption=cap, width=256, height=256, url=HOSTILE_URL,
        noun_chunks=[_span(cap, "a red box", (0.25, 0.25, 0.75, 0.75), 0.83)],
        ref_exps=[_span(cap, "a red box", (0.25, 0.25, 0.75, 0.75), 0.83)],
        dropped_boxes=[],
        objects=[("red", (0.25, 0.25, 0.75, 0.75))],
    ))
    cap = "a yellow square in the corner"
    out.append(dict(
        key="000000003", caption=cap, width=300, height=200,
        noun_chunks=[_span(cap, "a yellow square", (0.70, 0.00, 1.00, 0.40), 0.67)],
        ref_exps=[_span(cap, "a yellow square in the corner", (0.70, 0.00, 1.00, 0.40), 0.67)],
        dropped_boxes=[_span(cap, "the corner", (0.6, 0.0, 1.0, 0.5), 0.30)],
        objects=[("yellow", (0.70, 0.00, 1.00, 0.40))],
    ))
    return out


def write_example_build(root: str | Path, threshold: float = 0.65) -> dict[str, Any]:
    """Write ``root/inputs/00000.tar`` and a one-shard build in ``root/build``; return
    {"build", "inputs", "grounded": [records], "dropped": {key: spans}, "rejects": [rows],
    "with_image": [keys whose image can be shown]}."""
    root = Path(root)
    inputs, build = root / "inputs", root / "build"
    inputs.mkdir(parents=True, exist_ok=True)
    build.mkdir(parents=True, exist_ok=True)
    grounded = _grounded_examples()
    no_box_caption = "a blue ball that nobody detected"
    rejects = [
        dict(key="000000004", status=st.NO_BOX, stage="ground", caption=no_box_caption,
             reason="no box scored above 0.65",
             dropped_boxes=[_span(no_box_caption, "a blue ball", (0.3, 0.3, 0.6, 0.6), 0.52)],
             objects=[("blue", (0.3, 0.3, 0.6, 0.6))], width=240, height=240),
        dict(key="000000005", status=st.DECODE_ERROR, stage="decode", caption="a broken picture",
             reason="cannot identify image file", dropped_boxes=[], corrupt=True),
        dict(key="000000006", status=st.BAD_CAPTION, stage="spans", caption=None,
             reason=HOSTILE_REASON, dropped_boxes=[], objects=[("green", (0.1, 0.1, 0.9, 0.9))],
             width=200, height=150),
        dict(key="000000007", status=st.DOWNLOAD_ERROR, stage="ingest", caption="a picture never fetched",
             reason="img2dataset: HTTP Error 404", dropped_boxes=[], missing=True),
    ]
    # input shard (img2dataset layout): every sample with an image, as the pipeline read it
    with tarfile.open(inputs / "00000.tar", "w") as tar:
        for item in grounded + rejects:
            if item.get("missing"):
                continue
            data = b"\xff\xd8 not really a jpeg" if item.get("corrupt") else _image(
                item["width"], item["height"], item["objects"])
            _add(tar, f"{item['key']}.jpg", data)
            _add(tar, f"{item['key']}.txt", (item.get("caption") or "").encode())
            _add(tar, f"{item['key']}.json", json.dumps({"key": item["key"], "caption": item.get("caption"),
                                                          "status": "success"}).encode())
    # build shard
    records = []
    with tarfile.open(build / "00000.tar", "w") as tar:
        for item in grounded:
            record = GritRecord(key=item["key"], caption=item["caption"], width=item["width"],
                                height=item["height"], noun_chunks=item["noun_chunks"], ref_exps=item["ref_exps"],
                                id=int(item["key"]), url=item.get("url", f"https://example.com/{item['key']}.jpg"))
            record.validate()
            records.append(record)
            _add(tar, f"{item['key']}.jpg", _image(item["width"], item["height"], item["objects"]))
            _add(tar, f"{item['key']}.json", json.dumps({**record.to_dict(), "status": st.GROUNDED}).encode())
            _add(tar, f"{item['key']}.txt", item["caption"].encode())
    rows = []
    for item, record in zip(grounded, records):
        rows.append({**record.to_dict(), "grounded_text": "", "status": st.GROUNDED,
                     "source_shard": str(inputs / "00000.tar"), "dropped_boxes": item["dropped_boxes"]})
    schema = GRIT_SCHEMA.append(pa.field("grounded_text", pa.string())).append(
        pa.field("status", pa.string())).append(pa.field("source_shard", pa.string())).append(
        pa.field("dropped_boxes", pa.list_(pa.list_(pa.float64()))))
    pq.write_table(pa.Table.from_pylist(rows, schema=schema), build / "00000.parquet")
    reject_rows = [{"key": r["key"], "status": r["status"], "reason": r["reason"], "stage": r["stage"],
                    "caption": r["caption"], "url": f"https://example.com/{r['key']}.jpg",
                    "source_shard": "00000.tar", "dropped_boxes": r["dropped_boxes"]} for r in rejects]
    reject_schema = pa.schema([("key", pa.string()), ("status", pa.string()), ("reason", pa.string()),
                               ("stage", pa.string()), ("caption", pa.string()), ("url", pa.string()),
                               ("source_shard", pa.string()),
                               ("dropped_boxes", pa.list_(pa.list_(pa.float64())))])
    pq.write_table(pa.Table.from_pylist(reject_rows, schema=reject_schema), build / "00000_rejects.parquet")
    scores = [s[6] for item in grounded for s in item["noun_chunks"] + item["dropped_boxes"]]
    scores += [s[6] for r in rejects for s in r["dropped_boxes"]]
    counts = [0] * 20
    for score in scores:
        counts[min(int(score * 20), 19)] += 1
    counts_by_status: dict[str, int] = {st.GROUNDED: len(grounded)}
    for r in rejects:
        counts_by_status[r["status"]] = counts_by_status.get(r["status"], 0) + 1
    stats = {"shard": "00000", "input": str(inputs / "00000.tar"), "counts": counts_by_status,
             "boxes": sum(len(i["noun_chunks"]) for i in grounded),
             "images": len(grounded), "samples": len(grounded) + len(rejects),
             "spans": sum(len(select_entities(r, min_score=threshold)) for r in records),
             "span_words": sum(len(r.caption[e.start:e.end].split()) for r in records
                               for e in select_entities(r, min_score=threshold)),
             "score_histogram": {"edges": [i / 20 for i in range(21)], "counts": counts},
             "timings_s": {"decode": 0.01, "spans": 0.02, "ground": 0.1}}
    (build / "00000_stats.json").write_text(json.dumps(stats))
    (build / "00000.done").write_text("")
    (build / "_run.json").write_text(json.dumps({"input": str(inputs), "box_threshold": threshold,
                                                 "nms_iou": 0.6, "detector": "example"}))
    # truth (grit synth's format): the drawn objects of every sample with an image
    truth_lines = []
    for item in grounded + rejects:
        if "objects" not in item or not item.get("caption"):
            continue
        objects = []
        for j, span in enumerate(item.get("noun_chunks") or item["dropped_boxes"]):
            ref = (item.get("ref_exps") or item["dropped_boxes"])[j]
            objects.append({"noun_chunk": [int(span[0]), int(span[1])], "ref_exp": [int(ref[0]), int(ref[1])],
                            "box": [float(v) for v in span[2:6]]})
        truth_lines.append(json.dumps({"key": item["key"], "caption": item["caption"], "width": item["width"],
                                       "height": item["height"], "objects": objects, "absent": []}))
    (root / "truth").mkdir(exist_ok=True)
    (root / "truth" / "00000.jsonl").write_text("\n".join(truth_lines) + "\n")
    return {"build": build, "inputs": inputs, "truth": root / "truth", "grounded": [r.to_dict() for r in records],
            "dropped": {i["key"]: i["dropped_boxes"] for i in grounded}, "rejects": reject_rows,
            "with_image": sorted(i["key"] for i in grounded + rejects if "objects" in i)}


def write_example_grit20m(root: str | Path) -> dict[str, Any]:
    """img2dataset shard ``root/00000.tar`` + ``00000.parquet`` with GrIT-20M columns in each KEY.json
    (one sample failed to download); return {"dir": root, "grounded": [records], "failed": [keys]}."""
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    grounded = _grounded_examples()[:2] + _grounded_examples()[3:]
    rows, records = [], []
    with tarfile.open(root / "00000.tar", "w") as tar:
        for item in grounded:
            record = GritRecord(key=item["key"], caption=item["caption"], width=item["width"], height=item["height"],
                                noun_chunks=item["noun_chunks"], ref_exps=item["ref_exps"], id=int(item["key"]) + 100,
                                url=f"https://example.com/{item['key']}.jpg", clip_similarity_vitb32=0.3,
                                clip_similarity_vitl14=0.3)
            records.append(record.to_dict())
            meta = {**record.to_dict(), "status": "success", "error_message": None,
                    "original_width": item["width"] * 2, "original_height": item["height"] * 2}
            _add(tar, f"{item['key']}.jpg", _image(item["width"], item["height"], item["objects"]))
            _add(tar, f"{item['key']}.json", json.dumps(meta).encode())
            _add(tar, f"{item['key']}.txt", item["caption"].encode())
            rows.append({"key": item["key"], "url": meta["url"], "caption": item["caption"], "status": "success",
                         "error_message": None, "width": item["width"], "height": item["height"]})
    rows.append({"key": "000000009", "url": "https://example.com/gone.jpg", "caption": "a lost cat",
                 "status": "failed_to_download", "error_message": "<b>HTTP Error 404</b>",
                 "width": None, "height": None})
    pq.write_table(pa.Table.from_pylist(rows), root / "00000.parquet")
    return {"dir": root, "grounded": records, "failed": ["000000009"]}
