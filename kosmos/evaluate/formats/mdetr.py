"""MDETR's COCO-style annotation jsons: RefCOCO/+/g (``finetune_refcoco*.json``: one ``images`` entry per
expression) and Flickr30k (``final_flickr_separateGT_*.json``: one entry per sentence), checked as they are read."""
from __future__ import annotations

from typing import Any

from kosmos.evaluate.formats.common import number


def coco_entries(annotations, path, need_caption: bool = True) -> tuple[list[dict], dict[Any, list[dict]]]:
    """The ``images`` entries (sizes as floats) and the ``annotations`` by ``image_id`` (``bbox`` as four
    floats) of a COCO/MDETR-style json, checked."""
    if not isinstance(annotations, dict) or not isinstance(annotations.get("images"), list) \
            or not isinstance(annotations.get("annotations"), list):
        raise ValueError(f"annotations {path}: expected a JSON object with 'images' and 'annotations' lists")
    images = []
    for i, image in enumerate(annotations["images"]):
        where = f"annotations {path}: images[{i}]"
        if not isinstance(image, dict) or "id" not in image:
            raise ValueError(f"{where}: expected an object with 'id'")
        if isinstance(image["id"], (list, dict)):
            raise ValueError(f"{where}: 'id' must be a string or an integer")
        checked = {**image, "width": number(image.get("width"), f"{where}.width"),
                   "height": number(image.get("height"), f"{where}.height")}
        if checked["width"] <= 0 or checked["height"] <= 0:
            raise ValueError(f"{where}: width and height must be positive")
        if need_caption and not isinstance(image.get("caption"), str):
            raise ValueError(f"{where}: 'caption' must be a string")
        images.append(checked)
    by_image: dict[Any, list[dict]] = {}
    for i, ann in enumerate(annotations["annotations"]):
        where = f"annotations {path}: annotations[{i}]"
        if not isinstance(ann, dict) or "image_id" not in ann or isinstance(ann["image_id"], (list, dict)):
            raise ValueError(f"{where}: expected an object with 'image_id'")
        bbox = ann.get("bbox")
        if not isinstance(bbox, (list, tuple)) or len(bbox) != 4:
            raise ValueError(f"{where}: 'bbox' must be [x, y, w, h]")
        by_image.setdefault(ann["image_id"], []).append(
            {**ann, "bbox": [number(v, f"{where}.bbox") for v in bbox]})
    return images, by_image
