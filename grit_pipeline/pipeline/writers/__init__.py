"""Per-shard writers of a GRIT build, interchangeable small modules.

Each writer module defines ``filename(shard) -> str`` and ``write(samples, file, context)``; the shard
committer (``pipeline.shards.BuildSink``) gives every writer the shard's finished samples sorted by key and
a binary file that is committed atomically. In the Ray engine's commit, ``samples`` is a list read without
image bytes (``image_bytes`` None), and a writer whose module sets ``NEEDS_IMAGE_BYTES = True`` gets an
iterator of the same samples with their bytes instead, merged from the shard's parts, so a worker never holds
a shard's images at once. Add a writer by adding a module and listing it in ``DEFAULT_WRITERS``.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from . import grit_parquet, rejects, stats, webdataset_tar

DEFAULT_WRITERS = (grit_parquet, webdataset_tar, rejects, stats)


@dataclass
class WriteContext:
    shard: str                 # shard name, e.g. "00000"
    input: str                 # where the shard came from (for lineage in the stats)
    box_threshold: float
    phrase_mode: str = "expression"
    extra: dict[str, Any] = field(default_factory=dict)
