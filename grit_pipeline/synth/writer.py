"""Write the synthetic world exactly as img2dataset lays out a download, plus the truth beside it.

``DIR/NNNNN.tar`` (webdataset: ``KEY.jpg``, ``KEY.txt``, ``KEY.json``), ``DIR/NNNNN.parquet`` (img2dataset's
columns), ``DIR/NNNNN_stats.json`` and ``DIR/truth/NNNNN.jsonl`` (never read by the pipeline).
Every byte is a function of (seed, image index): tar mtimes are fixed and stats carry no wall-clock times.
"""
from __future__ import annotations

import hashlib
import io
import json
import os
import random
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import pyarrow as pa
import pyarrow.parquet as pq
from PIL import Image

from .captions import ABSENT, IGNORE, OBJECT, Caption, caption_doc, make_caption, tree_ref
from .scene import Scene, random_scene, render_scene

# img2dataset's parquet columns for an input with url + caption (downloader.py builds this schema)
IMG2DATASET_SCHEMA = pa.schema([
    pa.field("url", pa.string()),
    pa.field("caption", pa.string()),
    pa.field("key", pa.string()),
    pa.field("status", pa.string()),
    pa.field("error_message", pa.string()),
    pa.field("width", pa.int32()),
    pa.field("height", pa.int32()),
    pa.field("original_width", pa.int32()),
    pa.field("original_height", pa.int32()),
    pa.field("exif", pa.string()),
    pa.field("sha256", pa.string()),
])
TRUTH_VERSION = 2  # 2: ref_exp by the paper's rule on the generator's tree, semantic_ref_exp beside it
# Defects real downloads have, injected on request (``defect_rate``) so demos show every reject path.
DEFECTS = ("failed_to_download", "truncated_jpeg", "empty_caption", "abstract_caption")
ABSTRACT_CAPTION = "love, hope and happiness"


def sample_defect(seed: int, index: int, defect_rate: float) -> str | None:
    """Which defect (if any) image ``index`` of world ``seed`` gets; its own stream, so images stay the same."""
    if defect_rate <= 0:
        return None
    rng = random.Random(f"grit-synth-defect:{seed}:{index}")
    return rng.choice(DEFECTS) if rng.random() < defect_rate else None


@dataclass
class SynthSample:
    index: int
    scene: Scene
    caption: Caption
    jpeg: bytes

    @property
    def url(self) -> str:
        return f"synth://{self.index}"


def scene_rng(seed: int, index: int) -> random.Random:
    """The random stream of image ``index`` under ``seed`` (string seeding is stable across runs)."""
    return random.Random(f"grit-synth:{seed}:{index}")


def make_sample(seed: int, index: int, level: int = 3) -> SynthSample:
    """Scene, caption and JPEG bytes of image ``index`` of the world ``seed`` at curriculum ``level``."""
    rng = scene_rng(seed, index)
    scene = random_scene(rng, level)
    caption = make_caption(rng, scene, level)
    buffer = io.BytesIO()
    render_scene(scene).save(buffer, format="JPEG", quality=scene.jpeg_quality)
    return SynthSample(index, scene, caption, buffer.getvalue())


def truth_record(sample: SynthSample, key: str) -> dict:
    """The truth line of a sample (format documented in docs/evaluation.md, 'The truth format')."""
    scene, caption = sample.scene, sample.caption
    doc = caption_doc(caption)
    objects, absent, ignore, pronouns = [], [], [], []
    for m in caption.mentions:
        if m.kind == OBJECT:
            ref = list(tree_ref(caption, m, doc))
            for i in m.objects:
                o = scene.objects[i]
                objects.append({
                    "noun_chunk": list(m.span), "ref_exp": ref, "semantic_ref_exp": list(m.ref), "head": list(m.head),
                    "box": [round(v, 6) for v in o.box], "object_id": i,
                    "label": f"{o.size} {o.colour} {o.shape}",
                })
        elif m.kind == ABSENT:
            absent.append(list(m.span))
        elif m.kind == IGNORE:
            ignore.append(list(m.span))
            if m.refers_to:
                pronouns.append({"span": list(m.span), "object_ids": list(m.refers_to)})
    unmentioned = sorted(set(range(len(scene.objects))) - {o["object_id"] for o in objects})
    return {
        "key": key, "caption": caption.text, "width": scene.width, "height": scene.height,
        "objects": objects, "absent": absent, "ignore": ignore, "pronouns": pronouns,
        "unmentioned_boxes": [[round(v, 6) for v in scene.objects[i].box] for i in unmentioned],
        "background": scene.background, "truth_version": TRUTH_VERSION,
    }


