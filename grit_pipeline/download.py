"""The ``download`` stage: fetch a LAION/COYO url list into img2dataset webdataset shards, GRIT-safe.

The output folder is exactly what ``grit run --input`` reads: ``NNNNN.tar`` (``KEY.jpg``, ``KEY.txt``,
``KEY.json``), ``NNNNN.parquet`` (one row per url, successes and failures, with img2dataset's ``status`` and
``error_message``) and ``NNNNN_stats.json`` (written last for each finished shard).

What makes the settings GRIT-safe:

* ``resize_mode="keep_ratio"``: the image is scaled, never letterboxed (``border``) or cropped
  (``center_crop``), so a box normalised to the stored image is a box in the original picture too.
* every stored image is re-encoded (``skip_reencode=False``). img2dataset decodes with OpenCV's
  ``IMREAD_UNCHANGED`` (EXIF orientation ignored) and a re-encode drops EXIF, so the stored bytes, the
  ``width``/``height`` img2dataset records and what the detector and the trainer decode all agree.
  Keeping original bytes would leave EXIF-rotated JPEGs whose decoded orientation depends on the reader.
* the source's id, url and caption columns are kept, renamed to the GrIT-20M names (``id``, ``url``,
  ``caption``), plus the CLIP similarities when the source has them (COYO ``clip_similarity_vitb32`` /
  ``clip_similarity_vitl14``; LAION ``similarity``, a CLIP ViT-B/32 score, -> ``clip_similarity_vitb32``).

To rename columns, the url list is first rewritten as normalised parquet files (only the kept columns)
under ``OUTPUT/_tmp/grit_url_list/``; img2dataset reads those and the stage deletes them at the end.
The shard numbering is img2dataset's own, so rerunning the same command resumes: shards with a
``NNNNN_stats.json`` are skipped (``overwrite=True`` starts again).
"""
from __future__ import annotations

import json
import math
import os
import posixpath
import signal
from collections import Counter
from dataclasses import asdict, dataclass, field
from typing import Any, Sequence

import pyarrow as pa

# img2dataset stores these itself; a kept source column may not use these names.
IMG2DATASET_RESERVED = frozenset(
    {"key", "caption", "url", "width", "height", "original_width", "original_height", "status",
     "error_message", "exif", "md5", "sha256", "sha512"}
)
INPUT_FORMATS = ("parquet", "csv", "tsv", "jsonl")
NORMALISED_DIR = "_tmp/grit_url_list"


class DownloadInputError(ValueError):
    """The url list cannot be used: unreadable file, unknown format, missing or unusable column."""


@dataclass(frozen=True)
class SourcePreset:
    """Column names of a url-list source. ``id_cols``: the first one present becomes ``id``."""

    url_col: str
    caption_col: str
    id_cols: tuple[str, ...]
    # optional source column -> output column, kept when the source has it
    optional: tuple[tuple[str, str], ...] = ()


SOURCES: dict[str, SourcePreset] = {
    # LAION-400M has SAMPLE_ID; LAION-2B(-en) has no id column but an int64 per-row ``hash``.
    "laion": SourcePreset("URL", "TEXT", ("SAMPLE_ID", "hash"), (("similarity", "clip_similarity_vitb32"),)),
    "coyo": SourcePreset(
        "url", "text", ("id",),
        (("clip_similarity_vitb32", "clip_similarity_vitb32"), ("clip_similarity_vitl14", "clip_similarity_vitl14")),
    ),
    "custom": SourcePreset(
        "url", "caption", ("id",),
        (("clip_similarity_vitb32", "clip_similarity_vitb32"), ("clip_similarity_vitl14", "clip_similarity_vitl14")),
    ),
}


@dataclass
class DownloadConfig:
    """img2dataset settings; each field is one setting of ``grit download`` (its flag is generated from the
    field, ``grit_pipeline.config_flags``). Defaults are documented in docs/download.md."""

    image_size: int = field(default=512, metadata={"help": "shorter side after keep_ratio resizing, downscale only"})
    resize_only_if_bigger: bool = field(default=True, metadata={
        "flag": "--upscale", "help": "also upscale images smaller than --image-size"})
    encode_format: str = field(default="jpg", metadata={"cli": False})
    encode_quality: int = field(default=95, metadata={"help": "JPEG quality of the stored images"})
    processes: int = field(default=0, metadata={"help": "download processes (0: one per CPU core)"})
    threads: int = field(default=64, metadata={"help": "download threads per process"})
    timeout: float = field(default=10.0, metadata={"help": "seconds per request"})
    retries: int = field(default=1, metadata={"help": "extra attempts per failed url"})
    shard_size: int = field(default=10_000, metadata={"help": "urls per output shard"})
    min_image_size: int = field(default=0, metadata={
        "help": "reject images whose shorter side is smaller (0: keep all)"})
    max_aspect_ratio: float = field(default=float("inf"), metadata={"cli": False})
    user_agent_token: str | None = field(default=None, metadata={
        "help": "token added to the User-Agent (site owners can then opt out by name)"})
    overwrite: bool = field(default=False, metadata={
        "help": "delete what is in --output and start again (default: resume, skipping finished shards)"})


