"""Where samples come from and go to, one shard at a time, with atomic commits and resume.

Sources: ``InputSource`` (img2dataset folders, via ``ingest``) and ``StageSource`` (a previous stage's
per-shard parquet). Sinks: ``BuildSink`` (the GRIT build, via the writers) and ``StageSink`` (per-shard
parquet for the next stage). The local engine calls a sink in its own process; the Ray engine has a worker
call it from staged parts (``parts.commit_shard``).

A sink commits a shard by writing each file atomically and then ``_done/NNNNN.done`` last (``layout``). The marker holds the
output-affecting parameters the shard was built with and its files' sizes; a shard counts as done only
when its marker exists, matches the current parameters and its files still have those sizes, so a rerun
skips finished shards, redoes partial ones (no marker), rebuilds stale ones (made with other parameters,
like Make) and changed ones (a file truncated or deleted after the commit). Before rewriting a shard its marker goes
first, so a crash mid-rewrite can never leave an old marker beside new files.
"""
from __future__ import annotations

import json
import sys
from typing import Any, Iterator

import pyarrow.parquet as pq

from .config import PipelineConfig, join_path
from . import layout
from .ingest import InputShard, iter_input_shard, list_input_shards, read_input_shard
from .preflight import same_params
from .sample import rows_to_table, table_to_rows
from .storage import Folder