def _atomic_write(path: Path, data: bytes) -> None:
    tmp = path.with_name(f"{path.name}.tmp-{os.getpid()}")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def write_img2dataset_shard(output: Path, name: str, samples: list[dict], truth_lines: list[str],
                            extra_stats: dict | None = None) -> None:
    """Write one shard exactly as img2dataset lays it out, plus ``truth/NAME.jsonl``.

    ``samples``: ``{"meta": {img2dataset columns}, "jpeg": bytes}``; a sample whose ``meta["status"]`` is not
    ``success`` gets a parquet row and no tar entry, as img2dataset does for a failed download.
    ``truth_lines``: JSON lines of the truth format. Files are written atomically; tar mtimes are fixed.
    """
    import webdataset as wds

    tar_buffer = io.BytesIO()
    rows = {f.name: [] for f in IMG2DATASET_SCHEMA}
    statuses: dict[str, int] = {}
    with wds.TarWriter(tar_buffer, mtime=0.0) as tar:
        for sample in samples:
            meta = sample["meta"]
            if meta["status"] == "success":
                tar.write({"__key__": meta["key"], "jpg": sample["jpeg"], "txt": meta["caption"].encode("utf-8"),
                           "json": json.dumps(meta, indent=4).encode("utf-8")})
            statuses[meta["status"]] = statuses.get(meta["status"], 0) + 1
            for column in rows:
                rows[column].append(meta.get(column))
    _atomic_write(output / f"{name}.tar", tar_buffer.getvalue())
    parquet_buffer = io.BytesIO()
    pq.write_table(pa.Table.from_pydict(rows, IMG2DATASET_SCHEMA), parquet_buffer)
    _atomic_write(output / f"{name}.parquet", parquet_buffer.getvalue())
    (output / "truth").mkdir(exist_ok=True)
    _atomic_write(output / "truth" / f"{name}.jsonl", "".join(line + "\n" for line in truth_lines).encode("utf-8"))
    stats = {
        "count": len(samples), "successes": statuses.get("success", 0),
        "failed_to_download": statuses.get("failed_to_download", 0), "failed_to_resize": 0,
        # nothing was downloaded: times are fixed so reruns give the same bytes
        "duration": 0.0, "start_time": 0.0, "end_time": 0.0, "status_dict": statuses, **(extra_stats or {}),
    }
    _atomic_write(output / f"{name}_stats.json", json.dumps(stats, indent=4).encode("utf-8"))


def write_shard(output: Path, shard: int, seed: int, first_index: int, count: int, sample_digits: int,
                defect_rate: float = 0.0, level: int = 3) -> int:
    """Write one shard (tar, parquet, stats, truth); returns the number of samples.

    A defective sample (``defect_rate``) has no truth line: it is there to be rejected, not measured.
    """
    name = f"{shard:05d}"
    samples, truth_lines = [], []
    for k in range(count):
        sample = make_sample(seed, first_index + k, level)
        defect = sample_defect(seed, first_index + k, defect_rate)
        key = f"{name}{k:0{sample_digits}d}"
        w, h = sample.scene.width, sample.scene.height
        caption = {"empty_caption": "", "abstract_caption": ABSTRACT_CAPTION}.get(defect, sample.caption.text)
        jpeg = sample.jpeg[: len(sample.jpeg) // 3] if defect == "truncated_jpeg" else sample.jpeg
        meta = {
            "url": sample.url, "caption": caption, "key": key, "status": "success",
            "error_message": None, "width": w, "height": h, "original_width": w, "original_height": h,
            "exif": "{}", "sha256": hashlib.sha256(jpeg).hexdigest(),
        }
        if defect == "failed_to_download":  # img2dataset keeps the row in the parquet, writes no tar entry
            meta.update(status="failed_to_download", error_message="HTTP Error 404: Not Found", width=None,
                        height=None, original_width=None, original_height=None, exif=None, sha256=None)
        samples.append({"meta": meta, "jpeg": jpeg})
        if defect is None:
            truth_lines.append(json.dumps(truth_record(sample, key), sort_keys=True))
    write_img2dataset_shard(output, name, samples, truth_lines,
                            {"synthetic": {"seed": seed, "first_index": first_index, "level": level}})
    return count


def write_synthetic_world(output: str | os.PathLike, images: int, seed: int = 0, shard_size: int = 1000,
                          progress: Callable[[str], None] | None = None, defect_rate: float = 0.0,
                          level: int = 3) -> dict:
    """Write ``images`` synthetic samples in shards of ``shard_size``; returns a summary dict.

    ``level``: 3 (default) the full world; 2 two objects, the caption names one; 1 one object, short caption.

    ``defect_rate``: the share of samples given one of ``DEFECTS`` (failed download, truncated JPEG, empty or
    abstract-only caption), as real downloads have; 0 (default) gives a clean world.
    """
    if images < 0 or shard_size < 1:
        raise ValueError("images must be >= 0 and shard_size >= 1")
    if not 0.0 <= defect_rate <= 1.0:
        raise ValueError("defect_rate must be in [0, 1]")
    out = Path(output)
    out.mkdir(parents=True, exist_ok=True)
    digits = max(4, len(str(shard_size - 1)))
    started = time.perf_counter()
    shards, done = 0, 0
    while done < images:
        count = min(shard_size, images - done)
        write_shard(out, shards, seed, done, count, digits, defect_rate, level)
        done += count
        shards += 1
        if progress:
            progress(f"shard {shards - 1:05d}: {done}/{images} images")
    wall = time.perf_counter() - started
    return {"output": str(out), "images": images, "shards": shards, "seed": seed, "level": level,
            "truth": str(out / "truth"), "wall_s": round(wall, 3),
            "images_per_minute": round(60 * images / wall) if wall > 0 else None}


def _print_progress(message: str) -> None:
    print(message, file=sys.stderr, flush=True)
