"""``interleaved``: documents with images in place, ``<s> text <image> slots </image> text ... </s>``.

Three file forms, told apart by extension:

- MMC4 jsonl (``.jsonl``, ``.jsonl.gz``, ``.jsonl.zst``): ``text_list`` (the sentences) and ``image_info[]`` with
  ``image_name``, ``raw_url``, ``matched_text_index``, ``matched_sim``; each image goes before its matched
  sentence (OpenFlamingo's placement), images under ``mmc4_min_similarity`` are left out;
- OBELICS-style parquet (``.parquet``): ``texts`` and ``images`` lists of equal length, ``None`` in the other
  slot; an image is bytes (or ``{"bytes", "path"}``), a local path, or a URL found in ``images_from``;
- webdataset (``.tar``): pre-packed documents, ``KEY.json`` = ``{"texts": [...], "images": [...]}`` like OBELICS,
  where an image entry names a member of the sample (``"img0.jpg"`` for ``KEY.img0.jpg``).

Images named by MMC4 (``image_name``) or by URL come from ``images_from``: a folder (files by name) or img2dataset
shards (matched by member name, by the json's ``image_name``, or by its ``url``; indexed once, read by offset).

A document becomes one or more rows: at most ``max_images_per_sequence`` images and ``sequence_length`` tokens per
row, cut between sentences, never inside an image; ``</s>`` ends the document's last row. Problems are counted,
never fatal: ``missing_image``, ``decode_error``, ``bad_match_index``, ``bad_similarity`` (NaN or not a number),
``below_similarity``, ``bad_document`` (not the published shape, e.g. ``texts``/``images`` of unequal length),
``empty_text``, ``too_many_images`` (past ``max_images_per_document``), ``image_too_large``.
"""
from __future__ import annotations

import json
import math
import os
import re
from typing import Any, Iterator

from kosmos.sequence import IGNORE
from kosmos.sources.base import SampleError, Source, SourceError, count, decode_image
from kosmos.sources.grounded import control_token_in

INTERLEAVED_PATTERNS = ("*.jsonl", "*.jsonl.gz", "*.jsonl.zst", "*.parquet", "*.tar")
MAX_IMAGE_BYTES = 50 << 20
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+")


def split_sentences(text: str) -> list[str]:
    """Sentences of a paragraph (cut after . ! ? followed by white space); where a row may be cut."""
    return [s.strip() for s in _SENTENCE_END.split(text) if s.strip()]


class ImageLibrary:
    """Images by name or URL from a folder or from img2dataset shards (an index of member offsets, built once)."""

    def __init__(self, root: str | None):
        self.root = root
        self._index: dict[str, tuple[str, int, int]] | None = None

    def _build_index(self) -> dict[str, tuple[str, int, int]]:
        """Name -> (tar path, offset, size) of each image member of the shards, under its member name and
        its sample json's ``image_name`` and ``url``; the tars are read through ``grit_pipeline.tar_reader``
        (headers only, the json members up to 1 MiB; a broken tar keeps the members before the break)."""
        from grit_pipeline.tar_reader import IMAGE_EXTENSIONS, TarReader

        def is_image(ext: str) -> bool:
            return ext.rsplit(".", 1)[-1] in IMAGE_EXTENSIONS  # (KEY.jpg, or KEY.img0.jpg in a document tar)

        index: dict[str, tuple[str, int, int]] = {}
        for name in sorted(p for p in os.listdir(self.root) if p.endswith(".tar")):
            reader = TarReader(os.path.join(self.root, name), max_member_bytes=1 << 20,
                               wanted=lambda key, ext: ext == "json" or is_image(ext),
                               locate=lambda key, ext: is_image(ext))
            for sample in reader:
                for ext, member in sample.located.items():
                    index.setdefault(os.path.basename(member.name), (member.path, member.offset, member.size))
                first = next((sample.located[ext] for ext in IMAGE_EXTENSIONS if ext in sample.located), None)
                if first is None or "json" not in sample.files:
                    continue
                try:
                    record = json.loads(sample.files["json"])
                except (ValueError, UnicodeDecodeError, RecursionError):
                    continue
                for field in ("image_name", "url"):
                    if isinstance(record, dict) and isinstance(record.get(field), str):
                        index.setdefault(record[field], (first.path, first.offset, first.size))
        return index

    def get(self, name: str) -> bytes | None:
        if not self.root or not isinstance(name, str) or not name:
            return None
        if os.path.isdir(self.root) and "://" not in name:
            path = os.path.normpath(os.path.join(self.root, name))
            if path.startswith(os.path.abspath(self.root) if os.path.isabs(path) else os.path.normpath(self.root)) \
                    and os.path.isfile(path):
                return _read_capped(path)
        if self._index is None:
            self._index = self._build_index() if os.path.isdir(self.root) else {}
        where = self._index.get(name)
        if where is None:
            return None
        path, offset, size = where
        if size > MAX_IMAGE_BYTES:
            return None
        with open(path, "rb") as handle:
            handle.seek(offset)
            return handle.read(size)


