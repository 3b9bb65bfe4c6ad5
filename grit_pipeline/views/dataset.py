"""Read a dataset directory into plain samples for the gallery and the report.

Two layouts are understood:

* ``pipeline``: a GRIT build (``grit_pipeline.pipeline.layout``): ``NNNNN.parquet`` GRIT rows,
  ``_webdataset/NNNNN.tar`` with ``KEY.jpg``/``KEY.json``/``KEY.txt``, ``_rejects/NNNNN.parquet``,
  ``_stats/NNNNN.json``, ``_done/NNNNN.done``, ``_run.json`` (a build of grit's previous layout, with
  these files beside the rows, reads too). Images of rejected samples are looked up in the input shard
  the sample came from (named by the shard stats / ``source_shard`` / ``_run.json``).
* ``img2dataset``: shards as img2dataset writes them (``NNNNN.tar`` with ``KEY.jpg``/``KEY.json``/
  ``KEY.txt`` and ``NNNNN.parquet`` metadata), e.g. GrIT-20M downloaded with its ``noun_chunks`` and
  ``ref_exps`` columns saved into each ``KEY.json``. Failed downloads come from the parquet.

Nothing here raises on one bad row: a span that fails validation is left out of the drawing and
reported in ``ViewSample.problems``.
"""
from __future__ import annotations

import json
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Iterator

import pyarrow.parquet as pq

from grit_pipeline import status as st
from grit_pipeline.pipeline import layout
from grit_pipeline.record import RecordError, validate_span
from grit_pipeline.tar_reader import DEFAULT_MAX_MEMBER_BYTES, IMAGE_EXTENSIONS, TarReader

# Label for img2dataset samples that carry no grounding columns at all (an input shard, not a build).
UNGROUNDED = "ungrounded"
# img2dataset's parquet 'status' for a fetched sample.
IMG2DATASET_SUCCESS = "success"
# a stats or run file larger than this is not one grit wrote
MAX_JSON_FILE_BYTES = 16 * 1024 * 1024
DEFAULT_THRESHOLD = 0.65

_REJECTS_SUFFIX = "_rejects"
# a build's files outside its rows (grit_pipeline.pipeline.layout): folder, Shard attribute, name suffix
_LAYOUT_FOLDERS = ((layout.TARS_DIR, "tar", ".tar"), (layout.REJECTS_DIR, "rejects", ".parquet"),
                   (layout.STATS_DIR, "stats", ".json"), (layout.DONE_DIR, "done", layout.DONE_SUFFIX))


@dataclass
class ViewSample:
    """One sample as the views show it: its record fields, its status and where its image lives."""

    key: str
    status: str
    caption: str | None = None
    url: str | None = None
    width: int | None = None
    height: int | None = None
    noun_chunks: list[list[float]] = field(default_factory=list)
    ref_exps: list[list[float]] = field(default_factory=list)
    dropped_boxes: list[list[float]] = field(default_factory=list)
    reason: str | None = None
    stage: str | None = None
    shard: str = ""                      # the shard stem in DIR this row was read from
    source_shard: str | None = None
    image_tar: str | None = None         # tar that should hold KEY.<image ext>; None when unknown
    problems: list[str] = field(default_factory=list)  # invalid spans left out, and similar notes

    @property
    def is_rejected(self) -> bool:
        return self.status not in st.KEPT and self.status != UNGROUNDED


@dataclass
class Shard:
    stem: str
    parquet: Path | None = None
    tar: Path | None = None
    rejects: Path | None = None
    stats: Path | None = None
    done: bool = False


class DatasetError(ValueError):
    """The directory is not a dataset the views can read; the message says what was looked for."""


