"""Metrics of ranked and classified items (Kosmos-1's in-context tasks): lm-evaluation-harness's ``acc`` and
``acc_norm``, accuracy of ranked predictions, ROC AUC. Rates are percent, keyed ``*_pct``."""
from __future__ import annotations

from typing import Sequence


def best_choice(values: Sequence[float]) -> int:
    """The index of the highest value; ties go to the first."""
    return max(range(len(values)), key=lambda i: (values[i], -i))


def ranked_accuracy(rows: Sequence[dict], loglikelihoods: dict[str, list], is_right) -> dict:
    """Accuracy (percent) of ranked predictions (``{id: log-likelihoods}``): ``is_right(row, lls)`` judges one item;
    an item without a prediction counts as wrong and as ``missing``."""
    hits = missing = 0
    for row in rows:
        lls = loglikelihoods.get(str(row["id"]))
        if lls is None:
            missing += 1
            continue
        hits += bool(is_right(row, lls))
    return {"accuracy_pct": round(100 * hits / len(rows), 2) if rows else 0.0, "total": len(rows), "missing": missing}


def multiple_choice(loglikelihoods: Sequence[float], choice_lengths: Sequence[int], gold: int) -> dict[str, float]:
    """lm-evaluation-harness's ``acc`` (the choice with the highest summed log-likelihood is right) and ``acc_norm``
    (the same after dividing each log-likelihood by its choice's length in characters) of ONE item, 1.0 right or 0.0
    wrong (``multiple_choice.score_docs`` reports their means as ``acc_pct``, ``acc_norm_pct``); ties go to the first."""
    normalised = [ll / max(n, 1) for ll, n in zip(loglikelihoods, choice_lengths)]
    return {"acc": float(best_choice(list(loglikelihoods)) == gold), "acc_norm": float(best_choice(normalised) == gold)}


def roc_auc(scores: Sequence[float], labels: Sequence[int]) -> float:
    """Area under the ROC curve: the probability that a positive scores above a negative, ties counting half
    (the Mann-Whitney statistic, equal to sklearn's ``roc_auc_score``)."""
    positives = [s for s, y in zip(scores, labels) if y]
    negatives = [s for s, y in zip(scores, labels) if not y]
    if not positives or not negatives:
        raise ValueError("ROC AUC needs at least one positive and one negative item")
    ordered = sorted((s, i) for i, s in enumerate(scores))
    ranks = [0.0] * len(scores)
    start = 0
    while start < len(ordered):  # average ranks over ties
        end = start
        while end + 1 < len(ordered) and ordered[end + 1][0] == ordered[start][0]:
            end += 1
        for position in range(start, end + 1):
            ranks[ordered[position][1]] = (start + end) / 2 + 1
        start = end + 1
    positive_rank_sum = sum(r for r, y in zip(ranks, labels) if y)
    n_pos, n_neg = len(positives), len(negatives)
    return (positive_rank_sum - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg)
