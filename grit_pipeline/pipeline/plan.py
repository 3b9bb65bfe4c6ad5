"""Which shards a run does: those without an intact ``.done`` marker recording this run's parameters.

A shard is done when its marker exists, records the parameters the run would build it with, and every file
of the shard still has the size the marker recorded. At 10,000 shards on an object store this is one
listing (names and sizes) plus the markers read concurrently (``index.OutputIndex``), never a request per
file per shard.
"""
from __future__ import annotations

import time
from typing import Any

from .index import OutputIndex
from .shards import committed_intact


def plan_shards(sink, shards: list[str], expected: dict[str, dict[str, Any]], overwrite: bool = False,
                progress=None, index: OutputIndex | None = None) -> tuple[list[str], list[str]]:
    """``(done, todo)``: the shards whose committed output is intact and made with ``expected[shard]``, and the
    rest, each in the order of ``shards``. ``overwrite``: every shard is to do (no request is made)."""
    if overwrite:
        return [], list(shards)
    started = time.monotonic()
    index = index if index is not None else OutputIndex(sink.folder.url)
    markers = index.markers()
    done, todo = [], []
    for shard in shards:
        finished = committed_intact(markers.get(shard), expected[shard], sink.files(shard), index.sizes)
        (done if finished else todo).append(shard)
    if progress is not None and time.monotonic() - started > 1.0:
        progress.message(f"planned {len(shards):,} shards from one listing and {len(markers):,} markers in "
                         f"{time.monotonic() - started:.1f} s")
    return done, todo