@dataclass
class Dataset:
    """A dataset directory: its layout, its shards and the build's run parameters if any."""

    root: Path
    kind: str                                   # "pipeline" or "img2dataset"
    shards: list[Shard]
    run: dict[str, Any] = field(default_factory=dict)

    # ---- discovery -------------------------------------------------------------------------
    @classmethod
    def open(cls, root: str | os.PathLike) -> "Dataset":
        root = Path(root)
        if not root.is_dir():
            raise DatasetError(f"{root}: not a directory")
        shards: dict[str, Shard] = {}

        def shard(stem: str) -> Shard:
            return shards.setdefault(stem, Shard(stem))

        for path in sorted(root.iterdir()):
            name = path.name
            if name.startswith((".", "_")) or not path.is_file() or ".tmp-" in name:
                continue
            if name.endswith(f"{_REJECTS_SUFFIX}.parquet"):
                shard(name[: -len(f"{_REJECTS_SUFFIX}.parquet")]).rejects = path
            elif name.endswith("_stats.json"):
                shard(name[: -len("_stats.json")]).stats = path
            elif name.endswith(".parquet"):
                shard(name[: -len(".parquet")]).parquet = path
            elif name.endswith(".tar"):
                shard(name[: -len(".tar")]).tar = path
            elif name.endswith(".done"):
                shard(name[: -len(".done")]).done = True
        for folder, attribute, suffix in _LAYOUT_FOLDERS:
            if not (root / folder).is_dir():
                continue
            for path in sorted((root / folder).iterdir()):
                if path.is_file() and path.name.endswith(suffix) and ".tmp-" not in path.name:
                    stem = path.name[: -len(suffix)]
                    if attribute == "done":
                        shard(stem).done = True
                    else:
                        setattr(shard(stem), attribute, path)
        run_path = root / "_run.json"
        run = _read_json(run_path) if run_path.exists() else {}
        if not isinstance(run, dict):
            run = {}
        is_pipeline = bool(run) or any(s.rejects or s.done for s in shards.values())
        kept = [s for s in shards.values() if s.parquet or s.tar or s.rejects]
        if not kept:
            raise DatasetError(
                f"{root}: no shards found (expected NNNNN.parquet / NNNNN.tar / _rejects/NNNNN.parquet)"
            )
        return cls(root=root, kind="pipeline" if is_pipeline else "img2dataset",
                   shards=sorted(kept, key=lambda s: s.stem), run=run)

    @property
    def finished_shards(self) -> list[Shard]:
        """Shards to read: in a build only those with a ``.done`` marker (others are being written)."""
        if self.kind == "pipeline":
            return [s for s in self.shards if s.done]
        return list(self.shards)

    @property
    def unfinished_shards(self) -> list[Shard]:
        return [s for s in self.shards if s not in self.finished_shards]

    def threshold(self) -> float | None:
        """The build's box threshold from ``_run.json`` (None when the directory does not say)."""
        value = _find_key(self.run, ("box_threshold", "threshold"))
        try:
            return float(value) if value is not None else None
        except (TypeError, ValueError):
            return None

    def run_value(self, name: str) -> Any:
        """A parameter recorded in ``_run.json`` (searched in nested objects too), or None."""
        return _find_key(self.run, (name,))

    def shard_stats(self) -> list[dict[str, Any]]:
        """The readable stats files of the finished shards (a damaged one is warned about and left out)."""
        from grit_pipeline.pipeline.stats import check_shard_stats

        out = []
        for shard in self.finished_shards:
            if shard.stats and shard.stats.exists():
                data = _read_json(shard.stats)
                try:
                    if not isinstance(data, dict):
                        raise ValueError("not a JSON object")
                    check_shard_stats(data)
                except ValueError as error:
                    print(f"warning: {shard.stats}: {error}; left out", file=sys.stderr)
                    continue
                out.append(data)
        return out

    # ---- samples ---------------------------------------------------------------------------
    def iter_samples(self, rejects: bool = True, progress: bool = False) -> Iterator[ViewSample]:
        """Every sample of the finished shards: kept rows first within a shard, then rejects."""
        shards = self.finished_shards
        for number, shard in enumerate(shards, 1):
            if progress:
                print(f"reading shard {shard.stem} ({number}/{len(shards)})", file=sys.stderr)
            if self.kind == "pipeline":
                yield from self._pipeline_samples(shard, rejects)
            else:
                yield from self._img2dataset_samples(shard, rejects)

    def _pipeline_samples(self, shard: Shard, rejects: bool) -> Iterator[ViewSample]:
        if shard.parquet:
            for row in _read_rows(shard.parquet):
                yield _sample_from_row(row, shard.stem, default_status=st.GROUNDED,
                                       image_tar=str(shard.tar) if shard.tar else None)
        elif shard.tar:  # parquet missing: the tar's KEY.json carries the same record
            for key, meta in _tar_json_records(shard.tar):
                yield _sample_from_row(meta, shard.stem, default_status=st.GROUNDED, image_tar=str(shard.tar),
                                       key=key)
        if rejects and shard.rejects:
            stats = _read_json(shard.stats) if shard.stats and shard.stats.exists() else {}
            tars: dict[Any, str | None] = {}
            for row in _read_rows(shard.rejects):
                source = row.get("source_shard")
                if source not in tars:
                    tars[source] = self._source_tar(source, stats if isinstance(stats, dict) else {})
                tar = tars[source]
                yield _sample_from_row(row, shard.stem, default_status=st.NO_BOX, image_tar=tar)

    def _img2dataset_samples(self, shard: Shard, rejects: bool) -> Iterator[ViewSample]:
        rows = _read_rows(shard.parquet) if shard.parquet else []
        has_status = any("status" in r for r in rows[:1])
        seen: set[str] = set()
        if shard.tar:
            for key, meta in _tar_json_records(shard.tar):
                seen.add(key)
                yield _sample_from_row(meta, shard.stem, default_status=None, image_tar=str(shard.tar), key=key)
        for row in rows:
            key = row.get("key")
            key = str(key) if key is not None else None
            if key in seen:
                continue
            ok = not has_status or row.get("status") == IMG2DATASET_SUCCESS
            if not ok:
                if not rejects:
                    continue
                sample = _sample_from_row(row, shard.stem, default_status=None, image_tar=None)
                sample.status = st.DOWNLOAD_ERROR
                sample.stage = "download"
                sample.reason = _text(row.get("error_message")) or f"img2dataset status {row.get('status')!r}"
                yield sample
            else:  # metadata-only rows (a GrIT-20M parquet without images, or a tar missing the sample)
                yield _sample_from_row(row, shard.stem, default_status=None,
                                       image_tar=str(shard.tar) if shard.tar else None)

    def _source_tar(self, source_shard: Any, stats: dict[str, Any]) -> str | None:
        """Where a rejected sample's image is: the input shard tar, if it can be found on disk."""
        candidates: list[str] = []
        names = [str(source_shard)] if source_shard else []
        if isinstance(stats.get("input"), str):
            names.append(stats["input"])
        input_dir = _find_key(self.run, ("input", "input_path", "input_dir", "inputs"))
        if isinstance(input_dir, list) and input_dir:
            input_dir = input_dir[0]
        for name in names:
            if name.startswith("file://"):
                name = name[len("file://"):]
            if "://" in name:
                continue  # a remote input shard: not fetched for a local page
            if os.path.isabs(name):
                candidates.append(name)
            if isinstance(input_dir, str) and "://" not in input_dir:
                base = input_dir if os.path.isdir(input_dir) else os.path.dirname(input_dir)
                candidates.append(os.path.join(base, os.path.basename(name)))
        for candidate in candidates:
            if candidate.endswith(".parquet"):
                candidate = candidate[: -len(".parquet")]
            tar = candidate if candidate.endswith(".tar") else candidate + ".tar"
            # never the build's own NNNNN.tar: it holds only the kept samples
            if os.path.isfile(tar) and os.path.dirname(os.path.realpath(tar)) not in (
                    os.path.realpath(self.root), os.path.realpath(self.root / layout.TARS_DIR)):
                return tar
        return None


