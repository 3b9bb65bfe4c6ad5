"""``kosmos score TASK``: metrics from saved predictions and the benchmark's annotation files."""
from __future__ import annotations

import json
import re
from collections import defaultdict
from pathlib import Path
from typing import Any

from kosmos import metrics


def read_json(path) -> Any:
    with open(path) as handle:
        return json.load(handle)


def read_jsonl(path) -> list[dict]:
    rows = []
    with open(path) as handle:
        for number, line in enumerate(handle, 1):
            if line.strip():
                try:
                    rows.append(json.loads(line))
                except ValueError as error:
                    raise ValueError(f"{path}:{number}: not JSON ({error})") from None
    return rows


def predictions_by_id(rows: list[dict]) -> dict[Any, dict]:
    """Map id -> prediction; ids are matched as given and as strings/ints (json round trips vary)."""
    out: dict[Any, dict] = {}
    for row in rows:
        if "id" not in row or "text" not in row:
            raise ValueError(f"prediction lines need 'id' and 'text', got keys {sorted(row)}")
        out[row["id"]] = row
        out.setdefault(str(row["id"]), row)
        if isinstance(row["id"], str) and row["id"].isdigit():
            out.setdefault(int(row["id"]), row)
    return out


def score_rec(predictions: str, annotations: str) -> dict:
    return metrics.rec_accuracy(predictions_by_id(read_jsonl(predictions)), read_json(annotations))


def score_flickr(predictions: str, annotations: str) -> dict:
    return metrics.flickr_recall(predictions_by_id(read_jsonl(predictions)), read_json(annotations))


def reg_description(row: dict) -> str:
    """The generated description of a REG prediction: the continuation after the prompt's "It ... is"."""
    if row.get("generated") is not None:
        text = row["generated"]
    else:
        from grit_pipeline.serialize import parse_grounded_text

        text = parse_grounded_text(row["text"]).caption
        text = re.sub(r"^\s*it\s+is\b", "", text, flags=re.IGNORECASE)
    return re.sub(r"<[^>]*>", "", text).strip().split("\n")[0].strip()


def reg_references(annotations: dict) -> dict[Any, list[str]]:
    """Expressions per object (MDETR refcocog: one image entry per expression), keyed by the id of the
    object's first entry (the id ``kosmos predict reg`` writes)."""
    gt = {a["image_id"]: a for a in annotations["annotations"]}
    first: dict[tuple, Any] = {}
    refs: dict[Any, list[str]] = defaultdict(list)
    for im in annotations["images"]:
        ann = gt[im["id"]]
        obj = (im.get("original_img_id", im["file_name"]), ann.get("original_id", ann["id"]))
        key = first.setdefault(obj, im["id"])
        refs[key].append(im["caption"])
    return dict(refs)


def score_reg(predictions: str, annotations: str) -> dict:
    rows = read_jsonl(predictions)
    refs = reg_references(read_json(annotations))
    candidates = {row["id"]: reg_description(row) for row in rows}
    result = metrics.caption_metrics(candidates, refs)
    return {**result, "total": len(candidates)}


def score_caption(predictions: str, annotations: str) -> dict:
    results = read_json(predictions)
    refs: dict[Any, list[str]] = defaultdict(list)
    for ann in read_json(annotations)["annotations"]:
        refs[ann["image_id"]].append(ann["caption"])
    candidates = {r["image_id"]: r["caption"] for r in results}
    return {**metrics.caption_metrics(candidates, dict(refs)), "total": len(candidates)}


def score_vqa(predictions: str, annotations: str, questions: str) -> dict:
    return metrics.vqa_accuracy(read_json(predictions), read_json(annotations), read_json(questions))


def score(task: str, predictions: str, annotations: str, questions: str | None = None) -> dict:
    for name, path in (("--predictions", predictions), ("--annotations", annotations)):
        if not Path(path).exists():
            raise FileNotFoundError(f"{name} {path}: no such file")
    if task == "vqa":
        if not questions:
            raise ValueError("vqa needs --questions (the official questions json) as well as --annotations")
        return score_vqa(predictions, annotations, questions)
    return {"rec": score_rec, "flickr": score_flickr, "reg": score_reg, "caption": score_caption}[task](
        predictions, annotations)
