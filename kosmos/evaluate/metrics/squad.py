"""Exact match and token F1 of extracted answers, by the SQuAD v1.1 evaluation script (which WebSRC's follows)."""
from __future__ import annotations

import re
from typing import Sequence


def squad_normalise(text: str) -> str:
    """SQuAD v1.1 ``normalize_answer``: lower case, punctuation and articles removed, whitespace collapsed."""
    import string

    text = "".join(ch for ch in text.lower() if ch not in set(string.punctuation))
    text = re.sub(r"\b(a|an|the)\b", " ", text)
    return " ".join(text.split())


def squad_em_f1(prediction: str, answers: Sequence[str]) -> tuple[float, float]:
    """Exact match and token F1 of a prediction, the maximum over the reference answers (SQuAD v1.1 script,
    which WebSRC's evaluation follows)."""
    from collections import Counter

    def f1(pred: str, truth: str) -> float:
        p, t = squad_normalise(pred).split(), squad_normalise(truth).split()
        common = sum((Counter(p) & Counter(t)).values())
        if common == 0:
            return 0.0
        precision, recall = common / len(p), common / len(t)
        return 2 * precision * recall / (precision + recall)

    em = max(float(squad_normalise(prediction) == squad_normalise(a)) for a in answers)
    return em, max(f1(prediction, a) for a in answers)
