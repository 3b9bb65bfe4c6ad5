"""Files of the training sources: listing (folders, globs, brace patterns, URLs) and reading tar shards."""
from __future__ import annotations

import glob
import os
import sys
from typing import Any, Iterable, Iterator

from grit_pipeline.tar_reader import DEFAULT_MAX_MEMBER_BYTES, TarReader


def warn(message: str) -> None:
    print(f"kosmos data: {message}", file=sys.stderr, flush=True)


def expand_paths(specs: str | Iterable[str], patterns: tuple[str, ...] = ("*.tar",), what: str = ".tar shards") -> list[str]:
    """File list from directories (their files matching ``patterns``; a grit build's tars are in its
    ``_webdataset/``), globs, brace patterns (``{00000..00009}``), comma separated lists, local files and remote
    URLs (http(s)://, s3://, gs://, pipe:)."""
    import braceexpand

    if isinstance(specs, str):
        specs = [specs]
    urls: list[str] = []
    for spec in specs:
        for part in str(spec).split(","):
            part = part.strip()
            if not part:
                continue
            for item in braceexpand.braceexpand(part):
                if "://" in item or item.startswith("pipe:"):
                    urls.append(item)
                elif os.path.isdir(item):
                    found = sorted({p for pattern in patterns for p in glob.glob(os.path.join(item, pattern))})
                    if not found:  # a grit build keeps its tars in a layout sub-folder
                        from grit_pipeline.pipeline.layout import TARS_DIR

                        found = sorted({p for pattern in patterns
                                        for p in glob.glob(os.path.join(item, TARS_DIR, pattern))})
                    urls.extend(found)
                elif any(c in item for c in "*?["):
                    urls.extend(sorted(glob.glob(item)))
                elif os.path.exists(item):
                    urls.append(item)
                else:
                    raise FileNotFoundError(f"no file or directory at {item!r}")
    if not urls:
        raise FileNotFoundError(f"no {what} found in {list(specs)!r}")
    return urls


def expand_urls(specs: str | Iterable[str]) -> list[str]:
    """Tar shard list (see :func:`expand_paths`)."""
    return expand_paths(specs)


def raw_samples(url: str, counters: dict[str, int] | None = None,
                max_member_bytes: int | None = DEFAULT_MAX_MEMBER_BYTES) -> Iterator[dict[str, Any]]:
    """Samples of one tar shard as ``{"__key__", "__url__", ext: bytes}``, read by grit's one tar reader
    (``grit_pipeline.tar_reader``: webdataset's key rules, URLs opened with webdataset's ``gopen``,
    members over ``max_member_bytes`` skipped unread and counted as ``member_too_large``). A shard that
    cannot be opened, a broken header or a member cut short (truncated download) ends the shard: it is
    counted as ``shard_error`` and the incomplete sample is dropped; samples read before it are kept."""
    counters = counters if counters is not None else {}
    reader = TarReader(url, max_member_bytes=max_member_bytes)
    for sample in reader:
        if sample.oversize:
            counters["member_too_large"] = counters.get("member_too_large", 0) + len(sample.oversize)
        if sample.files:
            yield {"__key__": sample.key, "__url__": url, **sample.files}
    if reader.error:
        counters["shard_error"] = counters.get("shard_error", 0) + 1
        warn(f"shard {url}: {reader.error}")