def _read_capped(path: str) -> bytes | None:
    if os.path.getsize(path) > MAX_IMAGE_BYTES:
        return None
    with open(path, "rb") as handle:
        return handle.read()


# ------------------------------------------------------------------ documents -> pieces

def mmc4_pieces(document: dict, min_similarity: float, counters: dict[str, int]) -> list[tuple[str, Any]]:
    """An MMC4 document -> ``("text", sentence)`` / ``("image", image_name)`` pieces, each image before its
    matched sentence."""
    sentences = document.get("text_list")
    infos = document.get("image_info") or []
    if not isinstance(sentences, list) or not isinstance(infos, list):
        raise SampleError("bad_document", "text_list and image_info must be lists")
    before: dict[int, list[str]] = {}
    for info in infos:
        if not isinstance(info, dict):
            count(counters, "bad_document")
            continue
        index, sim, name = info.get("matched_text_index"), info.get("matched_sim"), info.get("image_name")
        if isinstance(index, bool) or not isinstance(index, int) or not 0 <= index < len(sentences):
            count(counters, "bad_match_index")
            continue
        if sim is not None and (isinstance(sim, bool) or not isinstance(sim, (int, float)) or not math.isfinite(sim)):
            count(counters, "bad_similarity")
            continue
        if sim is not None and sim < min_similarity:
            count(counters, "below_similarity")
            continue
        before.setdefault(index, []).append(name)
    pieces: list[tuple[str, Any]] = []
    for i, sentence in enumerate(sentences):
        pieces += [("image", name) for name in before.get(i, [])]
        if isinstance(sentence, str) and sentence.strip():
            pieces.append(("text", sentence.strip()))
    return pieces


def obelics_pieces(texts: Any, images: Any) -> list[tuple[str, Any]]:
    """OBELICS ``texts``/``images`` (equal length, ``None`` in the other slot) -> pieces; paragraphs are split
    into sentences."""
    if not isinstance(texts, list) or not isinstance(images, list) or len(texts) != len(images):
        raise SampleError("bad_document", "texts and images must be lists of equal length")
    pieces: list[tuple[str, Any]] = []
    for text, image in zip(texts, images):
        if image is not None:
            pieces.append(("image", image))
        elif isinstance(text, str):
            pieces += [("text", s) for s in split_sentences(text)]
    return pieces


# ------------------------------------------------------------------ the source

