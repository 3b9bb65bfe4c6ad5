"""Scorers of the Kosmos-2 tasks (rec, flickr, reg, caption, vqa): metrics from saved predictions and the
benchmark's annotation files (``kosmos score TASK`` reaches them through the task registry, ``kosmos.tasks``).

Defaults reproduce the official evaluation scripts (``kosmos.metrics`` names each); every file problem is a
one-line ``ValueError`` naming the file and line or entry.
"""
from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from kosmos import metrics
from kosmos.evalfiles import (FlickrEntities, Predictions, coco_entries, flickr_sentence_entries, load_json,
                              read_predictions)


def _check_known(predictions: Predictions, keys, count: int, path) -> None:
    unknown = predictions.unknown(keys, count)
    if unknown:
        key, line = unknown[0]
        what = "sample" if predictions.positional else "id"
        raise ValueError(f"predictions {path}:{line}: {what} {key!r:.60} is not in the annotations"
                         + (f" ({len(unknown)} such lines)" if len(unknown) > 1 else ""))


def score_rec(predictions: str, annotations: str, match: str = "exact", iou_dtype: str = "float32") -> dict:
    images, truth = coco_entries(load_json(annotations, "annotations"), annotations)
    preds = read_predictions(predictions)
    _check_known(preds, [im["id"] for im in images], len(images), predictions)
    return metrics.rec_accuracy(preds, images, truth, match=match, iou_dtype=iou_dtype)


def flickr_source(annotations: str, flickr_entities: str | None = None, split: str | None = None):
    """(sentence entries, json boxes by entry, FlickrEntities or None) from MDETR's
    ``final_flickr_separateGT_*.json`` and/or a Flickr30k Entities folder (``Sentences/``, ``Annotations/``).

    ``annotations`` may be the folder itself: the entries are then built from its files (``split``: read
    ``<split>.txt``). With a json and ``flickr_entities``, the ground-truth boxes come from the XML files, as
    the official script takes them."""
    if Path(annotations).is_dir():
        entities = FlickrEntities(annotations, split)
        return coco_entries({"images": flickr_sentence_entries(entities), "annotations": []}, annotations)[0], {}, \
            entities
    images, truth = coco_entries(load_json(annotations, "annotations"), annotations)
    entities = FlickrEntities(flickr_entities) if flickr_entities else None
    return images, truth, entities


def score_flickr(predictions: str, annotations: str, flickr_entities: str | None = None, split: str | None = None,
                 match: str = "exact", gt_boxes: str = "phrase-text", iou_dtype: str = "float64") -> dict:
    images, truth, entities = flickr_source(annotations, flickr_entities, split)
    queries = metrics.flickr_queries(images, truth, entities, gt_boxes=gt_boxes)
    preds = read_predictions(predictions)
    _check_known(preds, [q["id"] for q in queries], len(queries), predictions)
    result = metrics.flickr_recall(preds, queries, match=match, iou_dtype=iou_dtype)
    return {**result, "ground_truth": "xml" if entities else "json"}


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
    images, truth = coco_entries(load_json(annotations, "annotations"), annotations)
    refs = reg_references(images, truth, keep_non_ascii)
    preds = read_predictions(predictions)
    if preds.positional:
        raise ValueError(f"predictions {predictions}: REG reads JSON lines with ids (kosmos predict reg)")
    _check_known(preds, list(refs), len(refs), predictions)
    ref_keys = {str(k): k for k in refs}
    candidates = {ref_keys[str(key)]: reg_description(row) for key, row in preds.by_id.items()}
    result = metrics.caption_metrics(candidates, refs)
    return {**result, "total": len(candidates), "missing": len(refs) - len(candidates)}


def _results_list(value, path, id_field: str, text_field: str) -> list[dict]:
    if not isinstance(value, list):
        raise ValueError(f"predictions {path}: expected a JSON list of {{{id_field!r}, {text_field!r}}} objects")
    for index, row in enumerate(value):
        where = f"predictions {path}: entry {index}"
        if not isinstance(row, dict) or id_field not in row or text_field not in row:
            raise ValueError(f"{where}: expected an object with {id_field!r} and {text_field!r}")
        if isinstance(row[id_field], (bool, list, dict, float)) or row[id_field] is None:
            raise ValueError(f"{where}: {id_field!r} must be a string or an integer, got {row[id_field]!r:.40}")
        if not isinstance(row[text_field], str):
            raise ValueError(f"{where}: {text_field!r} must be a string, got {type(row[text_field]).__name__}")
    return value


def score_caption(predictions: str, annotations: str) -> dict:
    """COCO-caption rules: each image at most one caption (a second one is an error, as the official code
    refuses it), every predicted image must be in the annotations; images without a prediction are not
    scored (counted in ``missing``)."""
    results = _results_list(load_json(predictions, "predictions"), predictions, "image_id", "caption")
    annotations_json = load_json(annotations, "annotations")
    if not isinstance(annotations_json, dict) or not isinstance(annotations_json.get("annotations"), list):
        raise ValueError(f"annotations {annotations}: expected a COCO captions json with an 'annotations' list")
    refs: dict[Any, list[str]] = {}
    for index, ann in enumerate(annotations_json["annotations"]):
        if not isinstance(ann, dict) or not isinstance(ann.get("caption"), str) or "image_id" not in ann \
                or isinstance(ann["image_id"], (list, dict)):
            raise ValueError(f"annotations {annotations}: annotations[{index}] needs 'image_id' and a 'caption' string")
        refs.setdefault(ann["image_id"], []).append(ann["caption"])
    candidates: dict[Any, str] = {}
    for index, row in enumerate(results):
        if row["image_id"] in candidates:
            raise ValueError(f"predictions {predictions}: entry {index}: a second caption for image "
                             f"{row['image_id']!r} (the official evaluation refuses duplicates)")
        if row["image_id"] not in refs:
            raise ValueError(f"predictions {predictions}: entry {index}: image {row['image_id']!r} is not in "
                             f"the annotations")
        candidates[row["image_id"]] = row["caption"]
    return {**metrics.caption_metrics(candidates, refs), "total": len(candidates),
            "missing": len(refs) - len(candidates)}


def score_vqa(predictions: str, annotations: str, questions: str, version: str = "2021") -> dict:
    results = _results_list(load_json(predictions, "predictions"), predictions, "question_id", "answer")
    annotations_json = load_json(annotations, "annotations")
    questions_json = load_json(questions, "questions")
    if not isinstance(annotations_json, dict) or not isinstance(annotations_json.get("annotations"), list):
        raise ValueError(f"annotations {annotations}: expected the VQA annotations json ('annotations' list)")
    for index, ann in enumerate(annotations_json["annotations"]):
        if not isinstance(ann, dict) or "question_id" not in ann or not isinstance(ann.get("answers"), list) \
                or not ann["answers"] or not all(isinstance(a, dict) and isinstance(a.get("answer"), str)
                                                 for a in ann["answers"]):
            raise ValueError(f"annotations {annotations}: annotations[{index}] needs 'question_id' and "
                             f"'answers' [{{'answer': str}}, ...]")
    if not isinstance(questions_json, dict) or not isinstance(questions_json.get("questions"), list) \
            or not all(isinstance(q, dict) and "question_id" in q for q in questions_json["questions"]):
        raise ValueError(f"questions {questions}: expected the VQA questions json ('questions' list)")
    return metrics.vqa_accuracy(results, annotations_json, questions_json, version)
