"""``text``: text corpora, packed "full-sentence" as the released Kosmos loader packs them.

Files: ``.jsonl`` / ``.jsonl.gz`` / ``.jsonl.zst`` (one json document per line, its text in ``text_column``,
default ``text``), ``.parquet`` (the same column, read in record batches) and ``.txt`` (documents separated by an
empty line). Everything is streamed: a corpus file can be many GB and is never read whole; a json line or a
``.txt`` line longer than ``max_document_bytes`` is skipped unread (``document_too_large``).

Packing: a document's text is split into lines (newlines; empty lines dropped); every line becomes its tokens
followed by ``</line>``; rows are ``<s>`` then whole lines taken in order from one or more documents, up to
``sequence_length`` tokens; a line is never split across rows (one longer than a whole row is cut); a document's
end is marked ``</s>`` (a row full before its document ends has no ``</s>``; the document goes on in the next row).
Every line is a training target (``<s>`` is not).
"""
from __future__ import annotations

import gzip
import io
import json
from typing import Any, Iterable, Iterator

from kosmos.sequence import IGNORE
from kosmos.sources.base import SampleError, Source, SourceError, count
from kosmos.sources.grounded import control_token_in

TEXT_PATTERNS = ("*.jsonl", "*.jsonl.gz", "*.jsonl.zst", "*.json.gz", "*.parquet", "*.txt")


def _open_binary(path: str):
    if path.endswith(".gz"):
        return gzip.open(path, "rb")
    if path.endswith(".zst"):
        import zstandard

        return io.BufferedReader(zstandard.ZstdDecompressor().stream_reader(open(path, "rb"), closefd=True))
    return open(path, "rb")


def bounded_lines(stream, max_bytes: int, counters: dict[str, int]) -> Iterator[bytes]:
    """Lines of a binary stream, each read with a size limit: a line longer than ``max_bytes`` is skipped
    (read through in chunks, never held whole) and counted as ``document_too_large``."""
    while True:
        line = stream.readline(max_bytes + 1)
        if not line:
            return
        if len(line) > max_bytes and not line.endswith(b"\n"):
            count(counters, "document_too_large")
            while line and not line.endswith(b"\n"):  # skip the rest of the over-long line
                line = stream.readline(1 << 20)
            continue
        yield line


def _file_error(counters: dict[str, int], path: str, error: Exception) -> None:
    from kosmos.shards import warn

    count(counters, "file_error")
    warn(f"{path}: {' '.join(str(error).split())[:200]}")


def json_lines(path: str, counters: dict[str, int], max_bytes: int) -> Iterator[tuple[int, Any]]:
    """``(line number, parsed json)`` of a jsonl file (plain, .gz or .zst), streamed with a per-line size limit;
    unparsable lines counted (``bad_json``), an unreadable or truncated file counted (``file_error``)."""
    try:
        handle = _open_binary(path)
    except OSError as error:
        _file_error(counters, path, error)
        return
    with handle:
        try:
            for index, line in enumerate(bounded_lines(handle, max_bytes, counters)):
                if not line.strip():
                    continue
                try:
                    yield index, json.loads(line)
                except (ValueError, UnicodeDecodeError, RecursionError):
                    count(counters, "bad_json")
        except (OSError, EOFError) as error:  # a truncated .gz/.zst ends the file; what was read is kept
            _file_error(counters, path, error)


def parquet_batches(path: str, columns: list[str], counters: dict[str, int], what: str,
                    batch_size: int = 256) -> Iterator[list[list[Any]]]:
    """Record batches of ``columns`` as Python lists (one list per column); a file that cannot be opened is
    counted (``file_error``), a missing column is a one-line ``SourceError``."""
    import pyarrow.parquet as pq

    try:
        parquet = pq.ParquetFile(path)
    except Exception as error:  # noqa: BLE001 - pyarrow raises several types for a bad file
        _file_error(counters, path, error)
        return
    missing = [c for c in columns if c not in parquet.schema_arrow.names]
    if missing:
        raise SourceError(f"{path}: not {what}: no column(s) {missing} (columns: {parquet.schema_arrow.names})")
    for batch in parquet.iter_batches(columns=columns, batch_size=batch_size):
        yield [batch.column(i).to_pylist() for i in range(len(columns))]


