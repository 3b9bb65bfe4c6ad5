"""Ingest: img2dataset output folders (``NNNNN.tar`` + ``NNNNN.parquet``) -> pipeline samples.

Every key that either file names becomes exactly one sample. Problems become finished samples with a
status instead of exceptions: failed downloads (``download_error``), a missing or truncated tar
(``shard_error``), a sample without image bytes or with an image member over ``max_member_bytes``
(``decode_error``), a caption that is not text or is longer than ``max_caption_chars`` (``bad_caption``),
a metadata value of the wrong type, non-finite, out of range, oversize or over-nested (``bad_metadata``,
the reason names the field), a key that is not a plain file name (``bad_key``), a key listed twice in one
shard (``duplicate_key``: every copy is rejected, the reason says how many there were), an image that
img2dataset letterboxed or cropped (``letterboxed``). Keys a truncated tar never reached and that no
parquet lists cannot be known, so they cannot be reported. Tars are read by ``grit_pipeline.tar_reader``.
"""
from __future__ import annotations

import json
import math
from collections import Counter
from dataclasses import dataclass
from typing import Any, Iterator

import pyarrow.parquet as pq

from grit_pipeline import status as S
from grit_pipeline.limits import MAX_CAPTION_CHARS as DEFAULT_MAX_CAPTION_CHARS
from grit_pipeline.limits import MAX_JSON_BYTES, MAX_JSON_DEPTH
from grit_pipeline.tar_reader import DEFAULT_MAX_MEMBER_BYTES, IMAGE_EXTENSIONS, TarReader, key_problem

from .sample import finish, new_sample
from .storage import Folder

STAGE = "ingest"
INT64 = (-(2 ** 63), 2 ** 63 - 1)


@dataclass(frozen=True)
class InputShard:
    """One input shard: its name (the file stem, e.g. ``00000``) and which of its files exist."""

    name: str
    folder: str
    has_tar: bool
    has_parquet: bool
    has_stats: bool = True  # img2dataset writes NNNNN_stats.json last: without it the download may be unfinished
    tar_dir: str = ""       # the folder of its tar relative to ``folder``: "_webdataset" in a GRIT build

    @property
    def tar_name(self) -> str:
        return f"{self.tar_dir}/{self.name}.tar" if self.tar_dir else f"{self.name}.tar"


def list_input_shards(url: str) -> list[InputShard]:
    """The shards of an img2dataset output folder, or of a GRIT build (its tars in ``_webdataset/``, its
    ``_rejects/`` not records), sorted by name."""
    from . import layout

    folder = Folder(url)
    if not folder.exists():
        raise FileNotFoundError(f"input folder not found: {url}")
    names = folder.names()
    tars = {n[: -len(".tar")] for n in names if n.endswith(".tar")}
    parquets = {n[: -len(".parquet")] for n in names if n.endswith(".parquet")}
    stats = {n[: -len("_stats.json")] for n in names if n.endswith("_stats.json")}
    build_tars = ({n[: -len(".tar")] for n in Folder(folder.uri(layout.TARS_DIR)).names() if n.endswith(".tar")}
                  if folder.exists(layout.TARS_DIR) else set())
    if build_tars:
        finished = {n[: -len(layout.DONE_SUFFIX)] for n in Folder(folder.uri(layout.DONE_DIR)).names()}
        return [InputShard(name, url, name in build_tars, name in parquets, name in finished,
                           tar_dir=layout.TARS_DIR if name in build_tars else "")
                for name in sorted(build_tars | parquets)]
    return [InputShard(name, url, name in tars, name in parquets, name in stats) for name in sorted(tars | parquets)]



def read_input_shard(shard: InputShard, check_letterbox: bool = True,
                     max_member_bytes: int | None = DEFAULT_MAX_MEMBER_BYTES,
                     max_caption_chars: int | None = DEFAULT_MAX_CAPTION_CHARS) -> list[dict[str, Any]]:
    """All samples of one input shard, one per key (``iter_input_shard``'s chunks in one list)."""
    return [sample for chunk in iter_input_shard(shard, check_letterbox=check_letterbox,
                                                 max_member_bytes=max_member_bytes,
                                                 max_caption_chars=max_caption_chars)
            for sample in chunk]


