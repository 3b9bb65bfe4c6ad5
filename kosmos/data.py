"""Webdataset loader over GRIT shards (the pipeline's ``NNNNN.tar`` or GrIT-20M as img2dataset writes it).

Stages, each a plain function tested alone:

``expand_urls`` (dirs, globs, brace patterns, http/s3/pipe URLs) -> ``raw_samples`` (tar -> dict of bytes per
key, broken tars counted) -> ``shuffle_buffer`` (seeded) -> ``decode_sample`` (image + GRIT record, corrupt
samples raise ``SampleError``) -> ``transform_sample`` (centre crop or square resize, boxes moved, boxes keeping
< 20% of their area dropped) -> ``training_text`` (``grit_pipeline.serialize``: select entities, serialize;
``<grounding>`` + links on a fraction of samples) -> ``encode_sample`` (Kosmos2Processor, labels) -> ``collate``.

``GritShardStream`` puts them together as an endless, deterministic ``IterableDataset``: shards are shuffled
per epoch with the same seed on every rank, split by node (rank) and DataLoader worker (or, with fewer shards
than readers, every reader reads all shards and keeps every n-th sample), and every batch carries the
reader's position so a checkpoint can restart each reader exactly where it was.
"""
from __future__ import annotations

import glob
import io
import json
import os
import random
import re
import weakref
import zlib
from dataclasses import dataclass, field
from typing import Any, Iterable, Iterator

import torch

from grit_pipeline import status as grit_status
from grit_pipeline.tar_reader import DEFAULT_MAX_MEMBER_BYTES, IMAGE_EXTENSIONS, TarReader

# grit's reject statuses and img2dataset's failure statuses; "grounded"/"success" are usable.
FAILED_STATUSES = {s for s in grit_status.ALL if s not in grit_status.KEPT} | {"failed_to_download", "failed_to_resize"}


class SampleError(ValueError):
    """A sample that cannot be trained on; ``reason`` is the counter it is added to."""

    def __init__(self, reason: str, message: str):
        self.reason = reason
        super().__init__(f"{reason}: {message}")


@dataclass
class DataConfig:
    """How samples become training sequences (defaults follow the released training code).

    ``kosmos train`` has one flag per field (``grit_pipeline.config_flags``) except the image size and slots,
    which come from the model, and the seed, which is the run's."""

    image_size: int = field(default=224, metadata={"cli": False})
    num_image_tokens: int = field(default=64, metadata={"cli": False})
    image_mode: str = field(default="crop", metadata={
        "group": "data", "choices": ("crop", "square"),
        "help": "crop: resize + centre crop with boxes moved; square: resize to a square"})
    min_box_area_kept: float = field(default=0.2, metadata={
        "group": "data", "help": "drop a box keeping less of its area inside the crop"})
    grounding_prob: float = field(default=0.5, metadata={
        "group": "data", "help": "share of samples trained with <grounding> and boxes; others as plain captions"})
    min_score: float | None = field(default=0.65, metadata={
        "group": "data", "help": "box score threshold of the serializer"})
    phrase_mode: str = field(default="expression", metadata={
        "group": "data", "choices": ("expression", "phrase"),
        "help": "link referring expressions or noun chunks"})
    cell_rule: str = field(default="official", metadata={
        "group": "data", "choices": ("official", "transformers"),
        "help": "lower-right location cell: official (the released Kosmos-2 training loader) or transformers"})
    max_length: int = field(default=128, metadata={
        "group": "data", "default_help": "the preset's: 64 / 96 / 128 for tiny / small / paper",
        "help": "text tokens after the image prompt (longer sequences are cut)"})
    shuffle_buffer: int = field(default=1000, metadata={
        "group": "data", "help": "samples held for shuffling per reader (0: shard order only)"})
    seed: int = field(default=0, metadata={"cli": False})


# --------------------------------------------------------------------------- shards and raw samples

def expand_urls(specs: str | Iterable[str]) -> list[str]:
    """Shard list from directories (their ``*.tar``), globs, brace patterns (``{00000..00009}``), comma
    separated lists, local files and remote URLs (http(s)://, s3://, gs://, pipe:)."""
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
                    urls.extend(sorted(glob.glob(os.path.join(item, "*.tar"))))
                elif any(c in item for c in "*?["):
                    urls.extend(sorted(glob.glob(item)))
                elif os.path.exists(item):
                    urls.append(item)
                else:
                    raise FileNotFoundError(f"no shard or directory at {item!r}")
    if not urls:
        raise FileNotFoundError(f"no .tar shards found in {list(specs)!r}")
    return urls


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
        _warn(f"shard {url}: {reader.error}")


