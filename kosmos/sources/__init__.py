"""Training sources, one module per kind, plugged in by name (``SOURCES``), and the options they share.

``grounded`` (GRIT), ``captions`` (img2dataset image-caption shards), ``text`` (corpora, full-sentence packing),
``interleaved`` (MMC4, OBELICS, webdataset documents), the instruction formats ``llava``, ``unnatural``, ``flan``
and ``grit_instruct`` (``instruct.py``). A new kind is one module with a ``Source`` subclass and
one line here.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from kosmos.sources.base import ReaderState, SampleError, Source, SourceError, SourceSpec
from kosmos.sources.captions import CaptionsSource
from kosmos.sources.grounded import GroundedSource
from kosmos.sources.instruct import INSTRUCTION_SOURCES
from kosmos.sources.interleaved import InterleavedSource
from kosmos.sources.text import TextSource

SOURCES: dict[str, type[Source]] = {cls.kind: cls for cls in (GroundedSource, CaptionsSource, TextSource,
                                                              InterleavedSource, *INSTRUCTION_SOURCES)}


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
        "group": "data", "help": "share of grounded samples trained with <grounding> and boxes; others as plain captions"})
    zoom_min_scale: float = field(default=1.0, metadata={
        "group": "data",
        "help": "grounded samples show a random part of the image, each side this to 1 times the whole, boxes "
                "moved into it (--min-box-area-kept drops the cut ones); 1: the whole image, the released loader's"})
    flip_prob: float = field(default=0.0, metadata={
        "group": "data",
        "help": "share of grounded samples mirrored left-right (image and boxes; the words left and right swap in "
                "the text, as MDETR's flip does); 0: none, the released loader's"})
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
        "help": "text tokens after the image of grounded and caption samples (longer ones are cut)"})
    sequence_length: int = field(default=2048, metadata={
        "group": "data", "default_help": "the model's maximum positions: 256 / 512 / 2048 for tiny / small / paper",
        "help": "tokens per row of the text and interleaved sources"})
    text_column: str = field(default="text", metadata={
        "group": "data", "help": "the text field of jsonl/parquet text corpora"})
    max_document_bytes: int = field(default=16 << 20, metadata={
        "group": "data", "help": "a jsonl/txt line longer than this is skipped unread (document_too_large)"})
    max_images_per_sequence: int = field(default=5, metadata={
        "group": "data", "help": "images per interleaved row (the release's max_image_num); longer documents "
                                 "become several rows"})
    max_images_per_document: int = field(default=100, metadata={
        "group": "data", "help": "images of one interleaved document past this are left out (too_many_images)"})
    mmc4_min_similarity: float = field(default=0.24, metadata={
        "group": "data", "help": "MMC4 images matched to their sentence with a lower CLIP similarity are left "
                                 "out (OpenFlamingo's 0.24)"})
    images_from: str | None = field(default=None, metadata={
        "group": "data", "help": "images of MMC4 documents (by image_name) or OBELICS URLs: a folder, or "
                                 "img2dataset shards"})
    conversation_template: str = field(default="qa", metadata={
        "group": "data", "choices": ("qa", "chat", "plain"),
        "help": "how instruction turns are written (kosmos/conversation.py; kosmos chat uses the same): qa "
                "'Question: .. Answer: ..', chat 'User: ..\\nAssistant: ..', plain"})
    llava_images: str | None = field(default=None, metadata={
        "group": "data", "help": "image folder of LLaVA-Instruct (COCO train2014 layout; default: the json's folder)"})
    exclude_images: str | None = field(default=None, metadata={
        "group": "data", "metavar": "FILE",
        "help": "images to drop from LLaVA-Instruct: names one per line, a json list, or an MDETR/COCO json "
                "(e.g. the RefCOCO/+/g evaluation images); COCO names match in either layout"})
    shuffle_buffer: int = field(default=1000, metadata={
        "group": "data", "help": "items held for shuffling per reader (0: file order only)"})
    seed: int = field(default=0, metadata={"cli": False})

    def number_problems(self) -> list[str]:
        """Data settings out of range (e.g. ``--max-images-per-sequence 0``), one line each."""
        import math

        rules = {"sequence_length": 8, "max_length": 1, "max_document_bytes": 1, "max_images_per_sequence": 1,
                 "max_images_per_document": 0, "shuffle_buffer": 0}
        problems = [f"--{name.replace('_', '-')} must be an integer >= {low}, got {getattr(self, name)!r}"
                    for name, low in rules.items()
                    if not (isinstance(getattr(self, name), int) and getattr(self, name) >= low)]
        shares = {"grounding_prob": True, "flip_prob": True, "zoom_min_scale": False}  # name -> 0 allowed
        for name in ("mmc4_min_similarity", "min_box_area_kept", *shares):
            value = getattr(self, name)
            if not (isinstance(value, (int, float)) and math.isfinite(value)):
                problems.append(f"--{name.replace('_', '-')} must be a finite number, got {value!r}")
            elif name in shares and not ((0 <= value if shares[name] else 0 < value) and value <= 1):
                problems.append(f"--{name.replace('_', '-')} must be {'at least 0' if shares[name] else 'above 0'} "
                                f"and at most 1, got {value!r}")
        return problems


def build_source(spec: SourceSpec, encoder, config: DataConfig) -> Source:
    """The source of ``spec.kind`` (one-line ``SourceError`` for an unknown kind)."""
    try:
        cls = SOURCES[spec.kind]
    except KeyError:
        raise SourceError(f"unknown source kind {spec.kind!r}; choose from {sorted(SOURCES)}") from None
    return cls(spec, encoder, config)


__all__ = ["SOURCES", "DataConfig", "ReaderState", "SampleError", "Source", "SourceError", "SourceSpec", "build_source"]
