"""Worker-side writing: part files in a staging area, a driver-side ledger, and the exactly-once shard commit.

The Ray engine's last operator writes each batch's finished samples, per shard, into a *part* of the sink's
staging area and hands the driver only a small description of it (``PartInfo``: shard, part name, keys,
statuses). The driver keeps a ``PartLedger``: it accepts a part only when none of its keys was accepted
before (a retried or re-executed attempt writes the same keys again under another name), and once a shard's
accepted keys number its input samples it asks a worker to ``commit_shard``: merge exactly the accepted parts
into the sink's final files (the same writers as the local engine, so the same bytes), ``NNNNN.done`` last,
then delete the shard's staging folder, parts of failed or killed attempts included.

Staging layout (under the sink's folder: the build, or WORK/<stage>/ in stage-by-stage mode)::

    _parts/NNNNN/<random hex>.parquet    finished samples of one batch of shard NNNNN (pipeline schema)

Everything here is plain Python over plain records; ``engine_ray`` only runs it on Ray workers.
"""
from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from typing import Any, Iterator

import pyarrow as pa
import pyarrow.parquet as pq

from .config import join_path
from .sample import SAMPLE_FIELDS, rows_to_table, table_to_rows
from .storage import Folder

PARTS_DIR = "_parts"
MERGE_ROWS = 16  # rows per row group of a part: what the commit's merge holds per part

# One row per part: what the driver receives instead of the samples.
PART_INFO_SCHEMA = pa.schema([
    pa.field("shard", pa.string()),
    pa.field("part", pa.string()),           # file name inside _parts/NNNNN/
    pa.field("shard_total", pa.int64()),     # samples in the input shard
    pa.field("keys", pa.list_(pa.string())),
    pa.field("statuses", pa.list_(pa.string())),  # parallel to keys (None: in flight, stage-by-stage mode)
    pa.field("startup_s", pa.map_(pa.string(), pa.float64())),  # stage start-ups reported by these samples
    pa.field("node", pa.string()),           # Ray node id of the writer ("" outside Ray)
])


def parts_folder(sink_url: str, shard: str | None = None) -> Folder:
    """The staging folder of a sink (``shard=None``) or of one of its shards."""
    return Folder(join_path(sink_url, PARTS_DIR, *([shard] if shard else [])))


def take_startups(samples: list[dict[str, Any]]) -> dict[str, float]:
    """Remove the stage start-up times that ride on samples (see ``stages.Stage``) and return their sums."""
    startup: dict[str, float] = {}
    for sample in samples:
        for stage, seconds in (sample.get("startup_s") or {}).items():
            startup[stage] = startup.get(stage, 0.0) + seconds
        sample["startup_s"] = None
    return startup


def write_parts(sink_url: str, samples: list[dict[str, Any]], node: str = "") -> list[dict[str, Any]]:
    """Write finished samples into one new part per shard they belong to; return a ``PartInfo`` row each.

    Part names are random, so a retried attempt never overwrites a part the driver may have accepted.
    """
    startup = take_startups(samples)
    by_shard: dict[str, list[dict[str, Any]]] = {}
    for sample in samples:  # (in stage-by-stage mode samples are still in flight: status None)
        by_shard.setdefault(sample["source_shard"], []).append(sample)
    infos = []
    for shard, rows in sorted(by_shard.items()):
        folder = parts_folder(sink_url, shard)
        folder.makedirs()
        name = f"{uuid.uuid4().hex}.parquet"
        rows = sorted(rows, key=lambda r: r["key"])  # the commit merges parts by key, a row group at a time
        with folder.atomic_open(name) as f:
            # Image bytes do not compress; the part lives only until its shard is committed.
            pq.write_table(rows_to_table(rows), f, compression="none", row_group_size=MERGE_ROWS)
        infos.append({"shard": shard, "part": name, "shard_total": rows[0]["shard_total"],
                      "keys": [r["key"] for r in rows], "statuses": [r["status"] for r in rows],
                      "startup_s": startup if not infos else {}, "node": node})
    return infos


def read_parts(sink_url: str, shard: str, names: list[str], columns: list[str] | None = None) -> list[dict[str, Any]]:
    """The samples of the named parts (only ``columns`` when given; the others read as None)."""
    folder = parts_folder(sink_url, shard)
    samples: list[dict[str, Any]] = []
    for name in names:
        with folder.open(name) as f:
            samples.extend(table_to_rows(pq.ParquetFile(f).read(columns=columns)))  # (no pyarrow.dataset import)
    return samples


def merged_parts(sink_url: str, shard: str, names: list[str]) -> Iterator[dict[str, Any]]:
    """The samples of the named parts in key order, image bytes included, holding one row group of
    MERGE_ROWS samples per part at a time (each part is sorted by key: ``write_parts``)."""
    import heapq

    folder = parts_folder(sink_url, shard)

    def rows_of(name: str) -> Iterator[dict[str, Any]]:
        with folder.open(name) as f:
            parquet = pq.ParquetFile(f)
            for group in range(parquet.num_row_groups):
                yield from table_to_rows(parquet.read_row_group(group))

    return heapq.merge(*(rows_of(name) for name in names), key=lambda row: row["key"])


def remove_parts(sink_url: str, shard: str | None = None) -> None:
    """Delete a shard's staging folder (``shard=None``: the whole staging area), whatever it holds."""
    from grit_pipeline.faults import STORAGE_RETRY

    folder = parts_folder(sink_url, shard)
    try:
        STORAGE_RETRY.call(f"delete {folder.root}", lambda: folder.fs.rm(folder.root, recursive=True))
    except FileNotFoundError:
        pass


