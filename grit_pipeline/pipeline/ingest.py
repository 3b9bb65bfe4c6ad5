"""Ingest: img2dataset output folders (``NNNNN.tar`` + ``NNNNN.parquet``) -> pipeline samples.

Every key that either file names becomes exactly one sample. Problems become finished samples with a
status instead of exceptions: failed downloads (``download_error``), a missing or truncated tar
(``shard_error``), a sample without image bytes (``decode_error``), a caption that is not text
(``bad_caption``), an image that img2dataset letterboxed or cropped (``letterboxed``). Keys a truncated
tar never reached and that no parquet lists cannot be known, so they cannot be reported.
"""
from __future__ import annotations

import io
import json
import tarfile
from dataclasses import dataclass
from typing import Any

import pyarrow.parquet as pq

from grit_pipeline import status as S

from .sample import finish, new_sample
from .storage import Folder

IMAGE_EXTENSIONS = ("jpg", "jpeg", "png", "webp", "bmp", "gif", "tif", "tiff")
STAGE = "ingest"


@dataclass(frozen=True)
class InputShard:
    """One input shard: its name (the file stem, e.g. ``00000``) and which of its files exist."""

    name: str
    folder: str
    has_tar: bool
    has_parquet: bool
    has_stats: bool = True  # img2dataset writes NNNNN_stats.json last: without it the download may be unfinished


def list_input_shards(url: str) -> list[InputShard]:
    """The shards of an img2dataset output folder, sorted by name."""
    folder = Folder(url)
    if not folder.exists():
        raise FileNotFoundError(f"input folder not found: {url}")
    names = folder.names()
    tars = {n[: -len(".tar")] for n in names if n.endswith(".tar")}
    parquets = {n[: -len(".parquet")] for n in names if n.endswith(".parquet")}
    stats = {n[: -len("_stats.json")] for n in names if n.endswith("_stats.json")}
    return [InputShard(name, url, name in tars, name in parquets, name in stats) for name in sorted(tars | parquets)]


def read_input_shard(shard: InputShard, check_letterbox: bool = True) -> list[dict[str, Any]]:
    """All samples of one input shard (in the order the files list them)."""
    folder = Folder(shard.folder)
    meta_rows: dict[str, dict[str, Any]] = {}
    parquet_error = None
    if shard.has_parquet:
        try:
            for row in pq.read_table(folder.open(f"{shard.name}.parquet")).to_pylist():
                if row.get("key") is not None:
                    meta_rows.setdefault(str(row["key"]), row)
        except Exception as error:  # noqa: BLE001 - an unreadable parquet: rely on the tar alone
            parquet_error = f"{type(error).__name__}: {error}"
    members: dict[str, dict[str, bytes]] = {}
    incomplete: set[str] = set()
    tar_error = None
    if shard.has_tar:
        tar_error = _read_tar(folder, f"{shard.name}.tar", members, incomplete)

    keys = list(meta_rows) + [k for k in members if k not in meta_rows] + sorted(incomplete - set(members) - set(meta_rows))
    samples = []
    for key in keys:
        meta = dict(meta_rows.get(key) or {})
        files = members.get(key)
        if files and "json" in files:
            try:
                tar_meta = json.loads(files["json"])
                if isinstance(tar_meta, dict):
                    meta = {**tar_meta, **meta}
            except ValueError:
                pass
        samples.append(_sample(shard, key, meta, files, key in incomplete, tar_error, check_letterbox))
    for sample in samples:
        sample["shard_total"] = len(samples)
    if parquet_error:
        # Not a per-sample problem: every sample the tar holds is still processed; failed downloads
        # (listed only in the parquet) cannot be known.
        import sys

        print(f"[grit] warning: {shard.name}.parquet unreadable ({parquet_error}); using the tar only", file=sys.stderr)
    return samples