# ---- images ---------------------------------------------------------------------------------
def read_images(samples: Iterable[ViewSample], max_member_bytes: int | None = DEFAULT_MAX_MEMBER_BYTES
                ) -> dict[tuple[str | None, str], bytes]:
    """Fetch the image bytes of ``samples`` from their tars, reading each tar once.

    Returns {(image_tar, key): bytes}; samples whose image is not found (or whose member is larger than
    ``max_member_bytes``, skipped unread) are simply absent.
    """
    wanted: dict[str, set[str]] = {}
    for sample in samples:
        if sample.image_tar:
            wanted.setdefault(sample.image_tar, set()).add(sample.key)
    found: dict[tuple[str | None, str], bytes] = {}
    for tar_path, keys in wanted.items():
        reader = TarReader(tar_path, max_member_bytes=max_member_bytes,
                           wanted=lambda key, ext, keys=keys: key in keys and ext in IMAGE_EXTENSIONS)
        for tar_sample in reader:
            image = tar_sample.image()
            if image and (tar_path, tar_sample.key) not in found:
                found[(tar_path, tar_sample.key)] = image[1]
        if reader.error:
            print(f"warning: cannot read images from {tar_path}: {reader.error}", file=sys.stderr)
    return found


# ---- helpers --------------------------------------------------------------------------------
def _read_json(path: Path) -> Any:
    try:
        if Path(path).stat().st_size > MAX_JSON_FILE_BYTES:
            raise ValueError(f"larger than {MAX_JSON_FILE_BYTES} bytes")
        return json.loads(Path(path).read_text())
    except (OSError, ValueError, RecursionError) as error:
        print(f"warning: cannot read {path}: {error}", file=sys.stderr)
        return {}


def _read_rows(path: Path) -> list[dict[str, Any]]:
    try:
        return pq.read_table(path).to_pylist()
    except Exception as error:  # a corrupt parquet file must not stop the view of the others
        print(f"warning: cannot read {path}: {error}", file=sys.stderr)
        return []


def _find_key(data: Any, names: tuple[str, ...]) -> Any:
    """First value stored under one of ``names`` in a nested dict (breadth first)."""
    queue = [data]
    while queue:
        item = queue.pop(0)
        if isinstance(item, dict):
            for name in names:
                if name in item and item[name] is not None:
                    return item[name]
            queue.extend(v for v in item.values() if isinstance(v, dict))
    return None


