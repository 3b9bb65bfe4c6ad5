"""Where each file of a build lives: the one place that names them.

    BUILD/NNNNN.parquet              the grounded pairs (GrIT-20M columns): the only data outside ``_`` folders
    BUILD/_webdataset/NNNNN.tar      the same pairs with their images (img2dataset's KEY.jpg/.json/.txt)
    BUILD/_rejects/NNNNN.parquet     every sample that did not become a pair, with status and reason
    BUILD/_stats/NNNNN.json          the shard's counts, histograms and timings
    BUILD/_done/NNNNN.done           written last: the shard is committed
    BUILD/_run.json, _stats.json     the run's parameters and totals
    BUILD/.huggingface.yaml          the dataset's configs and features (``datasets.load_dataset(BUILD)``)
    BUILD/_README.md                 the dataset card (``grit card``)

pandas, pyarrow and HF ``datasets`` skip names that start with ``_`` or ``.``, so ``pd.read_parquet(BUILD)`` and
``pyarrow.dataset.dataset(BUILD)`` read exactly the pairs. A stage folder (``WORK/<stage>``) has
``NNNNN.parquet`` and ``_done/NNNNN.done``.

Builds of grit's previous layout kept every file beside the pairs (``NNNNN.tar``, ``NNNNN_rejects.parquet``,
``NNNNN_stats.json``, ``NNNNN.done``); ``convert_previous_layout`` moves them, shard by shard, crash-safe.
"""
from __future__ import annotations

import json
import posixpath
import sys
from typing import Any

from .storage import Folder

DONE_DIR = "_done"
TARS_DIR = "_webdataset"
REJECTS_DIR = "_rejects"
STATS_DIR = "_stats"
SUBFOLDERS = (DONE_DIR, TARS_DIR, REJECTS_DIR, STATS_DIR)
DONE_SUFFIX = ".done"


def pairs_name(shard: str) -> str:
    return f"{shard}.parquet"


def tar_name(shard: str) -> str:
    return f"{TARS_DIR}/{shard}.tar"


def rejects_name(shard: str) -> str:
    return f"{REJECTS_DIR}/{shard}.parquet"


def stats_name(shard: str) -> str:
    return f"{STATS_DIR}/{shard}.json"


def done_name(shard: str) -> str:
    return f"{DONE_DIR}/{shard}{DONE_SUFFIX}"


def done_shard(name: str) -> str | None:
    """The shard a marker's name (relative to the folder) belongs to; None for any other name."""
    folder, _, base = name.rpartition("/")
    if folder == DONE_DIR and base.endswith(DONE_SUFFIX) and len(base) > len(DONE_SUFFIX):
        return base[: -len(DONE_SUFFIX)]
    return None


def list_sizes(folder: Folder) -> dict[str, int]:
    """Name (relative, ``_done/00000.done``) -> bytes of every file of a build or stage folder: one listing of
    the folder and one of each layout sub-folder, concurrently; {} when the folder does not exist."""
    from .index import read_concurrently

    listings = read_concurrently(lambda sub: (sub, Folder(folder.uri(sub)).sizes() if sub else folder.sizes()),
                                 ["", *SUBFOLDERS], progress=False)
    return {(f"{sub}/{name}" if sub else name): size for sub, sizes in listings for name, size in sizes.items()}


# ---- the previous layout ---------------------------------------------------------------------------------

def previous_layout_shards(top_level_names) -> list[str]:
    """Shards committed in the previous layout: a ``NNNNN.done`` beside the pairs."""
    return sorted(n[: -len(DONE_SUFFIX)] for n in top_level_names
                  if "/" not in n and n.endswith(DONE_SUFFIX) and len(n) > len(DONE_SUFFIX))


def previous_name(name: str) -> str:
    """Where a file of the current layout was in the previous one (the pairs did not move)."""
    folder, _, base = name.rpartition("/")
    stem, dot, ext = base.partition(".")
    if folder == TARS_DIR:
        return base
    if folder == REJECTS_DIR:
        return f"{stem}_rejects.parquet"
    if folder == STATS_DIR:
        return f"{stem}_stats.json"
    if folder == DONE_DIR:
        return base
    return name


def current_name(previous: str) -> str:
    """Where a file of the previous layout goes (the inverse of ``previous_name``)."""
    if "/" in previous:
        return previous
    if previous.endswith("_rejects.parquet"):
        return rejects_name(previous[: -len("_rejects.parquet")])
    if previous.endswith("_stats.json"):
        return stats_name(previous[: -len("_stats.json")])
    if previous.endswith(".tar"):
        return tar_name(previous[: -len(".tar")])
    if previous.endswith(DONE_SUFFIX):
        return done_name(previous[: -len(DONE_SUFFIX)])
    return previous


def convert_previous_layout(url: str, progress=None, announce: bool = True) -> int:
    """Move a build (or stage folder) of the previous layout into the current one; returns the shards converted.

    First every shard file moves to its new place (a rename), then each marker is written to ``_done/`` with
    the new names and the old one removed. A crash at any point leaves old markers that the next conversion
    finishes from, and never a current marker naming a file that is not there. ``announce``: a line on stderr
    when there is something to convert."""
    folder = Folder(url)
    top = folder.sizes()
    shards = previous_layout_shards(top)
    if not shards:
        return 0
    if announce:
        print(f"[grit] {folder.url}: converting {len(shards):,} shard(s) of grit's previous layout (markers, "
              f"rejects, stats and tars into {DONE_DIR}/, {REJECTS_DIR}/, {STATS_DIR}/, {TARS_DIR}/)",
              file=sys.stderr, flush=True)
    for name in sorted(top):
        if name.endswith(("_rejects.parquet", "_stats.json", ".tar")) and not name.startswith("_"):
            _move(folder, name, current_name(name))
    for number, shard in enumerate(shards, 1):
        old_marker_name = f"{shard}{DONE_SUFFIX}"
        try:
            marker: Any = json.loads(folder.read_bytes(old_marker_name))
        except (OSError, ValueError, RecursionError):
            marker = None   # unreadable: the shard is rebuilt by the next run either way
        if isinstance(marker, dict):
            if isinstance(marker.get("files"), dict):
                marker["files"] = {current_name(name): size for name, size in marker["files"].items()}
            folder.write_bytes(done_name(shard), json.dumps(marker, sort_keys=True).encode("utf-8"))
        folder.remove(old_marker_name)
        if progress is not None and number % 1000 == 0:
            progress(f"converted {number:,}/{len(shards):,} shard markers")
    return len(shards)


def _move(folder: Folder, old: str, new: str) -> None:
    folder.makedirs(posixpath.dirname(new))
    folder.move(old, new)
