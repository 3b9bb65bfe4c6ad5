"""Raven IQ (Kosmos-1 section 4.3). The paper's 50 items (aka.ms/kosmos-iq50) were released without a documented
format, so items are JSON lines of our own::

    {"id": "q1", "context": ["q1/1.png", ..., "q1/8.png"], "candidates": ["q1/a.png", ..., "q1/f.png"], "answer": 2}

``context``: the matrix's images in reading order with the last one missing (3, 4 or 8 of them); ``candidates``:
the six answer images; ``answer``: the index of the right candidate; paths relative to the file (or --images).
Each candidate is scored by P("Yes") after "Here are {three|four|eight} images:" [images] "The following image
is:" [candidate] "Is it correct?"; the candidate with the highest P("Yes") is the answer (accuracy, chance 1/6)."""
from __future__ import annotations

from pathlib import Path

from kosmos.evaluate.rank import Option, RankItem
from kosmos.tasks.base import Inputs, Task, first_existing

NUMBERS = {3: "three", 4: "four", 8: "eight"}
ANSWER = " Yes"


def examples(inputs: Inputs) -> list[dict]:
    from kosmos.evaluate.formats.common import read_records, record_field

    base = Path(inputs.images) if inputs.images else Path(inputs.annotations).parent
    rows = []
    for where, record in read_records(inputs.annotations, "annotations"):
        context, candidates = record_field(record, "context", where, list), record_field(record, "candidates", where, list)
        answer = record_field(record, "answer", where, int)
        if len(context) not in NUMBERS:
            raise ValueError(f"{where}: 'context' must hold 3, 4 or 8 images, got {len(context)}")
        if len(candidates) < 2 or not 0 <= answer < len(candidates):
            raise ValueError(f"{where}: 'answer' must index one of the {len(candidates)} candidates")
        if not all(isinstance(p, str) for p in context + candidates):
            raise ValueError(f"{where}: images must be file names")
        rows.append({"id": record.get("id", where), "context": [str(base / p) for p in context],
                     "candidates": [str(base / p) for p in candidates], "answer": answer})
    return rows


def options(row: dict) -> list[Option]:
    shown = (("text", f"Here are {NUMBERS[len(row['context'])]} images:"),) + tuple(("image", p) for p in row["context"])
    return [Option(shown + (("text", "The following image is:"), ("image", c), ("text", "Is it correct?")), ANSWER)
            for c in row["candidates"]]


def queries(inputs: Inputs) -> list[RankItem]:
    return [RankItem(row["id"], options(row)) for row in examples(inputs)]


def score(predictions: str, inputs: Inputs) -> dict:
    from kosmos.evaluate.formats.predictions import read_loglikelihoods
    from kosmos.evaluate.metrics.classification import best_choice, ranked_accuracy

    return ranked_accuracy(examples(inputs), read_loglikelihoods(predictions),
                           lambda row, lls: best_choice(lls) == row["answer"])


def find(root):
    """Suite layout: ``DIR/raven/raven.jsonl`` (any ``*.jsonl`` there) with its images."""
    path = first_existing(root / "raven", "raven.jsonl", "*.jsonl")
    return Inputs(annotations=str(path)) if path else None


TASK = Task(name="raven", benchmark="Raven IQ (JSON lines of our own, see kosmos/tasks/raven.py)", mode="p_answer",
            prompt='Here are {three|four|eight} images: [images] The following image is: [candidate] Is it correct? Yes',
            needs=("annotations",), metric="accuracy_pct", queries=queries, score=score, find=find,
            notes="P(Yes) of each candidate; highest wins")