def read_documents(path: str, counters: dict[str, int], text_column: str = "text",
                   max_document_bytes: int = 16 << 20) -> Iterator[dict[str, Any]]:
    """``{"__key__", "text"}`` per document of one corpus file, streamed; bad lines counted (``bad_json``)."""
    name = path.rsplit("/", 1)[-1]
    if path.endswith(".parquet"):
        index = 0
        for (texts,) in parquet_batches(path, [text_column], counters, f"a text corpus with a {text_column!r} column"):
            for text in texts:
                yield {"__key__": f"{name}:{index}", "text": text}
                index += 1
        return
    if path.endswith(".txt"):
        with open(path, "rb") as handle:
            lines: list[str] = []
            index = 0
            for raw in bounded_lines(handle, max_document_bytes, counters):
                line = raw.decode("utf-8", "replace").strip()
                if line:
                    lines.append(line)
                elif lines:
                    yield {"__key__": f"{name}:{index}", "text": "\n".join(lines)}
                    index, lines = index + 1, []
            if lines:
                yield {"__key__": f"{name}:{index}", "text": "\n".join(lines)}
        return
    for index, document in json_lines(path, counters, max_document_bytes):
        text = document.get(text_column) if isinstance(document, dict) else None
        yield {"__key__": f"{name}:{index}", "text": text}


class TextSource(Source):
    kind = "text"

    def list_files(self) -> list[str]:
        from kosmos.shards import expand_paths

        try:
            return expand_paths(self.spec.paths, TEXT_PATTERNS, "text corpus files (.jsonl[.gz|.zst], .parquet, .txt)")
        except FileNotFoundError as error:
            raise SourceError(f"{self.spec.label}: {error}") from None

    def read(self, path: str, counters: dict[str, int]) -> Iterator[dict[str, Any]]:
        return read_documents(path, counters, self.config.text_column, self.config.max_document_bytes)

    def texts(self, raw: dict[str, Any]) -> list[str]:
        return [raw.get("text")] if isinstance(raw.get("text"), str) else []

    def units(self, raw: dict[str, Any], epoch: int, counters: dict[str, int]) -> list[tuple[list[int], bool]]:
        """A document -> its lines as ``(token ids + </line>, is the document's last line)``."""
        text = raw.get("text")
        if not isinstance(text, str) or not text.strip():
            raise SampleError("empty_text", f"{raw.get('__key__')}: no text")
        token = control_token_in(text, self.encoder.tokenizer)
        if token is not None:
            raise SampleError("caption_markup", f"{raw.get('__key__')}: contains the control token {token!r}")
        lines = [line.strip() for line in text.split("\n") if line.strip()]
        encoder = self.encoder
        room = self.config.sequence_length - 3  # <s> ... </line> </s>
        units = []
        for i, line in enumerate(lines):
            ids = encoder.text_ids(line)[:room]
            units.append((ids + [encoder.line], i == len(lines) - 1))
        return units

    def pack(self, tagged: Iterable[tuple[tuple[list[int], bool], Any]]) -> Iterator[tuple[dict, Any]]:
        encoder, limit = self.encoder, self.config.sequence_length
        ids, last_tag = [encoder.bos], None
        for (line, ends_document), tag in tagged:
            piece = line + ([encoder.eos] if ends_document else [])
            if len(ids) + len(piece) > limit and len(ids) > 1:
                yield self._row(ids), last_tag
                ids = [encoder.bos]
            ids += piece
            last_tag = tag
            if ends_document and len(ids) >= limit:
                yield self._row(ids), last_tag
                ids = [encoder.bos]
        if len(ids) > 1:  # a finite stream (held-out scoring) ends with its last row
            yield self._row(ids), last_tag

    def _row(self, ids: list[int]) -> dict:
        labels = [IGNORE] + ids[1:]
        row = self.encoder.row(ids, labels, [0] * len(ids), [])
        row["key"] = None
        return row
