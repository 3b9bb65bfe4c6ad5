"""Totals of a GRIT build in the paper's Table 1 terms, and why samples were dropped."""
from __future__ import annotations

import json
import re
from collections import Counter
from typing import Any

from grit_pipeline import status as S

from .shards import DONE_SUFFIX
from .storage import Folder

# GRIT_SPEC section 3 / Kosmos-2 Table 1.
PAPER_TABLE1 = {"images": 90_614_680, "boxes": 137_349_210, "spans": 114_978_233, "avg_expression_words": 4.7}


def finished_shards(output: str) -> list[str]:
    names = Folder(output).names()
    return sorted(n[: -len(DONE_SUFFIX)] for n in names if n.endswith(DONE_SUFFIX))


def collect_totals(output: str) -> dict[str, Any]:
    """Sum the per-shard stats of every finished shard."""
    folder = Folder(output)
    totals: dict[str, Any] = {"shards": 0, "samples": 0, "images": 0, "boxes": 0, "spans": 0, "span_words": 0,
                              "counts": {name: 0 for name in S.ALL}, "timings_s": {}}
    histogram = None
    for shard in finished_shards(output):
        try:
            stats = json.loads(folder.read_bytes(f"{shard}_stats.json"))
        except FileNotFoundError:
            continue
        totals["shards"] += 1
        for name in ("samples", "images", "boxes", "spans", "span_words"):
            totals[name] += stats.get(name, 0)
        for name, n in stats.get("counts", {}).items():
            totals["counts"][name] = totals["counts"].get(name, 0) + n
        for stage, seconds in stats.get("timings_s", {}).items():
            totals["timings_s"][stage] = round(totals["timings_s"].get(stage, 0.0) + seconds, 6)
        h = stats.get("score_histogram")
        if h:
            if histogram is None:
                histogram = {"edges": h["edges"], "counts": [0] * len(h["counts"])}
            histogram["counts"] = [a + b for a, b in zip(histogram["counts"], h["counts"])]
    totals["score_histogram"] = histogram
    totals["avg_expression_words"] = round(totals["span_words"] / totals["spans"], 3) if totals["spans"] else None
    return totals


def drop_reasons(output: str, top: int = 10) -> list[tuple[str, str, int]]:
    """The most frequent (status, reason) pairs among rejects, reasons cut to their first clause."""
    import pyarrow.parquet as pq

    folder = Folder(output)
    counter: Counter = Counter()
    for shard in finished_shards(output):
        name = f"{shard}_rejects.parquet"
        if not folder.exists(name):
            continue
        with folder.open(name) as f:
            table = pq.read_table(f, columns=["status", "reason"])
        for status, reason in zip(table.column("status").to_pylist(), table.column("reason").to_pylist()):
            counter[(status, _reason_kind(reason))] += 1
    return [(status, reason, n) for (status, reason), n in counter.most_common(top)]


def _reason_kind(reason: str | None) -> str:
    """Group reasons that differ only in numbers/details: the text before the first '(' or ':', digits as N."""
    if not reason:
        return ""
    for sep in (" (", ": "):
        reason = reason.split(sep, 1)[0]
    return re.sub(r"\d+", "N", reason)[:100]


def format_totals(totals: dict[str, Any], reasons: list[tuple[str, str, int]] | None = None) -> str:
    samples = totals["samples"] or 0
    lines = [
        f"GRIT build: {totals['shards']} shards, {samples:,} input samples",
        "",
        f"{'':28}{'this build':>16}{'paper (GRIT)':>16}",
    ]
    rows = [("images (grounded pairs)", totals["images"], PAPER_TABLE1["images"]),
            ("boxes", totals["boxes"], PAPER_TABLE1["boxes"]),
            ("text spans", totals["spans"], PAPER_TABLE1["spans"])]
    for label, ours, paper in rows:
        lines.append(f"{label:28}{ours:>16,}{paper:>16,}")
    avg = totals.get("avg_expression_words")
    lines.append(f"{'avg expression length (words)':28}{(f'{avg:.2f}' if avg is not None else '-'):>16}"
                 f"{PAPER_TABLE1['avg_expression_words']:>16}")
    if samples:
        lines.append(f"{'kept fraction':28}{totals['images'] / samples:>16.1%}")
    lines += ["", "samples per status:"]
    for name, n in sorted(totals["counts"].items(), key=lambda kv: -kv[1]):
        if n:
            share = f"{n / samples:.1%}" if samples else ""
            lines.append(f"  {name:18}{n:>12,}  {share}")
    if reasons:
        lines += ["", "top drop reasons:"]
        for status, reason, n in reasons:
            lines.append(f"  {n:>10,}  {status:16} {reason}")
    if totals.get("timings_s"):
        lines += ["", "time per stage (seconds, summed over samples): " +
                  ", ".join(f"{k} {v:.1f}" for k, v in totals["timings_s"].items())]
    return "\n".join(lines)
