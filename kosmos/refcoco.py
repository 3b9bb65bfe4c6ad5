"""Synthetic truth -> RefCOCO annotations in MDETR's format, for REC evaluation on held-out synthetic images.

MDETR's ``finetune_refcoco_*.json`` is COCO-style: one ``images`` entry per referring expression (``caption``
is the expression, ``file_name``/``width``/``height`` the image) and one ``annotations`` entry per image entry
(``image_id`` = the entry's id, ``bbox`` = [x, y, w, h] in pixels). Each truth object whose referring
expression names it alone becomes one entry (plural expressions such as "two red circles" are left out, as
RefCOCO expressions have one referent); the image files are extracted from the synthetic shards next to the
json.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

from kosmos.shards import expand_urls, raw_samples


def truth_lines(truth_dir: str | Path):
    for path in sorted(Path(truth_dir).glob("*.jsonl")):
        with open(path) as handle:
            for line in handle:
                if line.strip():
                    yield json.loads(line)


def truth_to_refcoco(truth: list[dict], split: str = "val") -> dict:
    """MDETR RefCOCO json from synthetic truth lines (objects without a box are skipped)."""
    images, annotations = [], []
    for line in truth:
        w, h = line["width"], line["height"]
        referents: dict[tuple, int] = {}
        for obj in line["objects"]:
            referents[tuple(obj["ref_exp"])] = referents.get(tuple(obj["ref_exp"]), 0) + 1
        for index, obj in enumerate(line["objects"]):
            x1, y1, x2, y2 = obj["box"]
            if not (x2 > x1 and y2 > y1) or referents[tuple(obj["ref_exp"])] != 1:
                continue  # as in RefCOCO, an expression names exactly one object
            s, e = obj["ref_exp"]
            expression = line["caption"][s:e]
            entry_id = len(images)
            images.append({
                "id": entry_id, "file_name": f"{line['key']}.jpg", "width": w, "height": h,
                "caption": expression, "dataset_name": "refcoco", "original_img_id": line["key"],
                "sentence_id": entry_id, "tokens_positive_eval": [[[0, len(expression)]]], "split": split,
            })
            box = [x1 * w, y1 * h, (x2 - x1) * w, (y2 - y1) * h]
            annotations.append({
                "id": entry_id, "image_id": entry_id, "bbox": [round(v, 3) for v in box],
                "area": round(box[2] * box[3], 3), "iscrowd": 0, "category_id": 1,
                "original_id": f"{line['key']}/{obj.get('object_id', index)}",
                "tokens_positive": [[0, len(expression)]],
            })
    return {"images": images, "annotations": annotations,
            "categories": [{"id": 1, "name": "object", "supercategory": "object"}]}


def extract_images(shards, keys: set[str], images_dir: str | Path) -> int:
    """Write ``KEY.jpg`` of every wanted key found in the shards into ``images_dir``."""
    images_dir = Path(images_dir)
    images_dir.mkdir(parents=True, exist_ok=True)
    written = 0
    for url in expand_urls(shards):
        for raw in raw_samples(url):
            if raw["__key__"] in keys and "jpg" in raw:
                (images_dir / f"{raw['__key__']}.jpg").write_bytes(raw["jpg"])
                written += 1
    return written


def write_refcoco(synth_dir: str | Path, output_dir: str | Path, split: str = "val") -> dict:
    """Convert ``synth_dir``'s truth to ``output_dir/finetune_refcoco_{split}.json`` plus ``images/``."""
    synth_dir, output_dir = Path(synth_dir), Path(output_dir)
    data = truth_to_refcoco(list(truth_lines(synth_dir / "truth")), split)
    keys = {im["original_img_id"] for im in data["images"]}
    written = extract_images(str(synth_dir), keys, output_dir / "images")
    output_dir.mkdir(parents=True, exist_ok=True)
    path = output_dir / f"finetune_refcoco_{split}.json"
    tmp = path.with_name(path.name + f".tmp-{os.getpid()}")
    tmp.write_text(json.dumps(data))
    os.replace(tmp, path)
    return {"annotations": str(path), "images": str(output_dir / "images"), "expressions": len(data["images"]),
            "image_files": written}
