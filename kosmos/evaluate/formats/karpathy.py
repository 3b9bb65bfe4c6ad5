"""Karpathy-split jsons (``dataset_flickr30k.json``, ``dataset_coco.json``: ``images[]`` with ``filename``, ``imgid``,
``split`` train / val / test and ``sentences[].raw``)."""
from __future__ import annotations

from kosmos.evaluate.formats.common import load_json


def karpathy_images(path, what: str = "annotations") -> list[dict]:
    """The entries of a Karpathy-split json, checked: ``{"id", "filename", "split", "sentences": [raw, ...]}``."""
    data = load_json(path, what)
    if not isinstance(data, dict) or not isinstance(data.get("images"), list):
        raise ValueError(f"{what} {path}: expected a Karpathy-split json with an 'images' list")
    out = []
    for index, entry in enumerate(data["images"]):
        where = f"{what} {path}: images[{index}]"
        if not isinstance(entry, dict) or not isinstance(entry.get("filename"), str) or not isinstance(entry.get("split"), str):
            raise ValueError(f"{where}: needs a 'filename' and a 'split' string")
        sentences = entry.get("sentences")
        if not isinstance(sentences, list) or not all(isinstance(s, dict) and isinstance(s.get("raw"), str) for s in sentences):
            raise ValueError(f"{where}: 'sentences' must be a list of {{'raw': str, ...}}")
        key = entry.get("imgid", entry["filename"])
        if isinstance(key, (bool, list, dict, float)) or key is None:
            raise ValueError(f"{where}: 'imgid' must be a string or an integer")
        out.append({"id": key, "filename": entry["filename"], "split": entry["split"],
                    "sentences": [s["raw"] for s in sentences]})
    return out
