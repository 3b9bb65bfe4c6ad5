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


def queries_from(annotations, images_dir: str) -> list[Query]:
    """Queries from MDETR's json (loaded) or a Flickr30k Entities folder (its path)."""
    from kosmos.evalfiles import coco_entries
    from kosmos.metrics import flickr_queries

    if isinstance(annotations, (str, os.PathLike)):
        from kosmos.score import flickr_source

        images, truth, entities = flickr_source(str(annotations))
    else:
        (images, truth), entities = coco_entries(annotations, "annotations"), None
    return [Query(q["id"], os.path.join(images_dir, q["image"]["file_name"]), flickr_prompt(q["prefix"], q["phrase"]),
                  "flickr") for q in flickr_queries(images, truth, entities)]


def queries(inputs: Inputs) -> list[Query]:
    from kosmos.evalfiles import load_json

    source = inputs.annotations if os.path.isdir(inputs.annotations) else load_json(inputs.annotations, "annotations")
    return queries_from(source, inputs.images)


def score(predictions: str, inputs: Inputs) -> dict:
    from kosmos.score import score_flickr

    return score_flickr(predictions, inputs.annotations, inputs.option("flickr_entities"), inputs.option("split"),
                        match=inputs.option("match", "exact"), gt_boxes=inputs.option("gt_boxes", "phrase-text"),
                        iou_dtype=inputs.option("iou_dtype", "float64"))


TASK = Task(
    name="flickr", benchmark="Flickr30k Entities (MDETR final_flickr_separateGT_*.json or the dataset folder)",
    mode="generate", prompt="<grounding>{prefix} <phrase>{phrase}</phrase>", needs=("images", "annotations"),
    metric="R@1", queries=queries, score=score, decoding=DECODING, notes="ANY-BOX R@1/5/10")
