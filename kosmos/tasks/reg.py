"""Referring expression generation (RefCOCOg, MDETR ``finetune_refcocog*.json``; Kosmos-2 section 4.2)."""
from __future__ import annotations

import os
import re
from typing import Any

from kosmos.evaluate.generate import Decoding, Query
from kosmos.tasks.base import Inputs, Task

DECODING = Decoding("<phrase> It</phrase><object>{locations}</object> is", no_repeat_ngram_size=3, max_new_tokens=20)


def reg_prompt(box) -> str:
    from grit_pipeline.location import HF_SPELLING, box_to_cells

    ul, lr = box_to_cells(box)
    return DECODING.prompt.format(locations=HF_SPELLING.location(ul) + HF_SPELLING.location(lr))


def _clamp_box(box):
    x1, y1, x2, y2 = (min(max(v, 0.0), 1.0) for v in box)
    return (x1, y1, max(x2, x1 + 1e-6), max(y2, y1 + 1e-6))


def queries_from(annotations: dict, images_dir: str) -> list[Query]:
    from kosmos.evaluate.metrics.grounding import xywh_to_xyxy

    gt = {a["image_id"]: a for a in annotations["annotations"]}
    out, seen = [], set()
    for im in annotations["images"]:
        ann = gt[im["id"]]
        obj = (im.get("original_img_id", im["file_name"]), ann.get("original_id", ann["id"]))
        if obj in seen:  # one query per object; its expressions are the references
            continue
        seen.add(obj)
        x1, y1, x2, y2 = xywh_to_xyxy(ann["bbox"])
        box = _clamp_box((x1 / im["width"], y1 / im["height"], x2 / im["width"], y2 / im["height"]))
        out.append(Query(im["id"], os.path.join(images_dir, im["file_name"]), reg_prompt(box), "reg"))
    return out


def queries(inputs: Inputs) -> list[Query]:
    from kosmos.evaluate.formats.common import load_json

    return queries_from(load_json(inputs.annotations, "annotations"), inputs.images)


def reg_description(row: dict) -> str:
    """The generated description of a REG prediction: the continuation after the prompt's "It ... is"."""
    if row.get("generated") is not None:
        text = row["generated"]
    else:
        from grit_pipeline.serialize import parse_grounded_text

        text = parse_grounded_text(row["text"]).caption
        text = re.sub(r"^\s*it\s+is\b", "", text, flags=re.IGNORECASE)
    return re.sub(r"<[^>]*>", "", text).strip().split("\n")[0].strip()


def ascii_only(text: str) -> str:
    """refer's reference cleaning (``sent.encode('ascii', 'ignore')``): non-ASCII characters are dropped."""
    return text.encode("ascii", "ignore").decode("ascii")


def reg_references(images: list[dict], truth: dict[Any, list[dict]], keep_non_ascii: bool = False
                   ) -> dict[Any, list[str]]:
    """Expressions per object (MDETR refcocog: one image entry per expression), keyed by the id of the
    object's first entry (the id ``kosmos predict reg`` writes). References lose their non-ASCII characters
    as in lichengunc/refer's evaluation, unless ``keep_non_ascii``."""
    first: dict[tuple, Any] = {}
    refs: dict[Any, list[str]] = {}
    for im in images:
        anns = truth.get(im["id"])
        if not anns:
            raise ValueError(f"expression {im['id']!r} has no annotation")
        ann = anns[0]
        obj = (im.get("original_img_id", im.get("file_name")), ann.get("original_id", ann.get("id")))
        key = first.setdefault(obj, im["id"])
        refs.setdefault(key, []).append(im["caption"] if keep_non_ascii else ascii_only(im["caption"]))
    return refs


def score_reg(predictions: str, annotations: str, keep_non_ascii: bool = False) -> dict:
    """METEOR and CIDEr of the generated descriptions against every expression of their object."""
    from kosmos.evaluate.formats.common import load_json
    from kosmos.evaluate.formats.mdetr import coco_entries
    from kosmos.evaluate.formats.predictions import check_known, read_predictions
    from kosmos.evaluate.metrics.captioning import caption_metrics

    images, truth = coco_entries(load_json(annotations, "annotations"), annotations)
    refs = reg_references(images, truth, keep_non_ascii)
    preds = read_predictions(predictions)
    if preds.positional:
        raise ValueError(f"predictions {predictions}: REG reads JSON lines with ids (kosmos predict reg)")
    check_known(preds, list(refs), len(refs), predictions)
    ref_keys = {str(k): k for k in refs}
    candidates = {ref_keys[str(key)]: reg_description(row) for key, row in preds.by_id.items()}
    result = caption_metrics(candidates, refs)
    return {**result, "total": len(candidates), "missing": len(refs) - len(candidates)}


def score(predictions: str, inputs: Inputs) -> dict:
    return score_reg(predictions, inputs.annotations, keep_non_ascii=inputs.option("keep_non_ascii", False))


TASK = Task(
    name="reg", benchmark="RefCOCOg (MDETR finetune_refcocog*.json)", mode="generate", prompt=DECODING.prompt,
    needs=("images", "annotations"), metric="CIDEr_pct", queries=queries, score=score, decoding=DECODING,
    needs_java=True,
    notes="METEOR and CIDEr against every expression of the object (refer's refEvaluation.py)")
