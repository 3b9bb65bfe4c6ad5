"""Totals of a GRIT build in the paper's Table 1 terms, and why samples were dropped."""
from __future__ import annotations

import json
import re
from collections import Counter
from typing import Any

from grit_pipeline import status as S

from . import layout
from .index import OutputIndex, read_concurrently

# Kosmos-2 paper, Table 1.
PAPER_TABLE1 = {"images": 90_614_680, "boxes": 137_349_210, "spans": 114_978_233, "avg_expression_words": 4.7}


def collect_totals(output: str, index: OutputIndex | None = None) -> dict[str, Any]:
    """Sum the per-shard stats of every finished shard (one listing; the stats files read concurrently)."""
    index = index if index is not None else OutputIndex(output)
    totals: dict[str, Any] = {"shards": 0, "samples": 0, "images": 0, "boxes": 0, "spans": 0, "span_words": 0,
                              "counts": {name: 0 for name in S.ALL}, "timings_s": {}, "faults": {}}
    histogram = None
    totals["unreadable_stats"] = []
    shards = index.done_shards()

    def read(shard: str):
        try:
            stats = index.read_json(layout.stats_name(shard))
            if not isinstance(stats, dict):
                raise ValueError("not a JSON object")
            check_shard_stats(stats)
            return stats
        except FileNotFoundError:
            return None
        except (ValueError, TypeError, RecursionError) as error:  # a damaged file: say so, count the rest
            return error

    for shard, stats in zip(shards, read_concurrently(read, shards, "shard stats", progress=index.progress)):
        if stats is None:
            continue
        if isinstance(stats, Exception):
            totals["unreadable_stats"].append(f"{layout.stats_name(shard)} ({str(stats)[:100]})")
            continue
        totals["shards"] += 1
        for name in ("samples", "images", "boxes", "spans", "span_words"):
            totals[name] += stats.get(name, 0)
        for name, n in stats.get("counts", {}).items():
            totals["counts"][name] = totals["counts"].get(name, 0) + n
        for stage, seconds in stats.get("timings_s", {}).items():
            totals["timings_s"][stage] = round(totals["timings_s"].get(stage, 0.0) + seconds, 6)
        for name, n in stats.get("faults", {}).items():
            totals["faults"][name] = totals["faults"].get(name, 0) + n
        h = stats.get("score_histogram")
        if h:
            if histogram is None:
                histogram = {"edges": h["edges"], "counts": [0] * len(h["counts"])}
            histogram["counts"] = [a + b for a, b in zip(histogram["counts"], h["counts"])]
    totals["score_histogram"] = histogram
    totals["avg_expression_words"] = round(totals["span_words"] / totals["spans"], 3) if totals["spans"] else None
    return totals


def check_shard_stats(stats: dict[str, Any]) -> None:
    """Raise ValueError unless a shard stats file has the types the totals add up."""
    for name in ("samples", "images", "boxes", "spans", "span_words"):
        if not isinstance(stats.get(name, 0), int) or isinstance(stats.get(name, 0), bool):
            raise ValueError(f"{name} is not an integer")
    for name in ("counts", "timings_s", "faults"):
        values = stats.get(name, {})
        if not isinstance(values, dict) or not all(isinstance(v, (int, float)) and not isinstance(v, bool)
                                                   for v in values.values()):
            raise ValueError(f"{name} is not an object of numbers")
    h = stats.get("score_histogram")
    if h is not None and not (isinstance(h, dict) and isinstance(h.get("edges"), list)
                              and isinstance(h.get("counts"), list)
                              and all(isinstance(c, int) for c in h["counts"])):
        raise ValueError("score_histogram is malformed")


def mixed_params(output: str, index: OutputIndex | None = None) -> dict[str, list[str]]:
    """Parameters whose value differs between finished shards (an interrupted rebuild with new settings):
    {name: ["value (N shards)", ...]}; {} when every shard was built the same way."""
    index = index if index is not None else OutputIndex(output)
    seen: dict[str, Counter] = {}
    for marker in index.markers().values():
        params = marker.get("params") if isinstance(marker, dict) else None
        if not isinstance(params, dict):
            continue
        for name, value in params.items():
            seen.setdefault(name, Counter())[json.dumps(value, sort_keys=True)] += 1
    return {name: [f"{value} ({n} shard{'s' if n > 1 else ''})" for value, n in sorted(values.items())]
            for name, values in sorted(seen.items()) if len(values) > 1}


def _read_columns(index: OutputIndex, name: str, columns: list[str]):
    """Some columns of a parquet file of the build; None when it is missing or damaged."""
    import pyarrow.parquet as pq

    if name not in index.sizes:
        return None
    try:
        with index.folder.open(name) as f:
            return pq.read_table(f, columns=columns)
    except Exception:  # noqa: BLE001 - a damaged file is reported by the other checks
        return None


