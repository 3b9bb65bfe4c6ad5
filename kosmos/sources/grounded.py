"""``grounded``: GRIT shards (grit's own ``NNNNN.tar`` builds, or GrIT-20M as img2dataset downloads it).

``<s> <image> slots </image> [<grounding>] grounded caption </s>``: the training text is grounded (``<grounding>``
then the caption with ``<phrase>``/``<object>`` links, boxes moved into the visible frame) on a share
``grounding_prob`` of the samples, else the plain caption; ``<grounding>`` is an input, never a target.
"""
from __future__ import annotations

import json
import random
import re
import weakref
from typing import Any, Iterator

from grit_pipeline import status as grit_status
from grit_pipeline.tar_reader import IMAGE_EXTENSIONS
from kosmos.images import mirror_box, move_box
from kosmos.sequence import Image, Text
from kosmos.sources.base import SampleError, Source, SourceError, SourceSpec, decode_image, sample_rng

# grit's reject statuses and img2dataset's failure statuses; "grounded"/"success" are usable.
FAILED_STATUSES = {s for s in grit_status.ALL if s not in grit_status.KEPT} | {"failed_to_download", "failed_to_resize"}


def decode_record(raw: dict[str, Any]) -> dict[str, Any]:
    """The ``KEY.json`` of a tar sample as a dict with a usable caption (img2dataset keeps it in ``KEY.txt``;
    the pipeline's ``KEY.txt`` is grounded text, never a caption). Raises ``SampleError``."""
    key = raw.get("__key__", "?")
    if "json" not in raw:
        raise SampleError("missing_json", f"{key}: no .json member")
    try:
        record = json.loads(raw["json"])
    except (ValueError, UnicodeDecodeError) as error:
        raise SampleError("bad_json", f"{key}: {error}") from None
    if not isinstance(record, dict):
        raise SampleError("bad_json", f"{key}: json is not an object")
    status = record.get("status")
    if status in FAILED_STATUSES:
        raise SampleError("not_usable", f"{key}: status {status!r}")
    caption = record.get("caption")
    if not isinstance(caption, str) or not caption.strip():
        text = raw.get("txt")
        text = text.decode("utf-8", "replace") if isinstance(text, bytes) else text
        if isinstance(text, str) and text.strip() and "<" not in text:
            caption = text
        else:
            raise SampleError("bad_caption", f"{key}: no caption")
    return {**record, "caption": caption, "key": str(record.get("key", key))}


def sample_image(raw: dict[str, Any]):
    """The decoded image member of a tar sample (``SampleError`` when missing or corrupt)."""
    key = raw.get("__key__", "?")
    image_bytes = next((raw[e] for e in IMAGE_EXTENSIONS if e in raw), None)
    if image_bytes is None:
        raise SampleError("missing_image", f"{key}: no image member")
    return decode_image(image_bytes, key)


def decode_sample(raw: dict[str, Any]):
    """Raw tar members -> (PIL RGB image, record dict with caption/noun_chunks/ref_exps). Raises ``SampleError``."""
    record = decode_record(raw)
    key = record["key"]
    image = sample_image(raw)
    spans = {}
    for name in ("noun_chunks", "ref_exps"):
        value = record.get(name) or []
        if not isinstance(value, list) or not all(isinstance(s, (list, tuple)) and len(s) == 7 for s in value):
            raise SampleError("bad_record", f"{key}: {name} must be a list of 7-number lists")
        spans[name] = [list(map(float, s)) for s in value]
    return image, {"key": key, "caption": record["caption"], **spans}


_LEFT_OR_RIGHT = re.compile(r"\b(left|right)(?=(?:most|ward|wards|hand)?\b)", re.IGNORECASE)
_MIRRORED_WORD = {"left": "right", "right": "left"}


def swap_left_right(text: str) -> str:
    """``left`` <-> ``right`` (and -most/-ward/-hand forms), case kept: the text of a mirrored image."""
    def swap(match: re.Match) -> str:
        word = match.group(1)
        mirrored = _MIRRORED_WORD[word.lower()]
        if word.isupper():
            return mirrored.upper()
        return mirrored.capitalize() if word[0].isupper() else mirrored

    return _LEFT_OR_RIGHT.sub(swap, text)


def training_text(record: dict[str, Any], frame, config, rng: random.Random, mirrored: bool = False) -> str:
    """The training text of a record: grounded (``<grounding>`` + links, boxes in the visible frame) with
    probability ``config.grounding_prob``, else the plain caption. Uses the pipeline's serializer.

    As the released loader (``obj_utils.process_grounding_data``) does, boxes are moved into the view
    before contained expressions are dropped (an expression whose container lost every box to the crop
    keeps its own), and a sample left without any box is the plain caption, without ``<grounding>``.
    ``mirrored``: the image was flipped left-right; boxes are mirrored and left/right swap in the text."""
    from grit_pipeline.serialize import select_entities, serialize_entities

    caption = swap_left_right(record["caption"]) if mirrored else record["caption"]
    if not rng.random() < config.grounding_prob:
        return caption
    column = "ref_exps" if config.phrase_mode == "expression" else "noun_chunks"
    visible = []
    for start, end, *box, score in record.get(column) or []:
        moved = move_box(box, frame, config.min_box_area_kept)
        if moved is not None:
            visible.append([start, end, *(mirror_box(moved) if mirrored else moved), score])
    entities = select_entities({column: visible}, min_score=config.min_score, phrase_mode=config.phrase_mode)
    if not entities:
        return caption
    text = serialize_entities(record["caption"], entities, fmt="hf", cell_rule=config.cell_rule)
    # swapped after serialising: the spans index the original caption, and "left"/"right" differ in length
    return swap_left_right(text) if mirrored else text


