"""COCO-format caption files (``captions_*.json``: ``images`` with ``id`` and ``file_name``, ``annotations`` with
``image_id`` and ``caption``), as the Karpathy test splits of COCO and Flickr30k are distributed for evaluation."""
from __future__ import annotations

from typing import Any

from kosmos.evaluate.formats.common import load_json


def read_images_and_first_captions(path, what: str) -> tuple[list[dict], dict]:
    """The ``images`` entries and each image's first caption (its few-shot demonstration), checked."""
    data = load_json(path, what)
    if not isinstance(data, dict) or not isinstance(data.get("images"), list):
        raise ValueError(f"{what} {path}: expected a COCO captions json with an 'images' list")
    for index, im in enumerate(data["images"]):
        if not isinstance(im, dict) or "id" not in im or not isinstance(im.get("file_name"), str):
            raise ValueError(f"{what} {path}: images[{index}] needs 'id' and a 'file_name' string")
    captions: dict = {}
    for index, ann in enumerate(data.get("annotations") or []):
        if not isinstance(ann, dict) or not isinstance(ann.get("caption"), str) or "image_id" not in ann:
            raise ValueError(f"{what} {path}: annotations[{index}] needs 'image_id' and a 'caption' string")
        captions.setdefault(ann["image_id"], ann["caption"])
    return data["images"], captions


def read_references(path) -> dict[Any, list[str]]:
    """Every reference caption by image id, checked."""
    data = load_json(path, "annotations")
    if not isinstance(data, dict) or not isinstance(data.get("annotations"), list):
        raise ValueError(f"annotations {path}: expected a COCO captions json with an 'annotations' list")
    refs: dict[Any, list[str]] = {}
    for index, ann in enumerate(data["annotations"]):
        if not isinstance(ann, dict) or not isinstance(ann.get("caption"), str) or "image_id" not in ann \
                or isinstance(ann["image_id"], (list, dict)):
            raise ValueError(f"annotations {path}: annotations[{index}] needs 'image_id' and a 'caption' string")
        refs.setdefault(ann["image_id"], []).append(ann["caption"])
    return refs