def _warn(message: str) -> None:
    import sys

    print(f"kosmos data: {message}", file=sys.stderr, flush=True)


def shuffle_buffer(samples: Iterable[Any], size: int, rng: random.Random) -> Iterator[Any]:
    """Seeded buffer shuffle (webdataset-style): deterministic for a given ``rng`` state."""
    if size <= 1:
        yield from samples
        return
    buffer: list[Any] = []
    for sample in samples:
        buffer.append(sample)
        if len(buffer) >= size:
            i = rng.randrange(len(buffer))
            buffer[i], buffer[-1] = buffer[-1], buffer[i]
            yield buffer.pop()
    rng.shuffle(buffer)
    yield from buffer


# --------------------------------------------------------------------------- one sample

def decode_sample(raw: dict[str, Any]):
    """Raw tar members -> (PIL RGB image, record dict with caption/noun_chunks/ref_exps).

    Reads the pipeline's ``KEY.json`` (GRIT record + status) and GrIT-20M as downloaded with img2dataset
    (the same json shape: caption, noun_chunks, ref_exps, status ``success``). Raises ``SampleError``.
    """
    from PIL import Image

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
        # img2dataset keeps the caption in KEY.txt; the pipeline's KEY.txt is grounded text, never a caption.
        text = raw.get("txt")
        text = text.decode("utf-8", "replace") if isinstance(text, bytes) else text
        if isinstance(text, str) and text.strip() and "<" not in text:
            caption = text
        else:
            raise SampleError("bad_caption", f"{key}: no caption")
    image_bytes = next((raw[e] for e in IMAGE_EXTENSIONS if e in raw), None)
    if image_bytes is None:
        raise SampleError("missing_image", f"{key}: no image member")
    try:
        image = Image.open(io.BytesIO(image_bytes))
        image.load()
        image = image.convert("RGB")
    except Exception as error:  # PIL raises many types on corrupt data
        raise SampleError("decode_error", f"{key}: {error}") from None
    spans = {}
    for name in ("noun_chunks", "ref_exps"):
        value = record.get(name) or []
        if not isinstance(value, list) or not all(isinstance(s, (list, tuple)) and len(s) == 7 for s in value):
            raise SampleError("bad_record", f"{key}: {name} must be a list of 7-number lists")
        spans[name] = [list(map(float, s)) for s in value]
    return image, {"key": str(record.get("key", key)), "caption": caption, **spans}


def crop_frame(width: int, height: int, image_mode: str) -> tuple[int, int, int, int]:
    """Pixel box (left, top, right, bottom) of the region the model sees."""
    if image_mode == "square":
        return 0, 0, width, height
    if image_mode != "crop":
        raise ValueError(f"image_mode must be 'crop' or 'square', got {image_mode!r}")
    side = min(width, height)
    left, top = (width - side) // 2, (height - side) // 2
    return left, top, left + side, top + side


def prepare_image(image, image_size: int, image_mode: str = "crop"):
    """Resize (+ centre crop) to ``image_size`` square; returns (image, frame) where frame is the visible
    region as normalised (x0, y0, w, h) of the original image (predict maps boxes back with it)."""
    from PIL import Image

    width, height = image.size
    left, top, right, bottom = crop_frame(width, height, image_mode)
    if (left, top, right, bottom) != (0, 0, width, height):
        image = image.crop((left, top, right, bottom))
    image = image.resize((image_size, image_size), Image.BICUBIC)
    frame = (left / width, top / height, (right - left) / width, (bottom - top) / height)
    return image, frame


def move_box(box, frame, min_area_kept: float = 0.2):
    """A normalised box in the original image -> the same box in the visible ``frame``; None when it keeps
    less than ``min_area_kept`` of its area (or nothing) inside the frame."""
    x0, y0, fw, fh = frame
    x1, y1, x2, y2 = box
    area = (x2 - x1) * (y2 - y1)
    nx1, ny1 = max((x1 - x0) / fw, 0.0), max((y1 - y0) / fh, 0.0)
    nx2, ny2 = min((x2 - x0) / fw, 1.0), min((y2 - y0) / fh, 1.0)
    if nx2 <= nx1 or ny2 <= ny1 or area <= 0:
        return None
    kept = (nx2 - nx1) * fw * (ny2 - ny1) * fh / area
    if kept < min_area_kept:
        return None
    return (nx1, ny1, nx2, ny2)


def sample_rng(seed: int, key: str, epoch: int) -> random.Random:
    """Per-sample RNG: the same sample in the same epoch always makes the same choices (exact resume)."""
    return random.Random(zlib.crc32(f"{seed}/{epoch}/{key}".encode()))