@dataclass(frozen=True)
class ResolvedColumns:
    """Which source column becomes which output column, for one url list."""

    url: str
    caption: str
    id: str | None
    extra: tuple[tuple[str, str], ...] = ()  # (source, output)

    def output_additional_columns(self) -> list[str]:
        return (["id"] if self.id else []) + [out for _, out in self.extra]


@dataclass
class DownloadSummary:
    output: str
    shards_expected: int
    shards_done: int
    failed_shards: list[int] = field(default_factory=list)
    count: int = 0
    successes: int = 0
    failed_to_download: int = 0
    failed_to_resize: int = 0
    top_errors: list[tuple[str, int]] = field(default_factory=list)

    @property
    def complete(self) -> bool:
        return not self.failed_shards

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "complete": self.complete}


# ---------------------------------------------------------------------------------------------------
# reading and normalising the url list


def list_input_files(path: str, input_format: str = "auto") -> list[str]:
    """The url-list files at ``path`` (one file, or a folder of files of one format), sorted."""
    import fsspec

    try:
        fs, root = fsspec.core.url_to_fs(path)
    except Exception as error:  # unknown protocol, missing filesystem package, bad URL
        raise DownloadInputError(f"cannot open url list {path!r}: {error}") from error
    if not fs.exists(root):
        raise DownloadInputError(f"url list {path!r} does not exist")
    if fs.isdir(root):
        formats = INPUT_FORMATS if input_format == "auto" else (input_format,)
        files = sorted(f for f in fs.find(root, maxdepth=1) if _format_of(f, "auto", strict=False) in formats)
        if not files:
            raise DownloadInputError(f"no {'/'.join(formats)} files in folder {path!r}")
        found = {_format_of(f, input_format) for f in files}
        if len(found) > 1:
            raise DownloadInputError(f"folder {path!r} mixes formats {sorted(found)}; pass --input-format")
        return [fs.unstrip_protocol(f) if "://" in path else f for f in files]
    return [path]


def _format_of(path: str, input_format: str, strict: bool = True) -> str | None:
    if input_format != "auto":
        if input_format not in INPUT_FORMATS:
            raise DownloadInputError(f"unknown input format {input_format!r}; use one of {', '.join(INPUT_FORMATS)}")
        return input_format
    name = path.lower()
    for suffix in (".gz", ".bz2", ".zst"):
        if name.endswith(suffix):
            name = name[: -len(suffix)]
    ext = posixpath.splitext(name)[1].lstrip(".")
    ext = {"json": "jsonl", "ndjson": "jsonl"}.get(ext, ext)
    if ext in INPUT_FORMATS:
        return ext
    if strict:
        raise DownloadInputError(
            f"cannot tell the format of {path!r} from its name; pass --input-format ({', '.join(INPUT_FORMATS)})"
        )
    return None


