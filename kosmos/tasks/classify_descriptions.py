"""Zero-shot image classification with descriptions (Kosmos-1 section 4.5, CUB-style): groups of two similar
categories; the two categories' descriptions are given in context, then the image and "Question:what is the name
of {general category} in the picture? Answer:" (sic, no space after the colon); the answer is generated
(open-ended, greedy) and right when it equals the category's name (``classify-descriptions``). The baseline
(``classify-names``) gives the two category names in context instead of their descriptions.

Kosmos-1's groups (three groups of two birds, 20 images each) were not published, so groups are JSON lines of our
own, one group per line::

    {"id": "g1", "general_category": "the bird",
     "categories": [{"name": "indigo bunting", "description": "The indigo bunting is ...",
                     "images": ["g1/indigo/1.jpg", ...]},
                    {"name": "blue grosbeak", "description": "...", "images": [...]}]}

Images are relative to the file (or ``--images``); every image of the group is one query, its category the
label. The descriptions (or names) are joined by a line break, in file order."""
from __future__ import annotations

from pathlib import Path

from kosmos.evaluate.generate import Decoding, Query, clean_answer
from kosmos.tasks.base import Inputs, Task, first_existing
from kosmos.tasks.classify import normalise_name

DECODING = Decoding("Question:what is the name of {general_category} in the picture? Answer:", max_new_tokens=12)
STOPS = ("Question:", "Answer:")


def groups(inputs: Inputs) -> list[dict]:
    """The groups of the file, checked: ``{"id", "general_category", "categories": [{"name", "description",
    "images" (paths)}]}``."""
    from kosmos.evaluate.formats.common import read_records, record_field

    base = Path(inputs.images) if inputs.images else Path(inputs.annotations).parent
    out = []
    for where, record in read_records(inputs.annotations, "annotations"):
        general = record_field(record, "general_category", where)
        categories = record_field(record, "categories", where, list)
        if len(categories) < 2:
            raise ValueError(f"{where}: a group needs at least two categories, got {len(categories)}")
        checked = []
        for n, category in enumerate(categories):
            at = f"{where}: categories[{n}]"
            if not isinstance(category, dict):
                raise ValueError(f"{at}: expected an object with 'name', 'description' and 'images'")
            images = record_field(category, "images", at, list)
            if not images or not all(isinstance(p, str) for p in images):
                raise ValueError(f"{at}: 'images' must be a non-empty list of file names")
            checked.append({"name": record_field(category, "name", at), "description": record_field(category, "description", at),
                            "images": [str(base / p) for p in images]})
        out.append({"id": str(record.get("id", where)), "general_category": general, "categories": checked})
    return out


def examples(inputs: Inputs) -> list[dict]:
    """One query per image: ``{"id", "image", "label", "group"}`` (id: group id / category index / image index)."""
    return [{"id": f"{g['id']}/{c}/{i}", "image": image, "label": category["name"], "group": g}
            for g in groups(inputs) for c, category in enumerate(g["categories"])
            for i, image in enumerate(category["images"])]


def prompt(group: dict) -> str:
    return DECODING.prompt.format(general_category=group["general_category"])


def context(group: dict, descriptions: bool) -> str:
    """What precedes the image: the categories' descriptions (or only their names), one per line."""
    return "\n".join(c["description"] if descriptions else c["name"] for c in group["categories"])


def queries_for(descriptions: bool):
    def queries(inputs: Inputs) -> list[Query]:
        task = "classify-descriptions" if descriptions else "classify-names"
        return [Query(row["id"], row["image"], prompt(row["group"]), task,
                      (("text", context(row["group"], descriptions)),)) for row in examples(inputs)]
    return queries


def score(predictions: str, inputs: Inputs) -> dict:
    """Accuracy (percent): the generated name (first line, cut at a following "Question:") equals the category's
    name after lower-casing and dropping end punctuation; a missing prediction is wrong."""
    from kosmos.evaluate.formats.common import read_records, record_field

    found = {str(record_field(r, "id", w, (str, int))): r for w, r in read_records(predictions, "predictions")}
    rows = examples(inputs)
    hits = sum(normalise_name(clean_answer(found[row["id"]].get("generated", ""), STOPS)) == normalise_name(row["label"])
               for row in rows if row["id"] in found)
    return {"accuracy_pct": round(100 * hits / len(rows), 2) if rows else 0.0, "total": len(rows),
            "missing": sum(row["id"] not in found for row in rows)}


def find(root):
    """Suite layout: ``DIR/cub/groups.jsonl`` (any ``*.jsonl`` there) with its images."""
    path = first_existing(root / "cub", "groups.jsonl", "*.jsonl")
    return Inputs(annotations=str(path)) if path else None


_BENCHMARK = "CUB-style groups of two similar categories (JSON lines of our own, see kosmos/tasks/classify_descriptions.py)"
TASKS = [
    Task(name="classify-descriptions", benchmark=_BENCHMARK, mode="generate",
         prompt="{description 1}\\n{description 2} [image] " + DECODING.prompt, needs=("annotations",),
         metric="accuracy_pct", queries=queries_for(True), score=score, decoding=DECODING, find=find,
         notes="greedy, 12 tokens; exact match of the name after lower-casing and dropping end punctuation"),
    Task(name="classify-names", benchmark=_BENCHMARK, mode="generate",
         prompt="{name 1}\\n{name 2} [image] " + DECODING.prompt, needs=("annotations",),
         metric="accuracy_pct", queries=queries_for(False), score=score, decoding=DECODING, find=find,
         notes="baseline of classify-descriptions: the two names in context, no descriptions"),
]