def _tar_json_records(tar_path: Path, max_member_bytes: int | None = DEFAULT_MAX_MEMBER_BYTES
                      ) -> Iterator[tuple[str, dict[str, Any]]]:
    """(key, record) for each KEY.json in a webdataset tar; KEY.txt fills a missing caption."""
    records: dict[str, dict[str, Any]] = {}
    texts: dict[str, str] = {}
    order: list[str] = []
    reader = TarReader(str(tar_path), max_member_bytes=max_member_bytes,
                       wanted=lambda key, ext: ext in ("json", "txt"))
    for tar_sample in reader:
        key = tar_sample.key
        if "json" in tar_sample.files or "json" in tar_sample.oversize:
            try:
                if "json" in tar_sample.oversize:
                    raise ValueError(f"{tar_sample.oversize['json']} bytes, over the member limit")
                data = json.loads(tar_sample.files["json"])
            except (ValueError, RecursionError) as error:
                data = {"_problem": f"unreadable {key}.json: {str(error)[:200]}"}
            if not isinstance(data, dict):
                data = {"_problem": f"{key}.json is not a JSON object"}
            if key not in records:
                order.append(key)
            records[key] = data
        if "txt" in tar_sample.files:
            texts[key] = tar_sample.files["txt"].decode("utf-8", errors="replace")
    if reader.error:
        print(f"warning: cannot read {tar_path}: {reader.error}", file=sys.stderr)
    for key in order:
        record = records[key]
        if record.get("caption") is None and key in texts:
            record = {**record, "caption": texts[key]}
        yield key, record


def _text(value: Any) -> str | None:
    if value is None:
        return None
    return value if isinstance(value, str) else str(value)


def _int(value: Any) -> int | None:
    try:
        return int(value) if value is not None and not isinstance(value, bool) else None
    except (TypeError, ValueError):
        return None


def _spans(value: Any) -> Any:
    """Span columns as lists; GrIT-20M copies sometimes store them as JSON strings."""
    if isinstance(value, str):
        try:
            return json.loads(value)
        except ValueError:
            return value
    if hasattr(value, "tolist"):
        return value.tolist()
    return value


def clean_spans(key: str, name: str, value: Any, caption: str | None, problems: list[str]) -> list[list[float]]:
    """The valid [start, end, x1, y1, x2, y2, score] items of a span column; the rest go to ``problems``."""
    value = _spans(value)
    if value is None:
        return []
    if not isinstance(value, (list, tuple)):
        problems.append(f"{name}: not a list of spans ({type(value).__name__})")
        return []
    out = []
    for i, span in enumerate(value):
        span = _spans(span)
        try:
            if not isinstance(span, (list, tuple)):
                raise RecordError(key, f"{name}[{i}]", f"must be a list of 7 numbers, got {span!r}")
            if caption is None:
                raise RecordError(key, f"{name}[{i}]", "no caption to index into")
            validate_span(key, f"{name}[{i}]", list(span), caption)
        except RecordError as error:
            problems.append(f"{error.field_name}: {error.problem}")
            continue
        out.append([float(x) for x in span])
    return out


def _sample_from_row(row: dict[str, Any], shard: str, default_status: str | None, image_tar: str | None,
                     key: str | None = None) -> ViewSample:
    key = key if key is not None else _text(row.get("key"))
    if key is None:
        key = _text(row.get("id")) or "<no key>"
    caption = row.get("caption")
    problems: list[str] = []
    if "_problem" in row:
        problems.append(row["_problem"])
    if caption is not None and not isinstance(caption, str):
        problems.append(f"caption is not text ({type(caption).__name__})")
        caption = str(caption)
    noun_chunks = clean_spans(key, "noun_chunks", row.get("noun_chunks"), caption, problems)
    ref_exps = clean_spans(key, "ref_exps", row.get("ref_exps"), caption, problems)
    dropped = clean_spans(key, "dropped_boxes", row.get("dropped_boxes"), caption, problems)
    if len(noun_chunks) != len(ref_exps):  # one-to-one by contract; pair what we can
        problems.append(f"noun_chunks and ref_exps differ in length ({len(noun_chunks)} vs {len(ref_exps)})")
    status = _text(row.get("status")) if default_status is not None else None
    if default_status is None:  # img2dataset: status there is the download status
        if "noun_chunks" in row or "ref_exps" in row:
            status = st.GROUNDED if noun_chunks else st.NO_BOX
        else:
            status = UNGROUNDED
    return ViewSample(
        key=key,
        status=status or default_status,
        caption=caption,
        url=_text(row.get("url")),
        width=_int(row.get("width")),
        height=_int(row.get("height")),
        noun_chunks=noun_chunks,
        ref_exps=ref_exps,
        dropped_boxes=dropped,
        reason=_text(row.get("reason")),
        stage=_text(row.get("stage")),
        shard=shard,
        source_shard=_text(row.get("source_shard")),
        image_tar=image_tar,
        problems=problems,
    )