def read_url_table(path: str, input_format: str = "auto", columns: Any = None) -> pa.Table:
    """Read one url-list file (parquet, csv, tsv, jsonl; local or fsspec URL) as an Arrow table.

    ``columns``: None for all, or a callable ``(column_names) -> ResolvedColumns`` so that a parquet
    file is read with only the columns that are kept. CSV/TSV cells are read as strings (a caption
    "1984" stays text; ids and scores are parsed later); empty cells are null.
    """
    import fsspec
    import pyarrow.csv as pa_csv
    import pyarrow.parquet as pq

    fmt = _format_of(path, input_format)

    def open_stream():
        return fsspec.open(path, "rb", compression="infer")

    try:
        if fmt == "parquet":
            with open_stream() as stream:
                parquet = pq.ParquetFile(stream)
                names = parquet.schema_arrow.names
                wanted = None
                if columns is not None:
                    resolved = columns(names)
                    wanted = [resolved.url, resolved.caption] + ([resolved.id] if resolved.id else [])
                    wanted += [s for s, _ in resolved.extra]
                return parquet.read(columns=wanted)
        if fmt in ("csv", "tsv"):
            parse = pa_csv.ParseOptions(delimiter="," if fmt == "csv" else "\t", newlines_in_values=True)
            with open_stream() as stream:
                names = pa_csv.open_csv(stream, parse_options=parse).schema.names
            convert = pa_csv.ConvertOptions(column_types={n: pa.string() for n in names}, strings_can_be_null=True)
            with open_stream() as stream:
                return pa_csv.read_csv(stream, parse_options=parse, convert_options=convert)
        with open_stream() as stream:
            return _read_jsonl(stream, path)
    except DownloadInputError:
        raise
    except FileNotFoundError as error:
        raise DownloadInputError(f"url list {path!r} does not exist") from error
    except (pa.ArrowException, OSError, ValueError, EOFError) as error:
        raise DownloadInputError(f"cannot read {path!r} as {fmt}: {error}") from error


def _read_jsonl(stream, path: str) -> pa.Table:
    """JSON lines -> table. A column whose values mix types (a number among text captions) is kept
    as text, so one odd row cannot make the whole file unreadable."""
    rows = []
    for number, line in enumerate(stream, start=1):
        line = line.strip()
        if not line:
            continue
        try:
            row = json.loads(line)
        except ValueError as error:
            raise DownloadInputError(f"{path}: line {number} is not JSON: {error}") from error
        if not isinstance(row, dict):
            raise DownloadInputError(f"{path}: line {number} is not a JSON object")
        rows.append(row)
    names = list(dict.fromkeys(name for row in rows for name in row))
    arrays = {}
    for name in names:
        values = [row.get(name) for row in rows]
        kinds = {type(v) for v in values if v is not None}
        if kinds <= {int} or kinds <= {int, float} or kinds <= {str} or kinds <= {bool}:
            arrays[name] = pa.array(values)
        else:
            arrays[name] = pa.array([v if v is None or isinstance(v, str) else json.dumps(v) for v in values],
                                    pa.string())
    return pa.table(arrays)


def resolve_columns(
    available: Sequence[str],
    source: str = "laion",
    url_col: str | None = None,
    caption_col: str | None = None,
    id_col: str | None = None,
    keep_cols: Sequence[str] = (),
    where: str = "url list",
) -> ResolvedColumns:
    """Pick the url/caption/id/extra columns for ``source``, explicit flags winning over the preset.

    ``id_col="none"`` (or "") stores no id. A missing required column raises ``DownloadInputError``
    naming the columns that are there.
    """
    if source not in SOURCES:
        raise DownloadInputError(f"unknown source {source!r}; use one of {', '.join(SOURCES)}")
    preset = SOURCES[source]
    names = list(available)
    have = set(names)

    def require(column: str, role: str, flag: str) -> str:
        if column not in have:
            raise DownloadInputError(
                f"{where}: no {role} column {column!r} (source {source!r}); columns are {names}; "
                f"pass {flag} NAME"
            )
        return column

    url = require(url_col or preset.url_col, "url", "--url-col")
    caption = require(caption_col or preset.caption_col, "caption", "--caption-col")
    if id_col is not None:
        id_source = None if id_col.lower() in ("", "none") else require(id_col, "id", "--id-col")
    else:
        id_source = next((c for c in preset.id_cols if c in have), None)
    used = {url, caption, id_source}
    extra: list[tuple[str, str]] = [(s, o) for s, o in preset.optional if s in have and s not in used]
    for column in keep_cols:
        require(column, "kept", "--keep-cols")
        if column in used or any(column == s for s, _ in extra):
            continue
        if column in IMG2DATASET_RESERVED or column == "id":
            raise DownloadInputError(
                f"{where}: cannot keep column {column!r}: img2dataset or GRIT uses that name itself"
            )
        extra.append((column, column))
    return ResolvedColumns(url=url, caption=caption, id=id_source, extra=tuple(extra))