def iter_input_shard(shard: InputShard, chunk_size: int = 256, check_letterbox: bool = True,
                     max_member_bytes: int | None = DEFAULT_MAX_MEMBER_BYTES,
                     max_caption_chars: int | None = DEFAULT_MAX_CAPTION_CHARS) -> Iterator[list[dict[str, Any]]]:
    """The samples of one input shard, one per key, in chunks of at most ``chunk_size``, streaming its tar:
    a worker holds one chunk's image bytes, whatever the shard's size.

    Two passes over the tar: the first reads its headers only (which keys it holds and how often, where it
    ends), so that every sample carries the shard's total (``shard_total``) and a key the tar holds twice is
    rejected in every copy before any is handed on; the second reads the members. Order: the tar's samples
    in tar order, then keys only the parquet lists (failed downloads), a key the tar cut off, parquet rows
    without a key.
    """
    folder = Folder(shard.folder)
    meta_rows: dict[str, dict[str, Any]] = {}
    copies: Counter = Counter()  # how often each key is listed by the parquet / present in the tar
    parquet_error = None
    keyless_rows: list[int] = []  # parquet rows with no key: rejected under a name no valid key can have
    if shard.has_parquet:
        try:
            parquet_copies: Counter = Counter()
            # ParquetFile, not read_table: the same table without importing pyarrow.dataset (~1 s per process).
            # Metadata only (no image bytes): a few hundred bytes per key.
            with folder.open(f"{shard.name}.parquet") as f:
                rows = pq.ParquetFile(f).read().to_pylist()
            for index, row in enumerate(rows):
                if row.get("key") is not None:
                    key = str(row["key"])
                    parquet_copies[key] += 1
                    meta_rows.setdefault(key, row)
                else:
                    keyless_rows.append(index)
            copies.update(parquet_copies)
        except Exception as error:  # noqa: BLE001 - an unreadable parquet: rely on the tar alone
            _raise_if_storage_fault(error, shard, "parquet")
            parquet_error = f"{type(error).__name__}: {error}"
    # Pass 1: the tar's keys, from its headers (members skipped unread).
    tar_keys: dict[str, None] = {}
    tar_copies: Counter = Counter()
    cut_key = tar_error = None
    if shard.has_tar:
        try:
            reader = TarReader(folder.open(shard.tar_name), max_member_bytes=max_member_bytes,
                               wanted=lambda key, ext: False)
            for tar_sample in reader:
                tar_copies[tar_sample.key] += 1
                tar_keys.setdefault(tar_sample.key)
            _raise_if_storage_fault(reader.exception, shard, "tar")
            tar_error, cut_key = reader.error, reader.cut_key
        except OSError as error:  # the tar could not even be opened
            _raise_if_storage_fault(error, shard, "tar")
            tar_error = f"{type(error).__name__}: {error}"
    for key, n in tar_copies.items():
        copies[key] = max(copies[key], n)
    planned = set(meta_rows) | set(tar_keys) | ({cut_key} if cut_key is not None else set())
    total = len(planned) + len(keyless_rows)
    if parquet_error:
        # Not a per-sample problem: every sample the tar holds is still processed; failed downloads
        # (listed only in the parquet) cannot be known.
        import sys

        print(f"[grit] warning: {shard.name}.parquet unreadable ({parquet_error}); using the tar only", file=sys.stderr)

    def make(key, tar_sample, incomplete, error):
        sample = _sample(shard, key, meta_rows.get(key), tar_sample, incomplete, error, check_letterbox,
                         copies[key], max_member_bytes, max_caption_chars)
        sample["shard_total"] = total
        return sample

    emitted: set[str] = set()
    chunk: list[dict[str, Any]] = []
    # Pass 2: the members, a sample at a time.
    if tar_keys:
        reader = TarReader(folder.open(shard.tar_name), max_member_bytes=max_member_bytes)
        for tar_sample in reader:
            key = tar_sample.key
            if key in emitted or key not in planned:
                continue  # a later copy of a duplicate key (rejected with its first), or a key pass 1 never saw
            emitted.add(key)
            chunk.append(make(key, tar_sample, False, None))
            if len(chunk) >= chunk_size:
                yield chunk
                chunk = []
        _raise_if_storage_fault(reader.exception, shard, "tar")
        if reader.error and not tar_error:
            tar_error = reader.error
        if reader.cut_key is not None and reader.cut_key in planned and cut_key is None:
            cut_key = reader.cut_key
    rest = ([k for k in meta_rows if k not in emitted]
            + [k for k in tar_keys if k not in emitted and k not in meta_rows])
    if cut_key is not None and cut_key not in emitted and cut_key not in rest:
        rest.append(cut_key)
    for key in rest:
        chunk.append(make(key, None, key == cut_key, tar_error))
        if len(chunk) >= chunk_size:
            yield chunk
            chunk = []
    for index in keyless_rows:
        sample = finish(new_sample(key=keyless_row_key(index), source_shard=shard.name), S.BAD_KEY,
                        f"row {index} of {shard.name}.parquet has no key", STAGE)
        sample["shard_total"] = total
        chunk.append(sample)
        if len(chunk) >= chunk_size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def _raise_if_storage_fault(error: BaseException | None, shard: InputShard, what: str) -> None:
    """A read that failed transiently (a reset connection, an object store's 503) is the machine's fault,
    never a broken input: raise ``faults.StorageError`` so the shard stops uncommitted and is retried, instead
    of its samples becoming ``shard_error`` rejects."""
    from grit_pipeline.faults import StorageError, describe, is_transient_storage_error

    if error is not None and is_transient_storage_error(error):
        raise StorageError(f"reading {shard.name}.{what} of {shard.folder} failed: {describe(error)}") from error


