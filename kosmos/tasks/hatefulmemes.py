"""HatefulMemes (``dev.jsonl``: id, img, label, text; images relative to the file), OCR-free: the model reads the
meme's text from the image (Kosmos-1 section 4.4). P(yes) against P(no) after the paper's question; ROC AUC."""
from __future__ import annotations

import math
from pathlib import Path

from kosmos.evaluate.rank import Option, RankItem
from kosmos.tasks.base import Inputs, Task, first_existing

PROMPT = "Question: does this picture contain real hate speech? Answer:"


def examples(inputs: Inputs) -> list[dict]:
    from kosmos.evaluate.formats.common import read_records, record_field

    base = Path(inputs.images) if inputs.images else Path(inputs.annotations).parent
    rows = []
    for where, record in read_records(inputs.annotations, "annotations"):
        label = record_field(record, "label", where, int)
        if label not in (0, 1):
            raise ValueError(f"{where}: label must be 0 or 1, got {label}")
        rows.append({"id": record_field(record, "id", where, (int, str)), "image": str(base / record_field(record, "img", where)),
                     "label": label})
    return rows


def queries(inputs: Inputs) -> list[RankItem]:
    return [RankItem(row["id"], [Option((("image", row["image"]), ("text", PROMPT)), a) for a in (" yes", " no")])
            for row in examples(inputs)]


def p_yes(loglikelihoods) -> float:
    """P(yes) among the two answers: exp(ll_yes) / (exp(ll_yes) + exp(ll_no))."""
    yes, no = loglikelihoods
    return 1.0 / (1.0 + math.exp(no - yes))


def score(predictions: str, inputs: Inputs) -> dict:
    from kosmos.evaluate.formats.common import read_records, record_field
    from kosmos.evaluate.metrics.classification import roc_auc

    rows = examples(inputs)
    scores = {str(record_field(r, "id", w, (str, int))): p_yes(record_field(r, "loglikelihoods", w, list))
              for w, r in read_records(predictions, "predictions")}
    missing = [row for row in rows if str(row["id"]) not in scores]
    if missing:
        raise ValueError(f"predictions {predictions}: no prediction for {len(missing)} items, e.g. {missing[0]['id']!r}")
    probabilities = [scores[str(row["id"])] for row in rows]
    labels = [row["label"] for row in rows]
    hits = sum((p > 0.5) == bool(y) for p, y in zip(probabilities, labels))
    return {"roc_auc_pct": round(100 * roc_auc(probabilities, labels), 2), "accuracy_pct": round(100 * hits / len(rows), 2),
            "total": len(rows)}


def find(root):
    """Suite layout: ``DIR/hatefulmemes/dev.jsonl`` (``dev_seen.jsonl``) with its ``img/`` folder."""
    path = first_existing(root / "hatefulmemes", "dev.jsonl", "dev_seen.jsonl")
    return Inputs(annotations=str(path)) if path else None


TASK = Task(name="hatefulmemes", benchmark="HatefulMemes (dev.jsonl + img/)", mode="rank",
            prompt="[image] " + PROMPT + " {yes|no}", needs=("annotations",), metric="roc_auc_pct", queries=queries,
            score=score, find=find, notes="score: P(yes) normalised over yes/no")
