"""What an output folder holds, from one listing, and its small files read once, concurrently.

At GRIT's size an output holds ~10,000 shards (50,000 files) on an object store, where a request costs
20-50 ms: planning a resume, the refusal checks and ``grit stats`` must not make requests one shard at a
time. ``OutputIndex`` lists the folder and its layout sub-folders once (names and sizes: which shards have a
``_done/`` marker, and
whether each file still has the size the marker recorded) and reads the markers once, with
``MAX_CONCURRENT_REQUESTS`` requests in flight; ``read_concurrently`` does the same for any per-shard file
(stats, keys, rejects). A step that takes more than a few seconds reports its progress on stderr.
"""
from __future__ import annotations

import json
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Callable, Iterable, TypeVar

from . import layout
from .storage import Folder

T = TypeVar("T")
R = TypeVar("R")

MAX_CONCURRENT_REQUESTS = 64   # requests in flight per listing-wide read (object stores take thousands)
PROGRESS_AFTER_S = 3.0         # a read of many files reports its progress once it has taken this long
PROGRESS_EVERY_S = 5.0


def read_concurrently(function: Callable[[T], R], items: Iterable[T], what: str = "",
                      workers: int = MAX_CONCURRENT_REQUESTS, progress: bool = True) -> list[R]:
    """``[function(item) for item in items]`` with up to ``workers`` calls in flight, in order; a line on
    stderr every few seconds once it takes longer than PROGRESS_AFTER_S (``what`` names the files)."""
    items = list(items)
    if len(items) <= 1:
        return [function(item) for item in items]
    done = 0
    lock = threading.Lock()
    started = time.monotonic()
    last = [started + PROGRESS_AFTER_S - PROGRESS_EVERY_S]

    def counted(item: T) -> R:
        nonlocal done
        result = function(item)
        with lock:
            done += 1
            now = time.monotonic()
            if progress and what and now - last[0] >= PROGRESS_EVERY_S:
                last[0] = now
                print(f"[grit] reading {what}: {done:,}/{len(items):,} ({now - started:.0f} s)", file=sys.stderr,
                      flush=True)
        return result

    with ThreadPoolExecutor(max_workers=min(workers, len(items))) as pool:
        return list(pool.map(counted, items))


class OutputIndex:
    """One listing of an output (or stage) folder, and its ``_done/`` markers read once on demand.

    ``sizes`` names files relative to the folder (``00000.parquet``, ``_done/00000.done``, ``_stats/00000.json``).
    A folder of grit's previous layout (markers beside the pairs) is converted first when ``convert``."""

    def __init__(self, url: str, progress: bool = True, convert: bool = False):
        self.folder = Folder(url)
        self.url = self.folder.url
        self.progress = progress
        self.sizes = layout.list_sizes(self.folder)   # name -> bytes; {} when the folder does not exist
        self.previous_layout = layout.previous_layout_shards(self.sizes)
        if self.previous_layout and convert:
            layout.convert_previous_layout(self.url)
            self.sizes = layout.list_sizes(self.folder)
            self.previous_layout = []
        self._markers: dict[str, dict[str, Any] | None] | None = None
        # What readers computed from the folder's files, kept so that each file is read once per index
        # (``stats``: every shard's keys and rejects, for the duplicate check and the drop reasons).
        self.derived: dict[str, Any] = {}

    def names(self) -> list[str]:
        return sorted(self.sizes)

    def done_shards(self) -> list[str]:
        """Shards with a ``_done/`` marker, sorted."""
        return sorted(s for s in map(layout.done_shard, self.sizes) if s is not None)

    def markers(self) -> dict[str, dict[str, Any] | None]:
        """shard -> its parsed ``.done`` marker (None when unreadable), every marker read once."""
        if self._markers is None:
            shards = self.done_shards()
            self._markers = dict(zip(shards, read_concurrently(self._read_marker, shards, "shard markers",
                                                               progress=self.progress)))
        return self._markers

    def read_json(self, name: str) -> Any:
        """A JSON file of the folder (raises FileNotFoundError / ValueError)."""
        return json.loads(self.folder.read_bytes(name))

    def _read_marker(self, shard: str) -> dict[str, Any] | None:
        try:
            marker = self.read_json(layout.done_name(shard))
        except (OSError, ValueError, RecursionError):  # (a crafted marker nested past Python's limit)
            return None
        return marker if isinstance(marker, dict) else None