def keyless_row_key(index: int) -> str:
    """The key a parquet row without one is rejected under: a leading dot, which no valid key has."""
    return f".parquet-row-{index:06d}"


class MetadataError(ValueError):
    """A metadata value that cannot be used; ``str()`` names the field and why (status ``bad_metadata``)."""


def _sample(shard: InputShard, key: str, row: dict | None, tar_sample, incomplete: bool, tar_error: str | None,
            check_letterbox: bool, copies: int, max_member_bytes: int | None,
            max_caption_chars: int | None) -> dict[str, Any]:
    sample = new_sample(key=key, source_shard=shard.name)
    problem = key_problem(key)
    if problem:
        return finish(sample, S.BAD_KEY, problem, STAGE)
    if copies > 1:
        return finish(sample, S.DUPLICATE_KEY, f"key listed {copies} times in shard {shard.name}; every copy is "
                      f"rejected (which copy is right cannot be told)", STAGE)
    files = dict(tar_sample.files) if tar_sample else {}
    oversize = dict(tar_sample.oversize) if tar_sample else {}
    try:
        meta = {**_tar_json(files, oversize, max_member_bytes), **(row or {})}
        values = _checked_values(meta)
    except MetadataError as error:
        return finish(sample, S.BAD_METADATA, str(error), STAGE)
    sample.update(values)
    caption = meta.get("caption")
    sample["caption"] = caption if isinstance(caption, str) else None
    download_status = meta.get("status")
    if download_status not in (None, "success") and not files and not oversize:
        error = meta.get("error_message") or "no error message"
        return finish(sample, S.DOWNLOAD_ERROR, f"img2dataset status {download_status}: {str(error)[:500]}", STAGE)
    if not files and not oversize:
        if not shard.has_tar:
            return finish(sample, S.SHARD_ERROR, f"shard {shard.name} has no tar file (only its parquet)", STAGE)
        if incomplete or tar_error:
            return finish(sample, S.SHARD_ERROR, f"{shard.tar_name} unreadable before this sample ({tar_error})", STAGE)
        return finish(sample, S.SHARD_ERROR, f"listed as {download_status} in {shard.name}.parquet but absent from the tar", STAGE)
    if "txt" in oversize:
        return finish(sample, S.BAD_CAPTION, f"caption member {key}.txt declares {oversize['txt']} bytes "
                      f"(> max_member_bytes {max_member_bytes}; skipped unread)", STAGE)
    if "txt" in files:
        try:
            caption = files["txt"].decode("utf-8")
        except UnicodeDecodeError:
            return finish(sample, S.BAD_CAPTION, "caption is not valid UTF-8", STAGE)
    if caption is not None and not isinstance(caption, str):
        return finish(sample, S.BAD_CAPTION, f"caption is not text ({type(caption).__name__}: {str(caption)[:80]!r})", STAGE)
    if caption is not None and max_caption_chars is not None and len(caption) > max_caption_chars:
        sample["caption"] = None  # never stored: the row says how long it was
        return finish(sample, S.BAD_CAPTION, f"caption is {len(caption)} characters long "
                      f"(> max_caption_chars {max_caption_chars})", STAGE)
    sample["caption"] = caption
    ext = next((e for e in IMAGE_EXTENSIONS if e in files), None)
    if ext is None:
        big = next((e for e in IMAGE_EXTENSIONS if e in oversize), None)
        if big is not None:
            return finish(sample, S.DECODE_ERROR, f"image member {key}.{big} declares {oversize[big]} bytes "
                          f"(> max_member_bytes {max_member_bytes}; skipped unread)", STAGE)
        return finish(sample, S.DECODE_ERROR, f"no image file in the tar sample (has {sorted(files)})", STAGE)
    sample["image_bytes"] = files[ext]
    sample["image_ext"] = ext
    if check_letterbox:
        from grit_pipeline.images import letterbox_reason

        reason = letterbox_reason(meta)
        if reason:
            return finish(sample, S.LETTERBOXED, reason, STAGE)
    return sample


