"""Demonstrations for few-shot prompts and the statistics over trials.

Demonstrations are drawn at random from the task's training split (Kosmos-1 section 4), as OpenFlamingo's
evaluation does: ``--trials N`` repeats the draw N times (trials 0..N-1), the metric reported as mean and standard
deviation over trials. Each query draws its own ``k`` demonstrations with ``random.Random(f"{seed}/{trial}/{query
id}")`` (one generator per seed, trial and query; not ``seed + trial``), so a query's demonstrations do not depend on
which other queries are evaluated (``--limit``) and are the same for the same seed.

Only the query document itself is left out of its pool, as lm-evaluation-harness drops only the document being
evaluated: pool entries and queries are keyed by :func:`document_key` (the file, and split where one file holds
several, then the id), so a training document that shares an id with the query (SuperGLUE's train and validation
``idx`` ranges overlap) stays a candidate.
"""
from __future__ import annotations

import math
import os
import random
from typing import Any, Sequence


def document_key(source, *parts) -> tuple:
    """A document's identity: its file (resolved, so two spellings of one path agree; None when there is no file)
    and the parts that tell it apart there (split, id or position), compared as text."""
    return (os.path.realpath(str(source)) if source else None, *(str(part) for part in parts))


def demonstrations(pool: Sequence[tuple[Any, Any]], k: int, seed: int, trial: int, query_id: Any,
                   query_key: Any = None) -> list:
    """``k`` values of ``pool`` (``(key, value)`` pairs) for the query ``query_id``, in the order drawn; the entry
    whose key equals ``query_key`` (the query document itself, :func:`document_key`) is never drawn."""
    if k <= 0:
        return []
    candidates = [value for key, value in pool if query_key is None or key != query_key]
    if len(candidates) < k:
        raise ValueError(f"{k} demonstrations asked for, the training split has {len(candidates)} besides the query")
    rng = random.Random(f"{seed}/{trial}/{query_id}")  # str seeds are hashed deterministically (sha512)
    return rng.sample(candidates, k)


def mean_std(values: Sequence[float]) -> tuple[float, float]:
    """Mean and population standard deviation (numpy's default, as OpenFlamingo reports)."""
    values = [float(v) for v in values]
    if not values:
        return math.nan, math.nan
    mean = sum(values) / len(values)
    return mean, math.sqrt(sum((v - mean) ** 2 for v in values) / len(values))
