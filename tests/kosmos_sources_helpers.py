"""Shared by the kosmos source tests: tiny JPEGs, a tokenizer learnt from a word list, sources on hand-made files."""
from __future__ import annotations

import io

from kosmos.sequence import SequenceEncoder
from kosmos.sources import DataConfig, SourceSpec, build_source
from kosmos.tokenizer import build_processor, train_tokenizer

SLOTS, SIZE = 4, 32


def jpeg(colour=(200, 30, 30)) -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    Image.new("RGB", (40, 30), colour).save(buffer, format="JPEG")
    return buffer.getvalue()


def word_processor(words: list[str], vocab_size: int):
    """A processor at SIZE px whose tokenizer is learnt from ``words``."""
    return build_processor(train_tokenizer([" ".join(words)] * 5, vocab_size=vocab_size), image_size=SIZE)


def encoder_of(processor) -> SequenceEncoder:
    return SequenceEncoder(processor, SLOTS, SIZE)


def source(kind, paths, encoder, **options):
    """A source of ``kind`` over ``paths`` (file order, no shuffling) with DataConfig ``options``."""
    config = DataConfig(**{"image_size": SIZE, "num_image_tokens": SLOTS, "shuffle_buffer": 0, **options})
    return build_source(SourceSpec(kind, [str(p) for p in paths]), encoder, config)
