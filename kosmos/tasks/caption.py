"""Image captioning (COCO Karpathy test, Flickr30k Karpathy test, as COCO-format captions json; Kosmos-1 and
Kosmos-2 section 4). Few-shot: k ``(image, "An image of {caption}")`` demonstrations from the training split."""
from __future__ import annotations

import json
import os

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


def _images_and_captions(path: str, what: str) -> tuple[list[dict], dict]:
    from kosmos.evalfiles import load_json

    data = load_json(path, what)
    if not isinstance(data, dict) or not isinstance(data.get("images"), list):
        raise ValueError(f"{what} {path}: expected a COCO captions json with an 'images' list")
    for index, im in enumerate(data["images"]):
        if not isinstance(im, dict) or "id" not in im or not isinstance(im.get("file_name"), str):
            raise ValueError(f"{what} {path}: images[{index}] needs 'id' and a 'file_name' string")
    captions: dict = {}
    for index, ann in enumerate(data.get("annotations") or []):
        if not isinstance(ann, dict) or not isinstance(ann.get("caption"), str) or "image_id" not in ann:
            raise ValueError(f"{what} {path}: annotations[{index}] needs 'image_id' and a 'caption' string")
        captions.setdefault(ann["image_id"], ann["caption"])  # an image's first caption is its demonstration
    return data["images"], captions


def queries_from(images: list[dict], images_dir: str, pool=(), inputs: Inputs = Inputs()) -> list[Query]:
    """One query per image entry; ``pool``: ``(image id, (path, caption))`` demonstrations to draw from."""
    from kosmos.evaluate.fewshot import demonstrations

    out = []
    for im in images:
        segments = []
        for path, caption in demonstrations(pool, inputs.shots, inputs.seed, inputs.trial, im["id"]):
            segments += [("image", path), ("text", DEMONSTRATION.format(caption=demonstration_caption(caption)))]
        out.append(Query(im["id"], os.path.join(images_dir, im["file_name"]), DECODING.prompt, "caption",
                         tuple(segments)))
    return out


def queries(inputs: Inputs) -> list[Query]:
    images, _ = _images_and_captions(inputs.annotations, "annotations")
    pool = []
    if inputs.shots:
        if not inputs.train:
            raise ValueError(f"{inputs.shots}-shot captioning needs --train (a COCO captions json of the training split)")
        train_images, captions = _images_and_captions(inputs.train, "train")
        folder = inputs.train_images or inputs.images
        pool = [(im["id"], (os.path.join(folder, im["file_name"]), captions[im["id"]]))
                for im in train_images if im["id"] in captions]
    return queries_from(images, inputs.images, pool, inputs)


def write(results: list, path, inputs: Inputs) -> None:
    stops = STOPS if inputs.shots else ()
    atomic_write(path, lambda h: json.dump(
        [{"image_id": r["id"], "caption": clean_answer(r["generated"], stops)} for r in results], h))


def score(predictions: str, inputs: Inputs) -> dict:
    from kosmos.score import score_caption

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
    prompt=DECODING.prompt, needs=("images", "annotations"), metric="CIDEr", queries=queries, score=score,
    write=write, decoding=DECODING, shots=(0, 2, 4), suffix="json", find=find,
    demonstrations="train split (--train): (image, 'An image of {caption}'), an image's first caption",
    notes="beam 5; few-shot captions cut at a following 'An image of'")
