"""Held-out evaluation during training: REC on a RefCOCO-format file (the ``kosmos predict rec`` prompts and
decoding, scored in memory)."""
from __future__ import annotations

from pathlib import Path


class RecEvaluator:
    """Held-out REC during training: the ``kosmos predict rec`` prompts and decoding, scored in memory."""

    def __init__(self, annotations: dict, images_dir: str, processor, limit: int, path: str = "--eval-data"):
        from kosmos.evalfiles import coco_entries
        from kosmos.predict import build_queries

        images, self.truth = coco_entries(annotations, path)
        self.images = images[:limit]
        self.queries = build_queries("rec", images_dir, {"images": self.images})
        self.processor = processor

    @classmethod
    def from_files(cls, eval_data: str | None, eval_images: str | None, processor, limit: int) -> "RecEvaluator":
        """From an MDETR RefCOCO json (or a ``kosmos synth-refcoco`` folder); images beside it or ``eval_images``."""
        from kosmos.evalfiles import load_json

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
        """REC accuracy (percent) of ``model`` on the held-out expressions (the whole image shown)."""
        from kosmos.metrics import rec_accuracy
        from kosmos.predict import generate

        model.eval()
        predictions = {row["id"]: row for row in generate(model, self.processor, self.queries, image_mode="square")}
        return rec_accuracy(predictions, self.images, self.truth)