def _read_tar(folder: Folder, name: str, members: dict, incomplete: set) -> str | None:
    """Read a webdataset tar into ``members[key][ext] = bytes``; return the error that stopped it, if any."""
    current = None
    try:
        with folder.open(name) as raw, tarfile.open(fileobj=raw, mode="r|*") as tar:
            for info in tar:
                if not info.isfile():
                    continue
                key, ext = _split_member(info.name)
                if key is None:
                    continue
                current = key
                data = tar.extractfile(info).read()
                if len(data) != info.size:
                    raise EOFError(f"member {info.name} truncated ({len(data)} of {info.size} bytes)")
                members.setdefault(key, {}).setdefault(ext, data)
                current = None
    except (tarfile.TarError, EOFError, OSError, ValueError) as error:
        if current is not None:
            incomplete.add(current)  # its member was cut off: the sample is not complete
            members.pop(current, None)
        return f"{type(error).__name__}: {error}"
    return None


def _split_member(path: str) -> tuple[str | None, str]:
    """webdataset convention: key = path up to the first '.' of the file name; ext = the rest (lower case)."""
    directory, _, base = path.rpartition("/")
    if "." not in base or base.startswith("."):
        return None, ""
    stem, ext = base.split(".", 1)
    return (f"{directory}/{stem}" if directory else stem), ext.lower()


def _sample(shard: InputShard, key: str, meta: dict, files: dict | None, incomplete: bool,
            tar_error: str | None, check_letterbox: bool) -> dict[str, Any]:
    sample = new_sample(
        key=key,
        source_shard=shard.name,
        url=_text(meta.get("url")),
        id=_int(meta.get("id", meta.get("SAMPLE_ID"))),
        # LAION's `similarity` column is the CLIP ViT-B/32 image-text similarity.
        clip_similarity_vitb32=_float(meta.get("clip_similarity_vitb32", meta.get("similarity"))),
        clip_similarity_vitl14=_float(meta.get("clip_similarity_vitl14")),
    )
    caption = meta.get("caption")
    sample["caption"] = caption if isinstance(caption, str) else None
    download_status = meta.get("status")
    if download_status not in (None, "success") and not files:
        error = meta.get("error_message") or "no error message"
        return finish(sample, S.DOWNLOAD_ERROR, f"img2dataset status {download_status}: {error}", STAGE)
    if not files:
        if not shard.has_tar:
            return finish(sample, S.SHARD_ERROR, f"shard {shard.name} has no tar file (only its parquet)", STAGE)
        if incomplete or tar_error:
            return finish(sample, S.SHARD_ERROR, f"{shard.name}.tar unreadable before this sample ({tar_error})", STAGE)
        return finish(sample, S.SHARD_ERROR, f"listed as {download_status} in {shard.name}.parquet but absent from the tar", STAGE)
    if "txt" in files:
        try:
            caption = files["txt"].decode("utf-8")
        except UnicodeDecodeError:
            return finish(sample, S.BAD_CAPTION, "caption is not valid UTF-8", STAGE)
    if caption is not None and not isinstance(caption, str):
        return finish(sample, S.BAD_CAPTION, f"caption is not text ({type(caption).__name__}: {str(caption)[:80]!r})", STAGE)
    sample["caption"] = caption
    ext = next((e for e in IMAGE_EXTENSIONS if e in files), None)
    if ext is None:
        return finish(sample, S.DECODE_ERROR, f"no image file in the tar sample (has {sorted(files)})", STAGE)
    sample["image_bytes"] = files[ext]
    sample["image_ext"] = ext
    if check_letterbox:
        from grit_pipeline.images import letterbox_reason

        reason = letterbox_reason(meta)
        if reason:
            return finish(sample, S.LETTERBOXED, reason, STAGE)
    return sample


def _text(value) -> str | None:
    return value if isinstance(value, str) else (None if value is None else str(value))


def _int(value) -> int | None:
    try:
        return None if value is None or isinstance(value, bool) else int(value)
    except (TypeError, ValueError):
        return None


def _float(value) -> float | None:
    try:
        return None if value is None else float(value)
    except (TypeError, ValueError):
        return None
