"""Tiny GRIT shards for tests and examples: coloured shapes with GRIT records, written as the pipeline's
webdataset layout (``fmt="pipeline"``) or as GrIT-20M downloaded with img2dataset (``fmt="img2dataset"``)."""
from __future__ import annotations

import io
import json
import random
import tarfile
from pathlib import Path

COLOURS = {"red": (220, 30, 30), "green": (30, 180, 30), "blue": (30, 60, 220), "yellow": (230, 210, 20)}
SHAPES = ("square", "circle")


def toy_record(rng: random.Random, key: str, width: int, height: int):
    """(PIL image, GRIT record dict) with one or two shapes and their boxes."""
    from PIL import Image, ImageDraw

    image = Image.new("RGB", (width, height), (245, 245, 245))
    draw = ImageDraw.Draw(image)
    parts, noun_chunks, ref_exps = [], [], []
    caption = ""
    for i in range(rng.choice((1, 2))):
        colour, shape = rng.choice(sorted(COLOURS)), rng.choice(SHAPES)
        w, h = rng.uniform(0.25, 0.5), rng.uniform(0.25, 0.5)
        x1, y1 = rng.uniform(0.0, 1 - w), rng.uniform(0.0, 1 - h)
        box = [x1, y1, x1 + w, y1 + h]
        pixels = [box[0] * width, box[1] * height, box[2] * width, box[3] * height]
        (draw.rectangle if shape == "square" else draw.ellipse)(pixels, fill=COLOURS[colour])
        phrase = f"a {colour} {shape}"
        if caption:
            caption += " and "
        start = len(caption)
        caption += phrase
        span = [start, start + len(phrase), *box, round(rng.uniform(0.7, 0.99), 3)]
        noun_chunks.append(list(span))
        ref_exps.append(list(span))
    caption += " on a white background"
    record = {"key": key, "caption": caption, "width": width, "height": height,
              "noun_chunks": noun_chunks, "ref_exps": ref_exps}
    return image, record


def _add(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    tar.addfile(info, io.BytesIO(data))


def write_toy_shards(directory, num_shards: int = 2, per_shard: int = 8, width: int = 80, height: int = 64,
                     fmt: str = "pipeline", seed: int = 0, corrupt_keys: tuple[str, ...] = ()) -> list[Path]:
    """Write ``num_shards`` tar shards; keys listed in ``corrupt_keys`` get undecodable image bytes."""
    from grit_pipeline.serialize import grounded_text

    rng = random.Random(seed)
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    paths = []
    for shard in range(num_shards):
        path = directory / f"{shard:05d}.tar"
        with tarfile.open(path, "w") as tar:
            for i in range(per_shard):
                key = f"{shard:05d}{i:04d}"
                image, record = toy_record(rng, key, width, height)
                buffer = io.BytesIO()
                image.save(buffer, format="JPEG", quality=95)
                jpg = buffer.getvalue() if key not in corrupt_keys else b"not a jpeg"
                if fmt == "pipeline":
                    meta = {**record, "id": int(key), "url": f"http://example/{key}.jpg", "status": "grounded"}
                    txt = grounded_text(record)
                elif fmt == "img2dataset":
                    meta = {**record, "url": f"http://example/{key}.jpg", "status": "success",
                            "original_width": width, "original_height": height, "error_message": None,
                            "clip_similarity_vitb32": 0.3}
                    txt = record["caption"]
                else:
                    raise ValueError(fmt)
                _add(tar, f"{key}.jpg", jpg)
                _add(tar, f"{key}.json", json.dumps(meta).encode())
                _add(tar, f"{key}.txt", txt.encode())
        paths.append(path)
    return paths


def write_toy_refcoco(root, name: str = "refcoco.json", count: int = 3, seed: int = 3) -> Path:
    """MDETR RefCOCO json ``root/name`` for ``count`` toy images (one expression each, ids 10, 11, ...), the
    images in ``root/images``."""
    root = Path(root)
    rng = random.Random(seed)
    images, anns = [], []
    (root / "images").mkdir(parents=True, exist_ok=True)
    for i in range(count):
        image, record = toy_record(rng, f"img{i}", 96, 64)
        image.save(root / "images" / f"img{i}.jpg")
        s, e, x1, y1, x2, y2, _ = record["ref_exps"][0]
        images.append({"id": 10 + i, "file_name": f"img{i}.jpg", "width": 96, "height": 64,
                       "caption": record["caption"][int(s):int(e)], "original_img_id": f"img{i}"})
        anns.append({"id": 10 + i, "image_id": 10 + i, "bbox": [x1 * 96, y1 * 64, (x2 - x1) * 96, (y2 - y1) * 64],
                     "original_id": i})
    path = root / name
    path.write_text(json.dumps({"images": images, "annotations": anns}))
    return path