def control_token_in(text: str, tokenizer) -> str | None:
    """The first of the tokenizer's special or added tokens (``<phrase>``, ``<patch_index_0001>``, ``</s>``...)
    spelt out in ``text``, or None.

    Captions and web text are raw: one that happens to contain such a string would be read as markup by the
    tokenizer and teach the model a link or a sequence end that is not there, so such samples are skipped.
    """
    if "<" not in text:  # every Kosmos-2 control token starts with '<'
        return None
    pattern = _CONTROL_PATTERNS.get(tokenizer)
    if pattern is None:
        tokens = set(tokenizer.get_added_vocab()) | set(tokenizer.all_special_tokens)
        pattern = re.compile("|".join(re.escape(t) for t in sorted(tokens, key=len, reverse=True) if t))
        _CONTROL_PATTERNS[tokenizer] = pattern
    match = pattern.search(text)
    return match.group(0) if match else None


_CONTROL_PATTERNS: "weakref.WeakKeyDictionary[Any, re.Pattern]" = weakref.WeakKeyDictionary()  # per tokenizer


def check_plain_text(text: str, tokenizer, what: str) -> None:
    token = control_token_in(text, tokenizer)
    if token is not None:
        raise SampleError("caption_markup", f"{what} contains the control token {token!r}")


def grounded_segments(text: str) -> list[Text]:
    """Training text -> text segments, the leading ``<grounding>`` flag as an input only."""
    if text.startswith("<grounding>"):
        return [Text("<grounding>", train=False), Text(text[len("<grounding>"):])]
    return [Text(text)]


class TarFiles:
    """Files of a source that are webdataset tar shards: listed like ``--data``, read by grit's tar reader."""

    spec: SourceSpec

    def list_files(self) -> list[str]:
        from kosmos.shards import expand_urls

        try:
            return expand_urls(self.spec.paths)
        except FileNotFoundError as error:
            raise SourceError(f"{self.spec.label}: {error}") from None

    def read(self, path: str, counters: dict[str, int]) -> Iterator[dict[str, Any]]:
        from kosmos.shards import raw_samples

        return raw_samples(path, counters)


class TarSource(TarFiles, Source):
    """Sources whose files are webdataset tar shards of image-text samples."""

    def texts(self, raw: dict[str, Any]) -> list[str]:
        try:
            return [decode_record(raw)["caption"]]
        except SampleError:
            return []

    def first_record(self) -> dict | None:
        """The json of the first sample that has one (to tell GRIT shards from plain image-caption shards)."""
        from kosmos.shards import raw_samples

        for path in self.list_files()[:3]:
            for raw in raw_samples(path, {}):
                try:
                    record = json.loads(raw["json"])
                except (KeyError, ValueError, UnicodeDecodeError):
                    continue
                if isinstance(record, dict):
                    return record
        return None


class GroundedSource(TarSource):
    kind = "grounded"

    def check(self) -> None:
        super().check()
        record = self.first_record()
        if record is not None and "noun_chunks" not in record and "ref_exps" not in record:
            raise SourceError(
                f"{self.spec.label}: {self.spec.paths[0]} holds image-caption shards without grounding "
                "(no noun_chunks/ref_exps): build GRIT from them with `grit run`, or train on them as captions "
                f"(--mix captions={self.spec.paths[0]})")

    def units(self, raw: dict[str, Any], epoch: int, counters: dict[str, int]) -> list[dict]:
        config, encoder = self.config, self.encoder
        image, record = decode_sample(raw)
        check_plain_text(record["caption"], encoder.tokenizer, f"caption of {record['key']!r}")
        rng = sample_rng(config.seed, record["key"], epoch)
        # at the defaults (no zoom, no flip) nothing is drawn here: every sample is what it was before the options
        pixels, frame = encoder.pixels(image, config.image_mode,
                                       zoom=(config.zoom_min_scale, rng) if config.zoom_min_scale < 1 else None)
        mirrored = config.flip_prob > 0 and rng.random() < config.flip_prob
        if mirrored:
            pixels = pixels.flip(-1)
        text = training_text(record, frame, config, rng, mirrored)
        row = encoder.encode([Image(pixels), *grounded_segments(text)],
                             max_tokens=encoder.image_length() + 1 + config.max_length)
        row["key"], row["text"] = record["key"], text
        return [row]


def iter_records(urls: list[str], counters: dict[str, int] | None = None) -> Iterator[dict[str, Any]]:
    """GRIT records (json only, images not decoded) of all shards in order."""
    from kosmos.shards import raw_samples

    counters = counters if counters is not None else {}
    for url in urls:
        for raw in raw_samples(url, counters):
            try:
                record = json.loads(raw["json"])
            except (KeyError, ValueError, UnicodeDecodeError):
                counters["bad_json"] = counters.get("bad_json", 0) + 1
                continue
            if isinstance(record, dict) and isinstance(record.get("caption"), str):
                yield record