def training_text(record: dict[str, Any], frame, config: DataConfig, rng: random.Random) -> str:
    """The training text of a record: grounded (``<grounding>`` + links, boxes in the visible frame) with
    probability ``config.grounding_prob``, else the plain caption. Uses the pipeline's serializer.

    As the released loader (``obj_utils.process_grounding_data``) does, boxes are moved into the view
    before contained expressions are dropped (an expression whose container lost every box to the crop
    keeps its own), and a sample left without any box is the plain caption, without ``<grounding>``."""
    from grit_pipeline.serialize import select_entities, serialize_entities

    caption = record["caption"]
    if not rng.random() < config.grounding_prob:
        return caption
    column = "ref_exps" if config.phrase_mode == "expression" else "noun_chunks"
    visible = []
    for start, end, *box, score in record.get(column) or []:
        moved = move_box(box, frame, config.min_box_area_kept)
        if moved is not None:
            visible.append([start, end, *moved, score])
    entities = select_entities({column: visible}, min_score=config.min_score, phrase_mode=config.phrase_mode)
    if not entities:
        return caption
    return serialize_entities(caption, entities, fmt="hf", cell_rule=config.cell_rule)


def encode_text(processor, image, text: str, num_image_tokens: int, max_length: int | None = None,
                add_eos: bool = True) -> dict[str, torch.Tensor]:
    """``<s> <image> [slots] </image> text [</s>]`` as input_ids, attention_mask, image_embeds_position_mask,
    pixel_values, and labels (-100 on <s>, the image prompt and a leading <grounding>)."""
    enc = processor(images=image, text=text, num_image_tokens=num_image_tokens, return_tensors="pt")
    input_ids = enc["input_ids"][0]
    mask = enc["image_embeds_position_mask"][0]
    prompt_len = 1 + 1 + num_image_tokens + 1  # <s> <image> slots </image>
    if max_length is not None and input_ids.numel() > prompt_len + max_length - int(add_eos):
        input_ids = input_ids[: prompt_len + max_length - int(add_eos)]
        mask = mask[: input_ids.numel()]
    if add_eos:
        input_ids = torch.cat([input_ids, torch.tensor([processor.tokenizer.eos_token_id])])
        mask = torch.cat([mask, torch.zeros(1, dtype=mask.dtype)])
    labels = input_ids.clone()
    ignore = prompt_len
    grounding_id = processor.tokenizer.convert_tokens_to_ids("<grounding>")
    if input_ids.numel() > ignore and int(input_ids[ignore]) == grounding_id:
        ignore += 1  # the task flag is an input, not something to predict
    labels[:ignore] = -100
    if int(mask.sum()) != num_image_tokens:
        raise SampleError("bad_encoding", f"image_embeds_position_mask has {int(mask.sum())} ones")
    return {
        "input_ids": input_ids,
        "attention_mask": torch.ones_like(input_ids),
        "image_embeds_position_mask": mask.long(),
        "labels": labels,
        "pixel_values": enc["pixel_values"][0],
    }


