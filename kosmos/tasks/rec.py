"""Referring expression comprehension (RefCOCO/+/g, MDETR ``finetune_refcoco*.json``; Kosmos-2 section 4.1)."""
from __future__ import annotations

import os

from kosmos.evaluate.generate import Decoding, Query
from kosmos.tasks.base import Inputs, Task

DECODING = Decoding("<grounding><phrase>{expression}</phrase>", no_repeat_ngram_size=3, max_new_tokens=16)


def rec_prompt(expression: str) -> str:
    return DECODING.prompt.format(expression=expression.strip())


def queries_from(annotations: dict, images_dir: str) -> list[Query]:
    return [Query(im["id"], os.path.join(images_dir, im["file_name"]), rec_prompt(im["caption"]), "rec")
            for im in annotations["images"]]


def queries(inputs: Inputs) -> list[Query]:
    from kosmos.evaluate.formats.common import load_json

    return queries_from(load_json(inputs.annotations, "annotations"), inputs.images)


def score_rec(predictions: str, annotations: str, match: str = "exact", iou_dtype: str = "float32") -> dict:
    """REC accuracy of a predictions file (ours or fairseq ``H-`` lines) against an MDETR RefCOCO json."""
    from kosmos.evaluate.formats.common import load_json
    from kosmos.evaluate.formats.mdetr import coco_entries
    from kosmos.evaluate.formats.predictions import check_known, read_predictions
    from kosmos.evaluate.metrics.grounding import rec_accuracy

    images, truth = coco_entries(load_json(annotations, "annotations"), annotations)
    preds = read_predictions(predictions)
    check_known(preds, [im["id"] for im in images], len(images), predictions)
    return rec_accuracy(preds, images, truth, match=match, iou_dtype=iou_dtype)


def score(predictions: str, inputs: Inputs) -> dict:
    return score_rec(predictions, inputs.annotations, match=inputs.option("match", "exact"),
                     iou_dtype=inputs.option("iou_dtype", "float32"))


class RecEvaluator:
    """Held-out REC during training: this task's prompts and decoding, scored in memory."""

    def __init__(self, annotations: dict, images_dir: str, processor, limit: int, path: str = "--eval-data"):
        from kosmos.evaluate.formats.mdetr import coco_entries

        images, self.truth = coco_entries(annotations, path)
        self.images = images[:limit]
        self.queries = queries_from({"images": self.images}, images_dir)
        self.processor = processor

    @classmethod
    def from_files(cls, eval_data: str | None, eval_images: str | None, processor, limit: int) -> "RecEvaluator":
        """From an MDETR RefCOCO json (or a ``kosmos synth-refcoco`` folder); images beside it or ``eval_images``."""
        from pathlib import Path

        from kosmos.evaluate.formats.common import load_json

        if not eval_data:
            raise ValueError("--eval-every needs --eval-data (an MDETR RefCOCO json)")
        path = Path(eval_data)
        if path.is_dir():  # a `kosmos synth-refcoco` output folder
            found = sorted(path.glob("finetune_refcoco*.json"))
            if not found:
                raise ValueError(f"--eval-data {path}: no finetune_refcoco*.json there")
            path = found[0]
        images = eval_images or str(path.parent / "images")
        return cls(load_json(path, "--eval-data"), images, processor, limit=limit, path=str(path))

    def evaluate(self, model) -> dict:
        """REC accuracy (``accuracy_pct``) of ``model`` on the held-out expressions (the whole image shown)."""
        from kosmos.evaluate.generate import generate
        from kosmos.evaluate.metrics.grounding import rec_accuracy

        model.eval()
        rows = generate(model, self.processor, self.queries, {"rec": DECODING}, image_mode="square")
        return rec_accuracy({row["id"]: row for row in rows}, self.images, self.truth)


TASK = Task(
    name="rec", benchmark="RefCOCO / RefCOCO+ / RefCOCOg (MDETR finetune_refcoco*.json)", mode="generate",
    prompt=DECODING.prompt, needs=("images", "annotations"), metric="accuracy_pct", queries=queries, score=score,
    decoding=DECODING, notes="first box of the expression's phrase, IoU >= 0.5 (refexp_evaluate.py)")
