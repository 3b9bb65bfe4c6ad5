"""Tiny datasets in both layouts the views read, for the gallery, report and browser tests.

``write_example_build(root)`` writes ``root/inputs/00000.tar`` (an img2dataset input shard, through the
test shard writer) and ``root/build`` (a one-shard GRIT build written by the pipeline's own shard committer
and writers, with grounded rows, rejects of several statuses, stats, the ``_done/00000.done`` marker and
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
from grit_pipeline.pipeline import layout
from grit_pipeline.pipeline.api import RunSummary, write_run_files
from grit_pipeline.pipeline.config import PipelineConfig
from grit_pipeline.pipeline.sample import new_sample
from grit_pipeline.pipeline.shards import BuildSink
from grit_pipeline.record import GritRecord
from grit_pipeline.serialize import grounded_text
from tests.fixtures_shards import write_shard

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
    {"build", "inputs", "truth", "grounded": [records], "dropped": {key: spans}, "rejects": [rows],
    "with_image": [keys whose image can be shown]}."""
    root = Path(root)
    inputs, build = root / "inputs", root / "build"
    grounded = _grounded_examples()
    no_box_caption = "a blue ball that nobody detected"
    rejects = [
        dict(key="000000004", status=st.NO_BOX, stage="expand", caption=no_box_caption,
             reason=f"no box scored above {threshold} (best 0.520)",
             dropped_boxes=[_span(no_box_caption, "a blue ball", (0.3, 0.3, 0.6, 0.6), 0.52)],
             objects=[("blue", (0.3, 0.3, 0.6, 0.6))], width=240, height=240),
        dict(key="000000005", status=st.DECODE_ERROR, stage="ground", caption="a broken picture",
             reason="cannot identify image file", dropped_boxes=[], corrupt=True),
        dict(key="000000006", status=st.BAD_CAPTION, stage="noun_chunks", caption=None,
             reason=HOSTILE_REASON, dropped_boxes=[], objects=[("green", (0.1, 0.1, 0.9, 0.9))],
             width=200, height=150),
        dict(key="000000007", status=st.DOWNLOAD_ERROR, stage="ingest", caption="a picture never fetched",
             reason="img2dataset status failed_to_download: HTTP Error 404", dropped_boxes=[], missing=True),
    ]
    for item in grounded + rejects:
        item.setdefault("url", f"https://example.com/{item['key']}.jpg")
        if not item.get("missing"):
            item["image"] = b"\xff\xd8 not really a jpeg" if item.get("corrupt") else _image(
                item["width"], item["height"], item["objects"])
    # the input shard, as img2dataset writes it (every sample, the failed download only in the parquet)
    write_shard(inputs, "00000", [
        {"key": item["key"], "caption": item["caption"], "image": item.get("image"), "url": item["url"],
         "width": item.get("width", 48), "height": item.get("height", 32),
         **({"status": "failed_to_download", "error_message": "HTTP Error 404"} if item.get("missing") else {})}
        for item in grounded + rejects])
    # the build, through the pipeline's shard committer: finished samples as the stages leave them
    config = PipelineConfig(input=str(inputs), output=str(build), box_threshold=threshold, detector="noop",
                            engine="local", progress=False)
    records, samples = [], []
    for item in grounded:
        record = GritRecord(key=item["key"], caption=item["caption"], width=item["width"], height=item["height"],
                            noun_chunks=item["noun_chunks"], ref_exps=item["ref_exps"], id=int(item["key"]),
                            url=item["url"])
        record.validate()
        records.append(record)
        samples.append(new_sample(
            key=item["key"], source_shard="00000", caption=item["caption"], url=item["url"], id=int(item["key"]),
            image_bytes=item["image"], image_ext="jpg", width=item["width"], height=item["height"],
            status=st.GROUNDED, stage="expand", noun_chunks=item["noun_chunks"], ref_exps=item["ref_exps"],
            dropped_boxes=item["dropped_boxes"], grounded_text=grounded_text(record, min_score=threshold),
            seconds={"noun_chunks": 0.005, "ground": 0.025, "expand": 0.001}))
    for item in rejects:
        samples.append(new_sample(
            key=item["key"], source_shard="00000", caption=item["caption"], url=item["url"],
            width=item.get("width"), height=item.get("height"), status=item["status"], reason=item["reason"],
            stage=item["stage"], dropped_boxes=item["dropped_boxes"]))
    sink = BuildSink(config)
    sink.write("00000", samples, config.params_through("write"), str(inputs / "00000"))
    summary = RunSummary(output=str(build), shards_total=1, shards_written=["00000"], samples=len(samples))
    write_run_files(config, summary, mode="fused")
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
            "dropped": {i["key"]: i["dropped_boxes"] for i in grounded},
            "rejects": pq.read_table(build / layout.rejects_name("00000")).to_pylist(),
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