def _tar_json(files: dict[str, bytes], oversize: dict[str, int], max_member_bytes: int | None) -> dict[str, Any]:
    """The sample's KEY.json as a dict ({} without one); MetadataError when it is unusable."""
    if "json" in oversize:
        raise MetadataError(f"json: member declares {oversize['json']} bytes (> max_member_bytes "
                            f"{max_member_bytes}; skipped unread)")
    raw = files.get("json")
    if raw is None:
        return {}
    if len(raw) > MAX_JSON_BYTES:
        raise MetadataError(f"json: {len(raw)} bytes (limit {MAX_JSON_BYTES})")
    try:
        data = json.loads(raw)
    except RecursionError:
        raise MetadataError(f"json: nested deeper than {MAX_JSON_DEPTH} levels") from None
    except ValueError as error:  # UnicodeDecodeError included
        raise MetadataError(f"json: not valid JSON ({str(error)[:120]})") from None
    if not isinstance(data, dict):
        raise MetadataError(f"json: not an object ({type(data).__name__})")
    if _depth(data) > MAX_JSON_DEPTH:
        raise MetadataError(f"json: nested deeper than {MAX_JSON_DEPTH} levels")
    return data


def _depth(value: Any) -> int:
    deepest, stack = 0, [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, (dict, list)):
            deepest = max(deepest, depth)
            if depth > MAX_JSON_DEPTH:
                return depth
            stack.extend((v, depth + 1) for v in (item.values() if isinstance(item, dict) else item))
    return deepest


def _checked_values(meta: dict[str, Any]) -> dict[str, Any]:
    """The sample fields read from metadata, each validated; MetadataError names the first bad field."""
    id_field = "id" if meta.get("id") is not None else "SAMPLE_ID"
    # LAION's `similarity` column is the CLIP ViT-B/32 image-text similarity.
    b32_field = "clip_similarity_vitb32" if meta.get("clip_similarity_vitb32") is not None else "similarity"
    values = {
        "url": _text("url", meta.get("url")),
        "id": _int(id_field, meta.get(id_field)),
        "clip_similarity_vitb32": _float(b32_field, meta.get(b32_field)),
        "clip_similarity_vitl14": _float("clip_similarity_vitl14", meta.get("clip_similarity_vitl14")),
    }
    for name in ("width", "height", "original_width", "original_height"):
        size = _int(name, meta.get(name))
        if size is not None and size < 0:
            raise MetadataError(f"{name}: negative ({size})")
    status = meta.get("status")
    if status is not None and not isinstance(status, str):
        raise MetadataError(f"status: not text ({type(status).__name__})")
    return values


def _missing(value) -> bool:
    # Parquet/pandas spell a missing number as NaN.
    return value is None or (isinstance(value, float) and math.isnan(value))


def _text(name: str, value) -> str | None:
    if value is None or isinstance(value, str):
        return value
    raise MetadataError(f"{name}: not text ({type(value).__name__}: {str(value)[:80]!r})")


def _int(name: str, value) -> int | None:
    """An integer in int64 range (integral floats and digit strings accepted), None when missing."""
    if _missing(value):
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise MetadataError(f"{name}: not an integer ({type(value).__name__})")
    if isinstance(value, str):
        text = value.strip()
        if not (text.lstrip("+-").isdigit() and len(text) <= 20):
            raise MetadataError(f"{name}: not an integer ({value[:80]!r})")
        value = int(text)
    if isinstance(value, float):
        if not math.isfinite(value) or not value.is_integer():
            raise MetadataError(f"{name}: not a finite integer ({value!r})")
        value = int(value)
    if not INT64[0] <= value <= INT64[1]:
        raise MetadataError(f"{name}: outside the int64 range ({str(value)[:40]})")
    return value


def _float(name: str, value) -> float | None:
    """A finite number, None when missing."""
    if _missing(value):
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise MetadataError(f"{name}: not a number ({type(value).__name__})")
    try:
        number = float(value[:64] if isinstance(value, str) else value)
    except (ValueError, OverflowError):
        raise MetadataError(f"{name}: not a number ({str(value)[:80]!r})") from None
    if not math.isfinite(number):
        raise MetadataError(f"{name}: not finite ({value!r})")
    return number
