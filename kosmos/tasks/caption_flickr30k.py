"""Flickr30k captioning on the Karpathy split (Kosmos-1 section 4.1), from the split's own json
(``dataset_flickr30k.json``: ``images[]`` with ``filename``, ``imgid``, ``split`` (train / val / test) and
``sentences[].raw``), images in a folder (``flickr30k-images/``). The test split is captioned after "An image of"
(beam 5, as ``caption``); few-shot demonstrations ``(image, "An image of {caption}")`` come from the train split of
the same file (an image's first sentence). METEOR and CIDEr against the five sentences; predictions are written
as ``[{"image_id", "caption"}]`` with ``image_id`` the entry's ``imgid`` (else its file name)."""
from __future__ import annotations

import json
import os

from kosmos.evaluate.formats.karpathy import karpathy_images
from kosmos.evaluate.generate import Query, clean_answer
from kosmos.tasks.base import Inputs, Task, atomic_write, first_existing
from kosmos.tasks.caption import DECODING, DEMONSTRATION, STOPS, demonstration_caption


def split_of(inputs: Inputs) -> str:
    return inputs.option("split", "test")


def queries(inputs: Inputs) -> list[Query]:
    from kosmos.evaluate.fewshot import demonstrations, document_key

    entries = karpathy_images(inputs.annotations)
    tested = [e for e in entries if e["split"] == split_of(inputs)]
    if not tested:
        raise ValueError(f"annotations {inputs.annotations}: no image of split {split_of(inputs)!r}")
    pool = []
    if inputs.shots:
        source = karpathy_images(inputs.train, "train") if inputs.train else entries
        folder = inputs.train_images or inputs.images
        pool = [(document_key(inputs.train or inputs.annotations, "train", e["id"]),
                 (os.path.join(folder, e["filename"]), e["sentences"][0]))
                for e in source if e["split"] == "train" and e["sentences"]]
    out = []
    for entry in tested:
        segments = []
        for path, caption in demonstrations(pool, inputs.shots, inputs.seed, inputs.trial, entry["id"],
                                            document_key(inputs.annotations, split_of(inputs), entry["id"])):
            segments += [("image", path), ("text", DEMONSTRATION.format(caption=demonstration_caption(caption)))]
        out.append(Query(entry["id"], os.path.join(inputs.images, entry["filename"]), DECODING.prompt,
                         "caption_flickr30k", tuple(segments)))
    return out


def write(results: list, path, inputs: Inputs) -> None:
    stops = STOPS if inputs.shots else ()
    atomic_write(path, lambda h: json.dump(
        [{"image_id": r["id"], "caption": clean_answer(r["generated"], stops)} for r in results], h))


def score(predictions: str, inputs: Inputs) -> dict:
    """METEOR and CIDEr (COCO caption evaluation) of the split's images against their sentences; a second caption
    for an image, or one for an image not in the split, is an error naming the entry; images without a caption are
    not scored (``missing``), as ``kosmos score caption``."""
    from kosmos.evaluate.formats.common import load_json
    from kosmos.evaluate.metrics.captioning import caption_metrics

    results = load_json(predictions, "predictions")
    if not isinstance(results, list):
        raise ValueError(f"predictions {predictions}: expected a JSON list of {{'image_id', 'caption'}}")
    refs = {str(e["id"]): e["sentences"] for e in karpathy_images(inputs.annotations) if e["split"] == split_of(inputs)}
    candidates: dict[str, str] = {}
    for index, row in enumerate(results):
        where = f"predictions {predictions}: entry {index}"
        if not isinstance(row, dict) or "image_id" not in row or not isinstance(row.get("caption"), str):
            raise ValueError(f"{where}: expected an object with 'image_id' and a 'caption' string")
        key = str(row["image_id"])
        if key not in refs:
            raise ValueError(f"{where}: image {row['image_id']!r} is not in the {split_of(inputs)} split")
        if key in candidates:
            raise ValueError(f"{where}: a second caption for image {row['image_id']!r}")
        candidates[key] = row["caption"]
    return {**caption_metrics(candidates, refs), "total": len(candidates), "missing": len(refs) - len(candidates)}


def find(root):
    """Suite layout: ``DIR/flickr30k/dataset_flickr30k.json`` with images in ``DIR/flickr30k/flickr30k-images/``
    (or ``images/``); its train split gives the demonstrations."""
    folder = root / "flickr30k"
    path = first_existing(folder, "dataset_flickr30k.json")
    if path is None:
        return None
    images = first_existing(folder, "flickr30k-images", "images") or folder
    return Inputs(annotations=str(path), images=str(images), train=str(path))


TASK = Task(
    name="caption_flickr30k", benchmark="Flickr30k Karpathy split (dataset_flickr30k.json)", mode="generate",
    prompt=DECODING.prompt, needs=("annotations", "images"), metric="CIDEr_pct", queries=queries, score=score,
    write=write, needs_java=True, decoding=DECODING, shots=(0, 2, 4), suffix="json", find=find, shot_needs=(),
    demonstrations="train split of the same json (or --train): (image, 'An image of {caption}'), an image's first "
                   "sentence",
    notes="beam 5; test split (option split); few-shot captions cut at a following 'An image of'")