def normalise_url_table(table: pa.Table, columns: ResolvedColumns, where: str = "url list") -> pa.Table:
    """The kept columns under their output names: url, caption (strings), id (int64), extras."""
    import pyarrow.compute as pc

    def as_type(name: str, target: pa.DataType, role: str) -> pa.ChunkedArray:
        column = table.column(name)
        if column.type == target:
            return column
        try:
            return pc.cast(column, target)
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as error:
            hint = " (GrIT-20M ids are int64; pass --id-col none to store no id)" if role == "id" else ""
            raise DownloadInputError(
                f"{where}: {role} column {name!r} of type {column.type} cannot be read as {target}{hint}: {error}"
            ) from error

    arrays = {"url": only_http(as_type(columns.url, pa.string(), "url")),
              "caption": as_type(columns.caption, pa.string(), "caption")}
    if columns.id:
        arrays["id"] = as_type(columns.id, pa.int64(), "id")
    for source_name, output_name in columns.extra:
        column = table.column(source_name)
        if output_name.startswith("clip_similarity"):
            column = as_type(source_name, pa.float64(), output_name)
        arrays[output_name] = column
    return pa.table(arrays)


# Prefix of a url that is not fetched: img2dataset's urllib knows no such scheme, so the row becomes a
# failed download ("unknown url type: not-http-or-https") that keeps the original url after the prefix.
REFUSED_SCHEME = "not-http-or-https"


def only_http(urls: pa.ChunkedArray) -> pa.ChunkedArray:
    """Urls with the http/https scheme unchanged; any other (``file:``, ``data:``, ``ftp:``) prefixed with
    ``REFUSED_SCHEME:`` so it fails instead of copying local files or inline data into the shards."""
    import urllib.request

    import pyarrow.compute as pc

    plain = pc.match_substring_regex(pc.utf8_lower(pc.utf8_trim_whitespace(urls)), r"^https?://[^<>]*$")
    if pc.all(pc.fill_null(plain, True)).as_py():
        return urls  # the usual case: no url needs a closer look

    def checked(url: str | None, looks_http: bool | None) -> str | None:
        if url is None or looks_http:
            return url
        try:
            scheme = urllib.request.Request(url).type  # what img2dataset's urllib would use
        except ValueError:
            return url  # no scheme at all: urllib refuses it itself
        return url if scheme in ("http", "https") else f"{REFUSED_SCHEME}:{url}"

    return pa.chunked_array([pa.array([checked(u, h) for u, h in zip(urls.to_pylist(), plain.to_pylist())],
                                      pa.string())])


# ---------------------------------------------------------------------------------------------------
# running img2dataset


def img2dataset_options(config: DownloadConfig, url_list: str, output: str,
                        additional_columns: Sequence[str]) -> dict[str, Any]:
    """The keyword arguments for ``img2dataset.download``: the GRIT-safe settings live here only."""
    processes = config.processes or os.cpu_count() or 1
    return dict(
        url_list=url_list,
        input_format="parquet",
        url_col="url",
        caption_col="caption",
        save_additional_columns=list(additional_columns) or None,
        output_folder=output,
        output_format="webdataset",
        resize_mode="keep_ratio",             # never border / center_crop: boxes must stay valid
        resize_only_if_bigger=config.resize_only_if_bigger,
        image_size=config.image_size,
        skip_reencode=False,                  # see the module docstring (EXIF orientation)
        encode_format=config.encode_format,
        encode_quality=config.encode_quality,
        processes_count=processes,
        thread_count=config.threads,
        timeout=config.timeout,
        retries=config.retries,
        number_sample_per_shard=config.shard_size,
        min_image_size=config.min_image_size,
        max_aspect_ratio=config.max_aspect_ratio,
        user_agent_token=config.user_agent_token,
        # Resume: img2dataset skips shards that have NNNNN_stats.json. ``overwrite`` is done by
        # ``download`` removing the folder first (img2dataset's own "overwrite" would delete our url list).
        incremental_mode="incremental",
        distributor="multiprocessing",
        enable_wandb=False,                   # no network calls besides the image urls
        extract_exif=False,                   # re-encoded images carry no EXIF anyway
        compute_hash="sha256",
    )


def _quiet_third_party_network() -> None:
    # img2dataset imports albumentations (which checks PyPI for updates on import) and wandb.
    # Set before the import; spawned worker processes inherit the environment.
    os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
    os.environ.setdefault("WANDB_MODE", "disabled")
    os.environ.setdefault("WANDB_SILENT", "true")