def commit_shard(sink, source, shard: str, part_names: list[str], params: dict[str, Any],
                 input_description: str) -> dict[str, Any]:
    """Merge exactly ``part_names`` into the shard's final files (``NNNNN.done`` last), then drop its staging.

    Idempotent, so a retried commit task is harmless: once the shard is done and its staging folder gone,
    a second call changes nothing. With no parts the shard must be empty in the source (checked).
    Returns ``{"shard", "samples", "node"}``.
    """
    if sink.is_done(shard, params) and not parts_folder(sink.folder.url, shard).exists():
        # A retried commit whose first attempt finished (and removed the parts): nothing left to do.
        return {"shard": shard, "samples": sink.marker(shard)["samples"], "node": current_node()}
    stream = None
    if part_names:
        # Everything but the image bytes in memory (a few hundred bytes per sample); the writers that need
        # the bytes (the tar) get them merged from the parts a row group at a time: a worker's memory is
        # bounded by MERGE_ROWS x parts, not by the shard's image bytes.
        light = [name for name in SAMPLE_FIELDS if name != "image_bytes"]
        samples = read_parts(sink.folder.url, shard, part_names, columns=light)

        def stream() -> Iterator[dict[str, Any]]:
            return merged_parts(sink.folder.url, shard, part_names)
    else:
        samples = source.read(shard)
        if samples:
            raise RuntimeError(f"shard {shard}: none of its {len(samples)} samples came out of the pipeline")
    sink.clear(shard)
    sink.write(shard, samples, params, input_description, stream=stream)
    remove_parts(sink.folder.url, shard)
    return {"shard": shard, "samples": len(samples), "node": current_node()}


def current_node() -> str:
    """The Ray node id of this process, or "" outside Ray."""
    try:
        import ray

        if ray.is_initialized():
            return ray.get_runtime_context().get_node_id() or ""
    except Exception:  # noqa: BLE001 - no Ray: not on a node
        pass
    return ""


@dataclass
class ShardParts:
    total: int
    parts: list[str] = field(default_factory=list)
    keys: set[str] = field(default_factory=set)
    counts: dict[str, int] = field(default_factory=dict)


class PartLedger:
    """The driver's record of accepted parts: exactly one accepted copy of every key, per shard.

    Only shards in flight hold their keys: once a shard is complete, ``seal`` hands over its parts and
    per-status counts and forgets its keys, keeping its name so that a late copy of any of its parts
    (a retried attempt) is still refused. The driver's memory is O(keys of the shards in flight) + O(shards).
    """

    def __init__(self):
        self.shards: dict[str, ShardParts] = {}     # shards in flight
        self.sealed: set[str] = set()               # complete shards, handed to a commit
        self.rejected: list[tuple[str, str]] = []   # (shard, part) of duplicate attempts
        self.startup_s: dict[str, float] = {}
        self.nodes: dict[str, int] = {}             # parts written per node

    def add(self, info: dict[str, Any]) -> bool:
        """Record a part; False (and never merged) when any of its keys was accepted already."""
        if info["shard"] in self.sealed:
            self.rejected.append((info["shard"], info["part"]))
            return False
        shard = self.shards.setdefault(info["shard"], ShardParts(total=info["shard_total"]))
        keys = info["keys"]
        if len(set(keys)) != len(keys) or shard.keys.intersection(keys):
            self.rejected.append((info["shard"], info["part"]))
            return False
        shard.parts.append(info["part"])
        shard.keys.update(keys)
        for status in info["statuses"]:
            shard.counts[status] = shard.counts.get(status, 0) + 1
        for stage, seconds in dict(info.get("startup_s") or {}).items():
            self.startup_s[stage] = self.startup_s.get(stage, 0.0) + seconds
        node = info.get("node") or ""
        self.nodes[node] = self.nodes.get(node, 0) + 1
        return True

    def complete(self, shard: str) -> bool:
        parts = self.shards.get(shard)
        return parts is not None and len(parts.keys) == parts.total

    def seal(self, shard: str) -> tuple[list[str], dict[str, int]]:
        """A complete shard's accepted parts and per-status counts; its keys are released."""
        parts = self.shards.pop(shard)
        self.sealed.add(shard)
        return parts.parts, parts.counts

    def seen(self, shard: str) -> bool:
        return shard in self.shards or shard in self.sealed

    def keys_held(self) -> int:
        """Keys the ledger holds now (those of the shards in flight)."""
        return sum(len(p.keys) for p in self.shards.values())

    def incomplete(self) -> dict[str, int]:
        """Shards with some but not all samples accepted: shard -> samples received."""
        return {name: len(p.keys) for name, p in self.shards.items() if len(p.keys) != p.total}


def remove_stale_parts(sink_url: str, shards: list[str]) -> list[str]:
    """Delete what killed runs left in the staging area for ``shards`` (a run starts from no parts);
    returns the shards that had some. Staging folders of other shards (another run's) are left alone."""
    from grit_pipeline.faults import STORAGE_RETRY

    folder = parts_folder(sink_url)
    try:
        entries = STORAGE_RETRY.call(f"list {folder.root}", lambda: folder.fs.ls(folder.root, detail=True))
    except FileNotFoundError:
        return []
    staged = {e["name"].rstrip("/").rsplit("/", 1)[-1] for e in entries}
    stale = sorted(staged.intersection(shards))
    for shard in stale:
        remove_parts(sink_url, shard)
    if staged <= set(shards):
        remove_parts(sink_url)  # nothing else staged: the empty staging area goes too
    return stale
