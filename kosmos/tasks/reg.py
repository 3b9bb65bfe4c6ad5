"""Referring expression generation (RefCOCOg, MDETR ``finetune_refcocog*.json``; Kosmos-2 section 4.2)."""
from __future__ import annotations

import os

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
    from kosmos.metrics import xywh_to_xyxy

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
    from kosmos.evalfiles import load_json

    return queries_from(load_json(inputs.annotations, "annotations"), inputs.images)


def score(predictions: str, inputs: Inputs) -> dict:
    from kosmos.score import score_reg

    return score_reg(predictions, inputs.annotations, keep_non_ascii=inputs.option("keep_non_ascii", False))


TASK = Task(
    name="reg", benchmark="RefCOCOg (MDETR finetune_refcocog*.json)", mode="generate", prompt=DECODING.prompt,
    needs=("images", "annotations"), metric="CIDEr", queries=queries, score=score, decoding=DECODING,
    notes="METEOR and CIDEr against every expression of the object (refer's refEvaluation.py)")
