"""What every training source is: files to read, raw items read from them, and the sequences an item becomes.

A source (one module per kind in ``kosmos/sources/``) subclasses :class:`Source` and defines

- ``list_files()``: its files (shards, jsonl, parquet...), checked before training starts;
- ``read(path, counters)``: the raw items of one file, in file order (a broken file is counted, not fatal);
- ``units(raw, epoch, counters)``: what one raw item becomes: a list of encoded rows, or for packed sources (text)
  of pieces that ``pack`` joins into rows; raises :class:`SampleError` for an item to skip;
- optionally ``pack(tagged_units)``: rows from a stream of ``(unit, tag)`` (default: each unit is a row).

``kosmos.stream.SourceStream`` does the rest for every source alike: file order per epoch, the split by rank
and loader worker, the shuffle buffer, resume positions and batching.
"""
from __future__ import annotations

import random
import zlib
from dataclasses import dataclass, field
from typing import Any, Iterable, Iterator


class SampleError(ValueError):
    """A sample that cannot be trained on; ``reason`` is the counter it is added to."""

    def __init__(self, reason: str, message: str):
        self.reason = reason
        super().__init__(f"{reason}: {message}")


class SourceError(ValueError):
    """A source that cannot be used at all (missing, empty, unreadable, wrong kind): one line, before training."""


def decode_image(data: bytes, what: str = "image"):
    """Bytes -> PIL RGB image; raises ``SampleError('decode_error')`` on corrupt data."""
    import io

    from PIL import Image

    try:
        image = Image.open(io.BytesIO(data))
        image.load()
        return image.convert("RGB")
    except Exception as error:  # PIL raises many types on corrupt data
        raise SampleError("decode_error", f"{what}: {error}") from None


def count(counters: dict[str, int], reason: str, n: int = 1) -> None:
    counters[reason] = counters.get(reason, 0) + n


def sample_rng(seed: int, key: str, epoch: int) -> random.Random:
    """Per-sample RNG: the same sample in the same epoch always makes the same choices (exact resume)."""
    return random.Random(zlib.crc32(f"{seed}/{epoch}/{key}".encode()))


@dataclass
class SourceSpec:
    """One entry of the mixture: a kind of source, where its data is, and its rows per step."""

    kind: str
    paths: list[str]
    batch_size: int | None = None
    name: str | None = None

    @property
    def label(self) -> str:
        return self.name or self.kind


class Source:
    """Base class of the training sources (see the module docstring)."""

    kind = "?"
    shuffle_units = True  # items are shuffled in a buffer (False keeps file order, e.g. for held-out scoring)

    def __init__(self, spec: SourceSpec, encoder, config):
        self.spec, self.encoder, self.config = spec, encoder, config

    def list_files(self) -> list[str]:
        raise NotImplementedError

    def read(self, path: str, counters: dict[str, int]) -> Iterator[dict[str, Any]]:
        raise NotImplementedError

    def units(self, raw: dict[str, Any], epoch: int, counters: dict[str, int]) -> list[Any]:
        """What one raw item becomes (``counters``: problems inside it that do not skip it, by reason)."""
        raise NotImplementedError

    def pack(self, tagged: Iterable[tuple[Any, Any]]) -> Iterator[tuple[dict, Any]]:
        """Rows from ``(unit, tag)`` pairs; the tag of a row is the tag of the last unit it holds."""
        yield from tagged

    def texts(self, raw: dict[str, Any]) -> list[str]:
        """The plain text of a raw item (to learn a tokenizer from); nothing for an unreadable item."""
        return []

    def sample_texts(self, limit: int) -> Iterator[str]:
        """Up to ``limit`` texts, files in order."""
        n = 0
        for path in self.list_files():
            for raw in self.read(path, {}):
                for text in self.texts(raw):
                    if isinstance(text, str) and text.strip():
                        yield text
                        n += 1
                        if n >= limit:
                            return

    def check(self) -> None:
        """Raise :class:`SourceError` (one line) unless the source lists files and its first files read."""
        files = self.list_files()
        if not files:
            raise SourceError(f"{self.spec.label}: no files in {', '.join(self.spec.paths)}")
        for path in files[:3]:
            for _ in self.read(path, {}):
                return
        raise SourceError(f"{self.spec.label}: nothing readable in {files[0]}"
                          f"{f' and {min(len(files), 3) - 1} more' if len(files) > 1 else ''}")


@dataclass
class ReaderState:
    """Where one reader (rank x loader worker) of one source is in its endless stream.

    ``position`` counts raw items taken from the shuffled stream (all epochs); ``offset`` how many units of the
    item at ``position`` are already in emitted rows (a document can become several rows)."""

    position: int = 0
    offset: int = 0
    epoch: int = 0
    skipped: dict[str, int] = field(default_factory=dict)