def download(
    input: str,
    output: str,
    source: str = "laion",
    url_col: str | None = None,
    caption_col: str | None = None,
    id_col: str | None = None,
    keep_cols: Sequence[str] = (),
    input_format: str = "auto",
    config: DownloadConfig | None = None,
) -> DownloadSummary:
    """Download the url list at ``input`` into webdataset shards at ``output``; returns the counts.

    Raises ``DownloadInputError`` before any download starts when the list cannot be used.
    Failed urls are not errors: they are rows with ``status != "success"`` in ``NNNNN.parquet``.
    """
    import fsspec
    import pyarrow.parquet as pq

    config = config or DownloadConfig()
    if config.image_size <= 0 or config.shard_size <= 0 or config.threads <= 0 or config.timeout <= 0:
        raise DownloadInputError("image size, shard size, threads and timeout must be positive")
    if config.retries < 0 or config.processes < 0:
        raise DownloadInputError("retries and processes must be >= 0")

    files = list_input_files(input, input_format)
    fs, out_root = fsspec.core.url_to_fs(output)
    normalised_root = posixpath.join(out_root, NORMALISED_DIR)
    if fs.exists(normalised_root):
        fs.rm(normalised_root, recursive=True)  # left by an interrupted run
    fs.makedirs(normalised_root, exist_ok=True)
    try:
        # One file at a time: a LAION folder is 100+ files of a million rows each.
        kept: list[str] | None = None
        total_rows = expected_shards = 0
        for index, path in enumerate(files):
            def resolve(names, where=path):
                return resolve_columns(names, source, url_col, caption_col, id_col, keep_cols, where=where)

            table = read_url_table(path, input_format, columns=resolve)
            columns = resolve(table.column_names)
            if kept is not None and columns.output_additional_columns() != kept:
                raise DownloadInputError(
                    f"{path}: keeps columns {columns.output_additional_columns()} but {files[0]} keeps "
                    f"{kept}; give all files the same columns"
                )
            kept = columns.output_additional_columns()
            table = normalise_url_table(table, columns, where=path)
            total_rows += table.num_rows
            expected_shards += math.ceil(table.num_rows / config.shard_size)
            with fs.open(posixpath.join(normalised_root, f"{index:05d}.parquet"), "wb") as stream:
                pq.write_table(table, stream)
            del table
        if total_rows == 0:
            raise DownloadInputError(f"url list {input!r} has no rows")
        if config.overwrite:
            for entry in fs.ls(out_root, detail=False):
                if posixpath.basename(entry.rstrip("/")) != "_tmp":
                    fs.rm(entry, recursive=True)

        _quiet_third_party_network()
        import img2dataset

        list_location = fs.unstrip_protocol(normalised_root) if "://" in output else normalised_root
        # img2dataset installs a SIGINT handler that exits with status 0; an interrupted download must
        # not look finished, and the caller's handler comes back afterwards.
        previous_sigint = signal.getsignal(signal.SIGINT)
        try:
            img2dataset.download(**img2dataset_options(config, list_location, output, kept or []))
        except SystemExit as stop:
            raise KeyboardInterrupt("download interrupted; rerun the same command to resume") from stop
        finally:
            signal.signal(signal.SIGINT, previous_sigint)
    finally:
        if fs.exists(normalised_root):
            fs.rm(normalised_root, recursive=True)
        tmp_root = posixpath.join(out_root, "_tmp")
        if fs.exists(tmp_root) and not fs.ls(tmp_root):
            fs.rm(tmp_root, recursive=True)
    return summarise(output, expected_shards)


def summarise(output: str, expected_shards: int | None = None) -> DownloadSummary:
    """Totals over the ``NNNNN_stats.json`` files img2dataset wrote for finished shards."""
    import fsspec

    fs, root = fsspec.core.url_to_fs(output)
    totals = Counter()
    errors: Counter = Counter()
    done: set[int] = set()
    for path in sorted(fs.glob(posixpath.join(root, "*_stats.json"))):
        name = posixpath.basename(path)
        try:
            shard = int(name.split("_")[0])
            with fs.open(path, "r") as stream:
                stats = json.load(stream)
        except (ValueError, OSError):
            continue  # not an img2dataset stats file
        done.add(shard)
        for field_name in ("count", "successes", "failed_to_download", "failed_to_resize"):
            totals[field_name] += int(stats.get(field_name, 0))
        for message, n in (stats.get("status_dict") or {}).items():
            if message != "success":
                errors[message] += int(n)
    expected = expected_shards if expected_shards is not None else (max(done) + 1 if done else 0)
    return DownloadSummary(
        output=output,
        shards_expected=expected,
        shards_done=len(done & set(range(expected))),
        failed_shards=sorted(set(range(expected)) - done),
        count=totals["count"],
        successes=totals["successes"],
        failed_to_download=totals["failed_to_download"],
        failed_to_resize=totals["failed_to_resize"],
        top_errors=errors.most_common(10),
    )
