"""Zero-shot image classification (ImageNet val; Kosmos-1 section 4.5): the image, then "The photo of the"; beam
search (2 beams) generates the category name, right when it equals the label's name (``classify``). The variant
``classify-rank`` ranks every class name by log-likelihood after the same prompt instead.

Files: an image folder with one subfolder per class, or a JSON list / JSON lines of ``{"image", "label"}``;
``--class-names``: one name per line (line n names label n, or the n-th subfolder in sorted order), a JSON list,
or a JSON object ``{label: name}``. Without it the subfolder names (``_`` read as a space) are the names."""
from __future__ import annotations

import json
import re
from pathlib import Path

from kosmos.evaluate.generate import Decoding, Query, clean_answer
from kosmos.evaluate.rank import Option, RankItem
from kosmos.tasks.base import Inputs, Task, first_existing

DECODING = Decoding("The photo of the", num_beams=2, max_new_tokens=12)


def class_names(inputs: Inputs, labels: list) -> dict:
    """label -> class name."""
    if not inputs.class_names:
        return {label: str(label).replace("_", " ") for label in labels}
    path = Path(inputs.class_names)
    if not path.exists():
        raise ValueError(f"--class-names {path}: no such file")
    text = path.read_text(encoding="utf-8")
    if path.suffix == ".json":
        try:
            value = json.loads(text)
        except ValueError as error:
            raise ValueError(f"--class-names {path}: not valid JSON ({error})") from None
        names = value if isinstance(value, dict) else dict(enumerate(value))
    else:
        names = dict(enumerate(line.strip() for line in text.splitlines() if line.strip()))
    ordered = sorted(set(labels), key=str)
    out = {}
    for label in labels:
        key = label if label in names else str(label) if str(label) in names else None
        if key is None and isinstance(label, str) and label.isdigit() and int(label) in names:
            key = int(label)
        if key is None and not any(isinstance(k, str) for k in names):  # folders: the n-th subfolder, sorted
            key = ordered.index(label)
        if key is None or key not in names:
            raise ValueError(f"--class-names {path}: no name for label {label!r}")
        out[label] = str(names[key])
    return out


def examples(inputs: Inputs) -> tuple[list[dict], dict]:
    from kosmos.evaluate.formats.image_folders import read_labelled_images

    rows = read_labelled_images(inputs.annotations, inputs.images)
    return rows, class_names(inputs, [row["label"] for row in rows])


def normalise_name(text: str) -> str:
    """A generated or true class name as compared: lower case, spaces collapsed, end punctuation dropped."""
    return re.sub(r"[\s.,;:!?]+$", "", " ".join(text.lower().split()))


def generation_queries(inputs: Inputs) -> list[Query]:
    rows, _ = examples(inputs)
    return [Query(row["id"], row["image"], DECODING.prompt, "classify") for row in rows]


def rank_queries(inputs: Inputs) -> list[RankItem]:
    rows, names = examples(inputs)
    choices = sorted(set(names.values()))
    return [RankItem(row["id"], [Option((("image", row["image"]), ("text", DECODING.prompt)), " " + name)
                                 for name in choices], {"choices": choices}) for row in rows]


def _predictions(path: str) -> dict:
    from kosmos.evaluate.formats.common import read_records, record_field

    return {str(record_field(r, "id", w, (str, int))): r for w, r in read_records(path, "predictions")}


def score_generation(predictions: str, inputs: Inputs) -> dict:
    rows, names = examples(inputs)
    found = _predictions(predictions)
    hits = sum(normalise_name(clean_answer(found[str(row["id"])].get("generated", ""))) == normalise_name(names[row["label"]])
               for row in rows if str(row["id"]) in found)
    return {"accuracy_pct": round(100 * hits / len(rows), 2), "total": len(rows),
            "missing": sum(str(row["id"]) not in found for row in rows)}


def score_rank(predictions: str, inputs: Inputs) -> dict:
    from kosmos.evaluate.metrics.classification import best_choice

    rows, names = examples(inputs)
    choices = sorted(set(names.values()))
    found = _predictions(predictions)
    hits = 0
    for row in rows:
        lls = found.get(str(row["id"]), {}).get("loglikelihoods")
        if lls is not None:
            hits += choices[best_choice(lls)] == names[row["label"]]
    return {"accuracy_pct": round(100 * hits / len(rows), 2), "total": len(rows)}


def find(root):
    """Suite layout: ``DIR/imagenet/val/CLASS/*.JPEG`` and optionally ``DIR/imagenet/classes.txt``."""
    folder = first_existing(root / "imagenet", "val")
    if folder is None:
        return None
    names = first_existing(root / "imagenet", "classes.txt", "classes.json")
    return Inputs(annotations=str(folder), class_names=str(names) if names else None)


TASKS = [
    Task(name="classify", benchmark="ImageNet-style image folder or (image, label) json + class names", mode="generate",
         prompt="[image] The photo of the", needs=("annotations",), metric="accuracy_pct", queries=generation_queries,
         score=score_generation, decoding=DECODING, find=find,
         notes="beam 2; exact match after lower-casing and dropping end punctuation"),
    Task(name="classify-rank", benchmark="ImageNet-style image folder or (image, label) json + class names",
         mode="rank", prompt="[image] The photo of the {class name}", needs=("annotations",), metric="accuracy_pct",
         queries=rank_queries, score=score_rank, find=find, notes="every class name ranked by log-likelihood"),
]