def _keys_and_rejects(index: OutputIndex) -> list[tuple[str, Any, Any]]:
    """Per finished shard: (shard, its rows' keys, its rejects' key/status/reason table), each file read once,
    concurrently; cached on the index (``duplicate_keys`` and ``drop_reasons`` share it)."""
    cached = index.derived.get("keys_and_rejects")
    if cached is None:
        shards = index.done_shards()

        def read(shard: str):
            return (shard, _read_columns(index, layout.pairs_name(shard), ["key"]),
                    _read_columns(index, layout.rejects_name(shard), ["key", "status", "reason"]))

        cached = read_concurrently(read, shards, "rows and rejects", progress=index.progress)
        index.derived["keys_and_rejects"] = cached
    return cached


def duplicate_keys(output: str, examples: int = 5, index: OutputIndex | None = None) -> tuple[int, dict[str, list[str]]]:
    """Keys found in more than one finished shard (build or rejects): (how many, {key: [shards]} for a few).

    A shard never holds a key twice (ingest rejects every copy as ``duplicate_key``); across shards each
    copy is processed in its own shard and kept, and this check reports them.
    """
    import pyarrow as pa
    import pyarrow.compute as pc

    index = index if index is not None else OutputIndex(output)
    owners = []
    for shard, rows, rejects in _keys_and_rejects(index):
        for table in (rows, rejects):
            if table is not None:
                owners.append((shard, table.column("key")))
    chunks = [c for _, keys in owners for c in keys.chunks]
    if not chunks:
        return 0, {}
    counts = pc.value_counts(pa.chunked_array(chunks, pa.string()))
    repeated = counts.filter(pc.greater(counts.field("counts"), 1)).field("values")
    if len(repeated) == 0:
        return 0, {}
    wanted = set(repeated.slice(0, examples).to_pylist())
    where: dict[str, list[str]] = {key: [] for key in wanted}
    for shard, keys in owners:
        for key in pc.filter(keys, pc.is_in(keys, pa.array(sorted(wanted), pa.string()))).to_pylist():
            where[key].append(shard)
    return len(repeated), where


def build_warnings(output: str, totals: dict[str, Any] | None = None, index: OutputIndex | None = None) -> list[str]:
    """What makes a build's totals doubtful, one line each (``grit stats`` and ``grit report`` print them)."""
    index = index if index is not None else OutputIndex(output)
    lines = []
    for name, values in mixed_params(output, index).items():
        lines.append(f"shards were built with different {name}: {', '.join(values)}; the totals mix them "
                     f"(rerun with the same settings to rebuild the stale shards)")
    count, where = duplicate_keys(output, index=index)
    if count:
        shown = "; ".join(f"{key!r} in {', '.join(shards)}" for key, shards in sorted(where.items()))
        lines.append(f"{count} key(s) appear in more than one shard (each copy is kept; GrIT-20M keys are "
                     f"unique): {shown}")
    for problem in (totals or {}).get("unreadable_stats", []):
        lines.append(f"unreadable shard stats file {problem}: that shard is left out of the totals")
    return lines


def drop_reasons(output: str, top: int = 10, index: OutputIndex | None = None) -> list[tuple[str, str, int]]:
    """The most frequent (status, reason) pairs among rejects, reasons cut to their first clause."""
    index = index if index is not None else OutputIndex(output)
    counter: Counter = Counter()
    for _, _, table in _keys_and_rejects(index):
        if table is None:  # a damaged rejects file: its reasons are missing, the rest count
            continue
        for status, reason in zip(table.column("status").to_pylist(), table.column("reason").to_pylist()):
            counter[(status, _reason_kind(reason))] += 1
    return [(status, reason, n) for (status, reason), n in counter.most_common(top)]


def _reason_kind(reason: str | None) -> str:
    """Group reasons that differ only in numbers/details: the text before the first '(' or ':', numbers as N
    (numbers standing alone: "status 404" -> "status N"; digits inside a word stay: "img2dataset")."""
    if not reason:
        return ""
    for sep in (" (", ": "):
        reason = reason.split(sep, 1)[0]
    return _NUMBER.sub("N", reason)[:100]


# digits with no letter or digit on either side: "404", "0.65" -> "N", "N.N"; "img2dataset", "v3" unchanged
_NUMBER = re.compile(r"(?<![A-Za-z\d])\d+(?![A-Za-z\d])")


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
    if totals.get("warnings"):
        lines += ["", "warnings:"] + [f"  {line}" for line in totals["warnings"]]
    if totals.get("timings_s"):
        lines += ["", "time per stage (seconds, summed over samples): " +
                  ", ".join(f"{k} {v:.1f}" for k, v in totals["timings_s"].items())]
    return "\n".join(lines)
