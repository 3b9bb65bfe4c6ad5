"""Rendered SST-2 (OpenAI's ``rendered-sst2``: ``test/positive/*.png``, ``test/negative/*.png``), OCR-free sentiment:
the text is only in the image (Kosmos-1 section 4.4). The two answers are ranked by log-likelihood; accuracy."""
from __future__ import annotations

from kosmos.evaluate.rank import Option, RankItem
from kosmos.tasks.base import Inputs, Task, first_existing

PROMPT = "Question: what is the sentiment of the opinion? Answer:"
ANSWERS = ("negative", "positive")


def examples(inputs: Inputs) -> list[dict]:
    from kosmos.evaluate.formats.image_folders import read_labelled_images

    rows = read_labelled_images(inputs.annotations, inputs.images)
    for row in rows:
        if row["label"] not in ANSWERS:
            raise ValueError(f"annotations {inputs.annotations}: {row['id']}: label must be one of {ANSWERS}")
    return rows


def items_for(rows: list[dict], context=lambda row: ()) -> list[RankItem]:
    return [RankItem(row["id"], [Option((("image", row["image"]),) + context(row) + (("text", PROMPT),), " " + a)
                                 for a in ANSWERS]) for row in rows]


def queries(inputs: Inputs) -> list[RankItem]:
    return items_for(examples(inputs))


def accuracy(predictions: str, rows: list[dict], answers=ANSWERS) -> dict:
    """``accuracy_pct``: the answer with the higher log-likelihood is the label; a missing prediction is wrong."""
    from kosmos.evaluate.formats.predictions import read_loglikelihoods
    from kosmos.evaluate.metrics.classification import best_choice, ranked_accuracy

    return ranked_accuracy(rows, read_loglikelihoods(predictions),
                           lambda row, lls: answers[best_choice(lls[:len(answers)])] == row["label"])


def score(predictions: str, inputs: Inputs) -> dict:
    return accuracy(predictions, examples(inputs))


def find(root):
    """Suite layout: ``DIR/rendered-sst2/test/{positive,negative}/``."""
    folder = first_existing(root, "rendered-sst2/test", "sst2/test")
    return Inputs(annotations=str(folder)) if folder else None


TASK = Task(name="sst2", benchmark="Rendered SST-2 (image folder: test/positive, test/negative)", mode="rank",
            prompt="[image] " + PROMPT + " {positive|negative}", needs=("annotations",), metric="accuracy_pct",
            queries=queries, score=score, find=find)
