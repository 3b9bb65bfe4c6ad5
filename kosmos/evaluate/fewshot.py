"""Demonstrations for few-shot prompts and the statistics over trials.

Demonstrations are drawn at random from the task's training split (Kosmos-1 section 4), as OpenFlamingo's
evaluation does: ``--trials N`` repeats the draw N times (trials 0..N-1), the metric reported as mean and standard
deviation over trials. Each query draws its own ``k`` demonstrations with ``random.Random(f"{seed}/{trial}/{query
id}")`` (one generator per seed, trial and query; not ``seed + trial``), so a query's demonstrations do not depend on
which other queries are evaluated (``--limit``), are the same for the same seed, and never include the query itself (same id).
"""
from __future__ import annotations

import math
import random
from typing import Any, Sequence


def demonstrations(pool: Sequence[tuple[Any, Any]], k: int, seed: int, trial: int, query_id: Any) -> list:
    """``k`` values of ``pool`` (``(id, value)`` pairs) for the query ``query_id``, in the order drawn."""
    if k <= 0:
        return []
    candidates = [value for key, value in pool if str(key) != str(query_id)]
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
