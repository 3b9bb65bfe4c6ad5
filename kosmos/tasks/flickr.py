"""Phrase grounding (Flickr30k Entities, ANY-BOX; Kosmos-2 section 4.1)."""
from __future__ import annotations

import os

from kosmos.evaluate.generate import Decoding, Query
from kosmos.tasks.base import Inputs, Task

DECODING = Decoding("<grounding>{prefix}<phrase>{phrase}</phrase>", no_repeat_ngram_size=3, max_new_tokens=16)


def flickr_prompt(prefix: str, phrase: str) -> str:
    # "<grounding>{prefix} <phrase>{phrase}</phrase>"; the space before the phrase goes inside the tag, as
    # the serializer writes training text, so the phrase tokenises as in training.
    prefix = prefix.strip()
    return DECODING.prompt.format(prefix=prefix, phrase=(" " if prefix else "") + phrase.strip())


def flickr_source(annotations: str, flickr_entities: str | None = None, split: str | None = None):
    """(sentence entries, json boxes by entry, FlickrEntities or None) from MDETR's
    ``final_flickr_separateGT_*.json`` and/or a Flickr30k Entities folder (``Sentences/``, ``Annotations/``).

    ``annotations`` may be the folder itself: the entries are then built from its files (``split``: read
    ``<split>.txt``). With a json and ``flickr_entities``, the ground-truth boxes come from the XML files, as
    the official script takes them."""
    from kosmos.evaluate.formats.common import load_json
    from kosmos.evaluate.formats.flickr30k_entities import FlickrEntities, flickr_sentence_entries
    from kosmos.evaluate.formats.mdetr import coco_entries

    if os.path.isdir(annotations):
        entities = FlickrEntities(annotations, split)
        return coco_entries({"images": flickr_sentence_entries(entities), "annotations": []}, annotations)[0], {}, \
            entities
    images, truth = coco_entries(load_json(annotations, "annotations"), annotations)
    entities = FlickrEntities(flickr_entities) if flickr_entities else None
    return images, truth, entities


def queries_from(annotations, images_dir: str) -> list[Query]:
    """Queries from MDETR's json (loaded) or a Flickr30k Entities folder (its path)."""
    from kosmos.evaluate.formats.mdetr import coco_entries
    from kosmos.evaluate.metrics.grounding import flickr_queries

    if isinstance(annotations, (str, os.PathLike)):
        images, truth, entities = flickr_source(str(annotations))
    else:
        (images, truth), entities = coco_entries(annotations, "annotations"), None
    return [Query(q["id"], os.path.join(images_dir, q["image"]["file_name"]), flickr_prompt(q["prefix"], q["phrase"]),
                  "flickr") for q in flickr_queries(images, truth, entities)]


def queries(inputs: Inputs) -> list[Query]:
    from kosmos.evaluate.formats.common import load_json

    source = inputs.annotations if os.path.isdir(inputs.annotations) else load_json(inputs.annotations, "annotations")
    return queries_from(source, inputs.images)


def score_flickr(predictions: str, annotations: str, flickr_entities: str | None = None, split: str | None = None,
                 match: str = "exact", gt_boxes: str = "phrase-text", iou_dtype: str = "float64") -> dict:
    """ANY-BOX recall of a predictions file (ours or fairseq ``H-`` lines); ``ground_truth`` says where the boxes
    came from (the Flickr30k Entities XML or the json)."""
    from kosmos.evaluate.formats.predictions import check_known, read_predictions
    from kosmos.evaluate.metrics.grounding import flickr_queries, flickr_recall

    images, truth, entities = flickr_source(annotations, flickr_entities, split)
    queries = flickr_queries(images, truth, entities, gt_boxes=gt_boxes)
    preds = read_predictions(predictions)
    check_known(preds, [q["id"] for q in queries], len(queries), predictions)
    result = flickr_recall(preds, queries, match=match, iou_dtype=iou_dtype)
    return {**result, "ground_truth": "xml" if entities else "json"}


def score(predictions: str, inputs: Inputs) -> dict:
    return score_flickr(predictions, inputs.annotations, inputs.option("flickr_entities"), inputs.option("split"),
                        match=inputs.option("match", "exact"), gt_boxes=inputs.option("gt_boxes", "phrase-text"),
                        iou_dtype=inputs.option("iou_dtype", "float64"))


TASK = Task(
    name="flickr", benchmark="Flickr30k Entities (MDETR final_flickr_separateGT_*.json or the dataset folder)",
    mode="generate", prompt="<grounding>{prefix} <phrase>{phrase}</phrase>", needs=("images", "annotations"),
    metric="R@1_pct", queries=queries, score=score, decoding=DECODING, notes="ANY-BOX R@1/5/10")
