"""Image captioning (COCO Karpathy test, Flickr30k Karpathy test, as COCO-format captions json; Kosmos-1 and
Kosmos-2 section 4). Few-shot: k ``(image, "An image of {caption}")`` demonstrations from the training split."""
from __future__ import annotations

import json
import os
from typing import Any

from kosmos.evaluate.generate import Decoding, Query, clean_answer
from kosmos.tasks.base import Inputs, Task, atomic_write, first_existing

DECODING = Decoding("An image of", num_beams=5, no_repeat_ngram_size=3, max_new_tokens=30)
DEMONSTRATION = "An image of {caption}"
STOPS = ("An image of",)  # a few-shot continuation that starts the next demonstration is cut there


def demonstration_caption(caption: str) -> str:
    """A reference caption as it follows "An image of": stripped, its first letter lower-cased unless the
    first word is an acronym ("A man ..." -> "a man ...", "TV ..." stays)."""
    caption = " ".join(caption.split())
    first = caption.split(" ")[0] if caption else ""
    if len(first) > 1 and first[:2].isupper():
        return caption
    return caption[:1].lower() + caption[1:]


def queries_from(images: list[dict], images_dir: str, pool=(), inputs: Inputs = Inputs()) -> list[Query]:
    """One query per image entry; ``pool``: ``(document_key(train file, image id), (path, caption))``
    demonstrations to draw from."""
    from kosmos.evaluate.fewshot import demonstrations, document_key

    out = []
    for im in images:
        segments = []
        for path, caption in demonstrations(pool, inputs.shots, inputs.seed, inputs.trial, im["id"],
                                            document_key(inputs.annotations, im["id"])):
            segments += [("image", path), ("text", DEMONSTRATION.format(caption=demonstration_caption(caption)))]
        out.append(Query(im["id"], os.path.join(images_dir, im["file_name"]), DECODING.prompt, "caption",
                         tuple(segments)))
    return out


def queries(inputs: Inputs) -> list[Query]:
    from kosmos.evaluate.fewshot import document_key
    from kosmos.evaluate.formats.coco_captions import read_images_and_first_captions

    images, _ = read_images_and_first_captions(inputs.annotations, "annotations")
    pool = []
    if inputs.shots:
        if not inputs.train:
            raise ValueError(f"{inputs.shots}-shot captioning needs --train (a COCO captions json of the training split)")
        train_images, captions = read_images_and_first_captions(inputs.train, "train")
        folder = inputs.train_images or inputs.images
        pool = [(document_key(inputs.train, im["id"]), (os.path.join(folder, im["file_name"]), captions[im["id"]]))
                for im in train_images if im["id"] in captions]
    return queries_from(images, inputs.images, pool, inputs)


def write(results: list, path, inputs: Inputs) -> None:
    stops = STOPS if inputs.shots else ()
    atomic_write(path, lambda h: json.dump(
        [{"image_id": r["id"], "caption": clean_answer(r["generated"], stops)} for r in results], h))


def score_caption(predictions: str, annotations: str) -> dict:
    """COCO-caption rules: each image at most one caption (a second one is an error, as the official code
    refuses it), every predicted image must be in the annotations; images without a prediction are not
    scored (counted in ``missing``)."""
    from kosmos.evaluate.formats.coco_captions import read_references
    from kosmos.evaluate.formats.predictions import read_results_list
    from kosmos.evaluate.metrics.captioning import caption_metrics

    results = read_results_list(predictions, "image_id", "caption")
    refs = read_references(annotations)
    candidates: dict[Any, str] = {}
    for index, row in enumerate(results):
        if row["image_id"] in candidates:
            raise ValueError(f"predictions {predictions}: entry {index}: a second caption for image "
                             f"{row['image_id']!r} (the official evaluation refuses duplicates)")
        if row["image_id"] not in refs:
            raise ValueError(f"predictions {predictions}: entry {index}: image {row['image_id']!r} is not in "
                             f"the annotations")
        candidates[row["image_id"]] = row["caption"]
    return {**caption_metrics(candidates, refs), "total": len(candidates), "missing": len(refs) - len(candidates)}


def score(predictions: str, inputs: Inputs) -> dict:
    return score_caption(predictions, inputs.annotations)


def find(root):
    """Suite layout: ``caption/annotations.json`` (+ ``train.json``), images in ``caption/images``."""
    folder = root / "caption"
    annotations = first_existing(folder, "annotations.json", "captions_test*.json")
    if annotations is None:
        return None
    train = first_existing(folder, "train.json")
    return Inputs(annotations=str(annotations), images=str(folder / "images"), train=str(train) if train else None)


TASK = Task(
    name="caption", benchmark="COCO / Flickr30k Karpathy test (COCO captions json)", mode="generate",
    prompt=DECODING.prompt, needs=("images", "annotations"), metric="CIDEr_pct", queries=queries, score=score,
    write=write, needs_java=True, decoding=DECODING, shots=(0, 2, 4), suffix="json", find=find,
    demonstrations="train split (--train): (image, 'An image of {caption}'), an image's first caption",
    notes="beam 5; few-shot captions cut at a following 'An image of'")
