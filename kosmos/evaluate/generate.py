"""Batched generation from prompts with any number of images (interleaved few-shot prompts included).

A :class:`Query` is a prompt after its image, optionally preceded by ``segments`` (``("text", str)`` and
``("image", path)`` items in order: the demonstrations). Every prompt goes through the one encoder
(``kosmos.sequence.SequenceEncoder``), as training text does.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Callable, Iterator, Mapping

import torch

from kosmos.sequence import Image, SequenceEncoder, Text


@dataclass(frozen=True)
class Decoding:
    """How one task generates: the prompt template as the paper writes it, and the decoding settings."""

    prompt: str
    num_beams: int = 1
    no_repeat_ngram_size: int = 0
    max_new_tokens: int = 32


@dataclass
class Query:
    """One generation: ``prompt`` after the image at ``image_path``; or, with ``segments``, an interleaved prompt
    (``("text", str)`` and ``("image", path)`` items in order, e.g. few-shot demonstrations) followed by ``prompt``."""

    id: Any
    image_path: str | None
    prompt: str
    task: str
    segments: tuple = ()


class ImageCache:
    """Pixels of image files for one encoder, each file read and fitted once (demonstrations repeat)."""

    def __init__(self, encoder: SequenceEncoder, limit: int = 256):
        self.encoder, self.limit, self.cache = encoder, limit, {}

    def __call__(self, path: str):
        if path not in self.cache:
            from PIL.Image import open as image_open

            if len(self.cache) >= self.limit:
                self.cache.pop(next(iter(self.cache)))
            with image_open(path) as raw:
                self.cache[path] = self.encoder.pixels(raw.convert("RGB"))
        return self.cache[path]


def query_segments(query: Query, pixels: ImageCache) -> tuple[list, tuple]:
    """The query as encoder segments (demonstrations, image, prompt) and the frame of its last image."""
    segments, frame = [], (0.0, 0.0, 1.0, 1.0)
    items = list(query.segments) + ([("image", query.image_path)] if query.image_path else [])
    for kind, value in items:
        if kind == "image":
            tensor, frame = pixels(value)
            segments.append(Image(tensor))
        else:
            segments.append(Text(value))
    return segments + [Text(query.prompt)], frame


def generate(model, processor, queries: list[Query], decoding: Callable[[str], Decoding] | Mapping[str, Decoding],
             batch_size: int = 16, image_mode: str = "square", device=None, progress=None) -> Iterator[dict[str, Any]]:
    """Generate for each query with its task's decoding settings (``decoding[task]`` or ``decoding(task)``).
    Queries are batched by (task, prompt length, image count), so no padding ever shifts Kosmos-2's position ids."""
    lookup = decoding.__getitem__ if isinstance(decoding, Mapping) else decoding
    device = device or next(model.parameters()).device
    encoder = SequenceEncoder(processor, model.config.latent_query_num, model.config.vision_config.image_size,
                              image_mode)
    pixels = ImageCache(encoder)

    buckets: dict[tuple, list[Query]] = {}
    for query in queries:
        length = sum(len(encoder.text_ids(v)) if k == "text" else encoder.image_length() for k, v in query.segments)
        length += len(processor.tokenizer(query.prompt, add_special_tokens=False)["input_ids"])
        images = sum(k == "image" for k, _ in query.segments) + int(bool(query.image_path))
        buckets.setdefault((query.task, length, images), []).append(query)
    done = 0
    for (task, _, _), bucket in buckets.items():
        settings = lookup(task)
        for start in range(0, len(bucket), batch_size):
            chunk, frames, items = bucket[start:start + batch_size], [], []
            for query in chunk:
                segments, frame = query_segments(query, pixels)
                items.append(encoder.encode(segments, add_eos=False))  # the prompt: no </s>
                frames.append(frame)
            lengths = {item["input_ids"].numel() for item in items}
            if len(lengths) != 1:  # cannot happen unless the tokenizer is context-dependent; stay correct
                raise RuntimeError(f"prompts of one bucket encode to different lengths {sorted(lengths)}")
            inputs = {name: torch.stack([item[name] for item in items]).to(device) for name in
                      ("input_ids", "attention_mask", "image_embeds_position_mask")}
            inputs["pixel_values"] = torch.cat([item["pixel_values"] for item in items]).to(device)
            with torch.no_grad():
                output = model.generate(
                    **inputs, max_new_tokens=settings.max_new_tokens, num_beams=settings.num_beams,
                    no_repeat_ngram_size=settings.no_repeat_ngram_size or None, do_sample=False,
                    use_cache=True, pad_token_id=processor.tokenizer.pad_token_id,
                    eos_token_id=processor.tokenizer.eos_token_id)
            prompt_len = inputs["input_ids"].size(1)
            texts = processor.batch_decode(output, skip_special_tokens=True)
            continuations = processor.batch_decode(output[:, prompt_len:], skip_special_tokens=True)
            for query, frame, text, continuation in zip(chunk, frames, texts, continuations):
                yield {"id": query.id, "text": processor.post_process_generation(text, cleanup_and_extract=False),
                       "generated": continuation, "frame": [round(v, 6) for v in frame]}
            done += len(chunk)
            if progress:
                progress(done, len(queries))


def clean_answer(text: str, stops: tuple[str, ...] = ()) -> str:
    """The generated continuation as a caption / answer: tags removed, cut at the first of ``stops`` (a few-shot
    prompt's next "Question:"), first line, stripped."""
    text = re.sub(r"<[^>]*>", "", text)
    for stop in stops:
        text = text.split(stop)[0]
    return text.strip().split("\n")[0].strip()