def sort_samples(samples: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Samples in key order, so a shard's files never depend on scheduling; duplicate keys are a bug."""
    ordered = sorted(samples, key=lambda s: s["key"])
    for a, b in zip(ordered, ordered[1:]):
        if a["key"] == b["key"]:
            raise RuntimeError(f"key {a['key']!r} appears twice in shard {a['source_shard']}")
    return ordered


def _same_keys(stream, samples: list[dict[str, Any]], shard: str):
    """``stream``'s samples, checked to be ``samples`` in the same (key) order."""
    count = 0
    for expected, sample in zip(samples, stream):
        if sample["key"] != expected["key"]:
            raise RuntimeError(f"shard {shard}: merged parts out of order at {sample['key']!r}")
        count += 1
        yield sample
    if count != len(samples):
        raise RuntimeError(f"shard {shard}: merged parts hold {count} samples, expected {len(samples)}")


class InputSource:
    """The shards of an img2dataset output folder."""

    def __init__(self, config: PipelineConfig):
        self.url = config.input
        self.check_letterbox = config.check_letterbox
        self.max_member_bytes = config.max_member_bytes
        self.max_caption_chars = config.max_caption_chars
        self._shards: dict[str, InputShard] = {}

    def shards(self) -> list[str]:
        self._shards = {s.name: s for s in list_input_shards(self.url)}
        unfinished = sorted(name for name, shard in self._shards.items() if not shard.has_stats)
        if unfinished:
            # Processed anyway (hand-made webdataset folders have no stats file), but say so: a shard still
            # being downloaded would be built from its samples so far.
            print(f"warning: {len(unfinished)} input shard(s) have no NNNNN_stats.json, which img2dataset writes "
                  f"when a shard is complete (an unfinished download?): {', '.join(unfinished[:5])}"
                  + (" ..." if len(unfinished) > 5 else ""), file=sys.stderr)
        return sorted(self._shards)

    def incomplete(self) -> list[str]:
        return []

    def params(self, shard: str) -> dict[str, Any]:
        return {}

    def describe(self, shard: str) -> str:
        return join_path(self.url, shard)  # the shard's files: this + .tar / .parquet

    def size_hint(self, shard: str) -> int | None:
        """Samples the shard's parquet lists (its footer only), None when it has none or cannot be read."""
        if shard not in self._shards:
            self.shards()
        return _parquet_rows(Folder(self.url), f"{shard}.parquet") if self._shards[shard].has_parquet else None

    def read(self, shard: str) -> list[dict[str, Any]]:
        if shard not in self._shards:
            self.shards()
        return read_input_shard(self._shards[shard], check_letterbox=self.check_letterbox,
                                max_member_bytes=self.max_member_bytes, max_caption_chars=self.max_caption_chars)

    def read_chunks(self, shard: str, size: int) -> Iterator[list[dict[str, Any]]]:
        """The shard's samples, at most ``size`` at a time, its tar streamed (``ingest.iter_input_shard``)."""
        if shard not in self._shards:
            self.shards()
        return iter_input_shard(self._shards[shard], chunk_size=size, check_letterbox=self.check_letterbox,
                                max_member_bytes=self.max_member_bytes, max_caption_chars=self.max_caption_chars)


class StageSource:
    """A previous stage's finished per-shard parquet files (WORK/<stage>/NNNNN.parquet, _done/NNNNN.done)."""

    def __init__(self, work: str, stage: str):
        self.stage = stage
        self.folder = Folder(join_path(work, stage))
        self.url = self.folder.url
        self._params: dict[str, dict[str, Any]] = {}

    def shards(self) -> list[str]:
        names = set(layout.list_sizes(self.folder))
        done = (layout.done_shard(n) for n in names)
        return sorted(s for s in done if s is not None and layout.pairs_name(s) in names)

    def incomplete(self) -> list[str]:
        names = set(layout.list_sizes(self.folder))
        return sorted(n[: -len(".parquet")] for n in names
                      if "/" not in n and n.endswith(".parquet") and layout.done_name(n[: -len(".parquet")]) not in names)

    def params(self, shard: str) -> dict[str, Any]:
        """The parameters the previous stage's marker records (each marker read once per process)."""
        if shard not in self._params:
            self._params[shard] = json.loads(self.folder.read_bytes(layout.done_name(shard)))["params"]
        return self._params[shard]

    def __getstate__(self):
        return {**self.__dict__, "_params": {}}  # (workers need no copy of every marker)

    def describe(self, shard: str) -> str:
        return join_path(self.params(shard).get("input", "?"), shard)  # the same as InputSource's

    def size_hint(self, shard: str) -> int | None:
        """Samples in the shard's parquet (its footer only)."""
        return _parquet_rows(self.folder, f"{shard}.parquet")

    def read(self, shard: str) -> list[dict[str, Any]]:
        with self.folder.open(f"{shard}.parquet") as f:
            return table_to_rows(pq.ParquetFile(f).read())  # (no pyarrow.dataset import)

    def read_chunks(self, shard: str, size: int) -> Iterator[list[dict[str, Any]]]:
        """The shard's samples, at most ``size`` at a time, read batch by batch from its parquet."""
        import pyarrow as pa

        with self.folder.open(f"{shard}.parquet") as f:
            for batch in pq.ParquetFile(f).iter_batches(batch_size=size):
                yield table_to_rows(pa.Table.from_batches([batch]))


def _parquet_rows(folder: Folder, name: str) -> int | None:
    try:
        with folder.open(name) as f:
            return pq.ParquetFile(f).metadata.num_rows
    except Exception:  # noqa: BLE001 - only a hint: a broken parquet is reported when the shard is read
        return None


def committed_intact(marker: Any, params: dict[str, Any], files: list[str], sizes: dict[str, int]) -> bool:
    """Whether a shard is done: its ``_done/NNNNN.done`` ``marker`` records ``params`` (an input folder spelt another way
    is the same input) and each of its ``files`` has, in ``sizes`` (name -> bytes now), the size the marker
    recorded; a file truncated, replaced or deleted after the commit makes the shard rebuild. A marker from
    before sizes were recorded only needs the files to exist."""
    if not isinstance(marker, dict) or not same_params(marker.get("params"), params):
        return False
    recorded = marker.get("files")
    if recorded is None:
        return all(name in sizes for name in files)
    return isinstance(recorded, dict) and all(name in sizes and sizes[name] == recorded.get(name) for name in files)


class _Sink:
    folder: Folder

    def files(self, shard: str) -> list[str]:
        raise NotImplementedError

    def marker(self, shard: str) -> dict[str, Any]:
        """The shard's ``.done`` marker (raises FileNotFoundError/ValueError when missing or unreadable)."""
        return json.loads(self.folder.read_bytes(layout.done_name(shard)))

    def is_done(self, shard: str, params: dict[str, Any]) -> bool:
        """``committed_intact`` for one shard, asking the folder (the plan of a run uses one listing)."""
        try:
            marker = self.marker(shard)
        except (FileNotFoundError, ValueError, KeyError, RecursionError):
            return False
        sizes = {}
        for name in self.files(shard):
            try:
                sizes[name] = self.folder.size(name)
            except FileNotFoundError:
                pass
        return committed_intact(marker, params, self.files(shard), sizes)

    def clear(self, shard: str) -> None:
        """Forget a shard before (re)building it: marker first, then its files and stray temp files."""
        self.folder.remove(layout.done_name(shard))
        for name in self.files(shard):
            self.folder.remove(name)
        self.folder.remove_temps(prefix=shard, subfolders=layout.SUBFOLDERS)

    def _mark_done(self, shard: str, params: dict[str, Any], samples: int) -> None:
        files = {name: self.folder.size(name) for name in self.files(shard)}
        marker = {"shard": shard, "samples": samples, "params": params, "files": files}
        self.folder.write_bytes(layout.done_name(shard), json.dumps(marker, sort_keys=True).encode("utf-8"))


class BuildSink(_Sink):
    """The GRIT build: every writer's file per shard, then the marker."""

    def __init__(self, config: PipelineConfig, writers=None):
        from .writers import DEFAULT_WRITERS

        self.config = config
        self.folder = Folder(config.output)
        self.writers = tuple(writers or DEFAULT_WRITERS)

    def files(self, shard: str) -> list[str]:
        return [w.filename(shard) for w in self.writers]

    def write(self, shard: str, samples: list[dict[str, Any]], params: dict[str, Any], input_description: str,
              stream=None) -> None:
        """Every writer's file, then the marker. ``stream``: a function giving the same samples in key order
        with their image bytes (``parts.merged_parts``) when ``samples`` were read without them; the writers
        that declare ``NEEDS_IMAGE_BYTES`` iterate it once instead."""
        from .writers import WriteContext

        samples = sort_samples(samples)
        unfinished = [s["key"] for s in samples if s["status"] is None]
        if unfinished:
            raise RuntimeError(f"shard {shard}: samples reached the writer unfinished: {unfinished[:5]}")
        context = WriteContext(shard=shard, input=input_description, box_threshold=self.config.box_threshold,
                               phrase_mode=self.config.phrase_mode)
        self.folder.makedirs()
        self.folder.remove(layout.done_name(shard))
        for writer in self.writers:
            # (a writer that reads image bytes must say so, or it would get None in the Ray engine's commit)
            rows = samples
            if stream is not None and getattr(writer, "NEEDS_IMAGE_BYTES", False):
                rows = _same_keys(stream(), samples, shard)
            with self.folder.atomic_open(writer.filename(shard)) as f:
                writer.write(rows, f, context)
        self._mark_done(shard, params, len(samples))


class StageSink(_Sink):
    """A stage's output: WORK/<stage>/NNNNN.parquet (all samples, pipeline schema), then the marker."""

    def __init__(self, work: str, stage: str):
        self.stage = stage
        self.folder = Folder(join_path(work, stage))

    def files(self, shard: str) -> list[str]:
        return [layout.pairs_name(shard)]

    def write(self, shard: str, samples: list[dict[str, Any]], params: dict[str, Any], input_description: str,
              stream=None) -> None:
        # (the stage file holds the image bytes: with a stream, the whole shard is read back here)
        samples = sort_samples(list(stream()) if stream is not None else samples)
        self.folder.makedirs()
        self.folder.remove(layout.done_name(shard))
        with self.folder.atomic_open(layout.pairs_name(shard)) as f:
            pq.write_table(rows_to_table(samples), f, compression="zstd")
        self._mark_done(shard, params, len(samples))