class InterleavedSource(Source):
    kind = "interleaved"

    def __init__(self, spec, encoder, config):
        super().__init__(spec, encoder, config)
        self.library = ImageLibrary(config.images_from)

    def list_files(self) -> list[str]:
        from kosmos.shards import expand_paths

        try:
            return expand_paths(self.spec.paths, INTERLEAVED_PATTERNS,
                                "interleaved documents (.jsonl[.gz|.zst] MMC4, .parquet OBELICS, .tar)")
        except FileNotFoundError as error:
            raise SourceError(f"{self.spec.label}: {error}") from None

    def check(self) -> None:
        super().check()
        files = self.list_files()
        if any(not f.endswith((".tar", ".parquet")) for f in files) and not self.config.images_from:
            raise SourceError(f"{self.spec.label}: MMC4 documents name their images: give --images-from "
                              "(a folder of the images or img2dataset shards holding them)")

    def read(self, path: str, counters: dict[str, int]) -> Iterator[dict[str, Any]]:
        name = path.rsplit("/", 1)[-1]
        if path.endswith(".tar"):
            from kosmos.shards import raw_samples

            for raw in raw_samples(path, counters):
                yield {**raw, "__form__": "tar"}
            return
        from kosmos.sources.text import json_lines, parquet_batches

        if path.endswith(".parquet"):
            index = 0
            for texts, images in parquet_batches(path, ["texts", "images"], counters, "OBELICS-style parquet", 64):
                for doc_texts, doc_images in zip(texts, images):
                    yield {"__key__": f"{name}:{index}", "__form__": "obelics", "texts": doc_texts, "images": doc_images}
                    index += 1
            return
        for index, document in json_lines(path, counters, self.config.max_document_bytes):
            yield {"__key__": f"{name}:{index}", "__form__": "mmc4", "document": document}

    # -------------------------------------------------------------- one document
    def _pieces(self, raw: dict[str, Any], counters: dict[str, int]) -> list[tuple[str, Any]]:
        form = raw["__form__"]
        if form == "mmc4":
            if not isinstance(raw["document"], dict):
                raise SampleError("bad_document", "not a json object")
            return mmc4_pieces(raw["document"], self.config.mmc4_min_similarity, counters)
        if form == "obelics":
            return obelics_pieces(raw["texts"], raw["images"])
        try:
            document = json.loads(raw["json"])
        except KeyError:
            raise SampleError("missing_json", f"{raw.get('__key__')}: no .json member") from None
        except (ValueError, UnicodeDecodeError):
            raise SampleError("bad_json", f"{raw.get('__key__')}") from None
        if not isinstance(document, dict):
            raise SampleError("bad_document", "json is not an object")
        return obelics_pieces(document.get("texts"), document.get("images"))

    def texts(self, raw: dict[str, Any]) -> list[str]:
        try:
            return [value for kind, value in self._pieces(raw, {}) if kind == "text"]
        except SampleError:
            return []

    def _image_bytes(self, raw: dict[str, Any], ref: Any) -> bytes | None:
        if isinstance(ref, dict):
            data = ref.get("bytes")
            if isinstance(data, (bytes, bytearray)):
                return bytes(data)
            ref = ref.get("path")
        if isinstance(ref, (bytes, bytearray)):
            return bytes(ref)
        if not isinstance(ref, str):
            return None
        if raw["__form__"] == "tar" and ref in raw:
            return raw[ref]
        return self.library.get(ref)

    def units(self, raw: dict[str, Any], epoch: int, counters: dict[str, int]) -> list[dict]:
        encoder, config = self.encoder, self.config
        pieces = self._pieces(raw, counters)
        if not any(kind == "text" for kind, _ in pieces):
            raise SampleError("empty_text", f"{raw.get('__key__')}: no text")
        limit = config.sequence_length
        rows, ids, labels, mask, pixels = [], [encoder.bos], [IGNORE], [0], []
        images_seen = 0

        def flush(end: bool):
            nonlocal ids, labels, mask, pixels
            if end:
                ids, labels, mask = ids + [encoder.eos], labels + [encoder.eos], mask + [0]
            if len(ids) > 1 + int(end):
                row = encoder.row(ids, labels, mask, pixels)
                row["key"] = raw.get("__key__")
                rows.append(row)
            ids, labels, mask, pixels = [encoder.bos], [IGNORE], [0], []

        for kind, value in pieces:
            if kind == "image":
                images_seen += 1
                if images_seen > config.max_images_per_document:
                    count(counters, "too_many_images")
                    continue
                data = self._image_bytes(raw, value)
                if data is None:
                    count(counters, "missing_image")
                    continue
                try:
                    tensor, _ = encoder.pixels(decode_image(data, str(value)[:80]))
                except SampleError as error:
                    count(counters, error.reason)
                    continue
                if len(pixels) >= config.max_images_per_sequence or len(ids) + encoder.image_length() > limit - 1:
                    flush(False)
                ids += [encoder.boi, *encoder.slots, encoder.eoi]
                labels += [IGNORE] * encoder.image_length()
                mask += [0] + [1] * encoder.num_image_tokens + [0]
                pixels.append(tensor)
            else:
                if control_token_in(value, encoder.tokenizer) is not None:
                    count(counters, "caption_markup")
                    continue
                piece = encoder.text_ids(value)[: limit - 2]
                if len(ids) + len(piece) > limit - 1:
                    flush(False)
                ids += piece
                labels += piece
                mask += [0] * len(piece)
        flush(True)
        if not rows:
            raise SampleError("empty_text", f"{raw.get('__key__')}: nothing to train on")
        return rows