def control_token_in(text: str, tokenizer) -> str | None:
    """The first of the tokenizer's special or added tokens (``<phrase>``, ``<patch_index_0001>``, ``</s>``...)
    spelt out in ``text``, or None.

    Captions are raw alt-text: one that happens to contain such a string would be read as markup by the
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


def encode_sample(raw: dict[str, Any], processor, config: DataConfig, epoch: int = 0) -> dict[str, Any]:
    """Raw tar sample -> model inputs (raises ``SampleError`` for a sample to skip)."""
    image, record = decode_sample(raw)
    token = control_token_in(record["caption"], processor.tokenizer)
    if token is not None:
        raise SampleError("caption_markup", f"caption of {record['key']!r} contains the control token {token!r}")
    image, frame = prepare_image(image, config.image_size, config.image_mode)
    text = training_text(record, frame, config, sample_rng(config.seed, record["key"], epoch))
    item = encode_text(processor, image, text, config.num_image_tokens, config.max_length)
    item["text"] = text
    item["key"] = record["key"]
    return item


def collate(items: list[dict[str, Any]], pad_token_id: int) -> dict[str, Any]:
    """Right-pad a list of encoded samples into a batch (labels -100 and mask 0 on padding)."""
    length = max(i["input_ids"].numel() for i in items)

    def pad(name, value):
        out = torch.full((len(items), length), value, dtype=torch.long)
        for row, item in enumerate(items):
            out[row, : item[name].numel()] = item[name]
        return out

    return {
        "input_ids": pad("input_ids", pad_token_id),
        "attention_mask": pad("attention_mask", 0),
        "image_embeds_position_mask": pad("image_embeds_position_mask", 0),
        "labels": pad("labels", -100),
        "pixel_values": torch.stack([i["pixel_values"] for i in items]),
        "keys": [i["key"] for i in items],
    }


# --------------------------------------------------------------------------- the stream

@dataclass
class ReaderState:
    """Where one reader (rank x loader worker) is in its endless stream."""

    position: int = 0                 # raw samples consumed from the shuffled stream (all epochs)
    epoch: int = 0
    skipped: dict[str, int] = field(default_factory=dict)  # corrupt / unusable samples by reason


class GritShardStream(torch.utils.data.IterableDataset):
    """Endless, deterministic batches from GRIT shards for one rank.

    ``reader_states`` maps a logical reader id (0..num_workers-1) to its ``ReaderState`` dict, and
    ``worker_offset`` rotates DataLoader workers onto logical readers, so that a resumed run continues the
    DataLoader's round robin exactly where the interrupted one stopped.
    """

    def __init__(self, urls: list[str], processor, config: DataConfig, batch_size: int, rank: int = 0,
                 world_size: int = 1, num_workers: int = 0, reader_states: dict | None = None,
                 worker_offset: int = 0):
        super().__init__()
        self.urls, self.processor, self.config = list(urls), processor, config
        self.batch_size, self.rank, self.world_size = batch_size, rank, world_size
        self.num_readers = max(num_workers, 1)
        self.reader_states = {int(k): v for k, v in (reader_states or {}).items()}
        self.worker_offset = worker_offset

    def _reader(self) -> int:
        info = torch.utils.data.get_worker_info()
        worker = info.id if info is not None else 0
        return (worker + self.worker_offset) % self.num_readers

    def _raw_stream(self, slot: int, slots: int, state: ReaderState) -> Iterator[tuple[int, dict]]:
        """(epoch, raw sample) forever, in this reader's deterministic order."""
        config = self.config
        epoch = 0
        while True:
            order = list(self.urls)
            random.Random(config.seed * 1_000_003 + epoch).shuffle(order)  # same on every rank
            if len(order) >= slots:
                mine, keep_every = order[slot::slots], None
            else:  # fewer shards than readers: read all, keep every slots-th sample
                mine, keep_every = order, slots

            def samples():
                index = 0
                for url in mine:
                    for raw in raw_samples(url, state.skipped):
                        if keep_every is None or index % keep_every == slot:
                            yield raw
                        index += 1

            rng = random.Random(config.seed * 7_919 + epoch * 104_729 + slot)
            count = 0
            for raw in shuffle_buffer(samples(), config.shuffle_buffer, rng):
                count += 1
                yield epoch, raw
            if count == 0:
                raise RuntimeError(f"reader {slot} of {slots} got no samples from {len(self.urls)} shard(s)")
            epoch += 1

    def __iter__(self) -> Iterator[dict[str, Any]]:
        reader = self._reader()
        saved = self.reader_states.get(reader)
        state = ReaderState(**saved) if saved else ReaderState()
        state.skipped = dict(state.skipped)
        saved_skipped = dict(state.skipped)
        slot, slots = self.rank * self.num_readers + reader, self.world_size * self.num_readers
        start, position = state.position, 0
        usable = 0
        items = []
        pad_id = self.processor.tokenizer.pad_token_id
        for epoch, raw in self._raw_stream(slot, slots, state):
            position += 1
            if position <= start:  # fast-forward on resume without decoding
                if position == start:  # shard errors met while replaying were counted before the checkpoint
                    state.skipped.clear()
                    state.skipped.update(saved_skipped)
                continue
            state.position, state.epoch = position, epoch
            try:
                items.append(encode_sample(raw, self.processor, self.config, epoch))
                usable += 1
            except SampleError as error:
                state.skipped[error.reason] = state.skipped.get(error.reason, 0) + 1
                continue
            if len(items) == self.batch_size:
                batch = collate(items, pad_id)
                batch["reader"] = reader
                batch["reader_state"] = {"position": state.position, "epoch": state.epoch,
                                         "skipped": dict(state.skipped)}
                items = []
                yield batch
            elif position - start > 10_000 and usable == 0:
                raise RuntimeError(f"no usable sample in the first 10000 read; skipped: {state.skipped}")


def make_loader(stream: GritShardStream, num_workers: int = 0):
    """DataLoader over a ``GritShardStream`` (batches are formed in the workers; order is deterministic)."""
    return torch.utils.data.DataLoader(
        stream, batch_size=None, num_workers=num_workers, persistent_workers=False,
        prefetch_factor=2 if num_workers else None,
    )


def iter_records(urls: list[str], counters: dict[str, int] | None = None) -> Iterator[dict[str, Any]]:
    """GRIT records (json only, images not decoded) of all shards in order; for tokenizer training."""
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
