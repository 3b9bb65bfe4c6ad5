"""The one encoder: a list of segments (text, image) -> ``input_ids``, masks and labels, for every training source
and for generation prompts, with any number of images per sequence (0..N).

A sequence is ``<s>`` then its segments in order, then ``</s>`` when it ends a document:

- ``Text(text)``: the tokenizer's ids of ``text`` (grounded text is text: ``<phrase>``, ``<object>`` and the
  location tokens are tokenizer tokens); ``train=False`` makes it an input that is never a target (a prompt,
  the ``<grounding>`` flag, an instruction);
- ``Image(pixels)``: ``<image>``, ``num_image_tokens`` slots (ids ``unk + 1 ..``, as ``Kosmos2Processor`` writes
  them) and ``</image>``; the slots are 1 in ``image_embeds_position_mask``, where the model writes the image's
  embeddings (in row order, so the images of a row are in the order of their segments).

Labels are the ids, with -100 on ``<s>``, on every image segment (``<image>``, slots, ``</image>``), on
``train=False`` text and on padding. For one image followed by text this gives exactly what
``Kosmos2Processor`` gives for ``(image, text)`` (tested).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence, Union

import torch

IGNORE = -100


@dataclass(frozen=True)
class Text:
    text: str
    train: bool = True


@dataclass(frozen=True, eq=False)
class Image:
    pixels: torch.Tensor  # (3, H, W), already through the image processor


Segment = Union[Text, Image]


class SequenceTooLong(ValueError):
    """The segments do not fit even when cut (e.g. an image that does not fit after ``<s>``)."""


class SequenceEncoder:
    """Encodes segment lists for one processor (tokenizer + image processor) and one model's image slots."""

    def __init__(self, processor, num_image_tokens: int, image_size: int, image_mode: str = "square"):
        tok = processor.tokenizer
        self.processor, self.tokenizer = processor, tok
        self.num_image_tokens = num_image_tokens
        self.image_size = image_size
        self.image_mode = image_mode
        self.bos, self.eos, self.pad = tok.bos_token_id, tok.eos_token_id, tok.pad_token_id
        self.boi, self.eoi = tok.convert_tokens_to_ids("<image>"), tok.convert_tokens_to_ids("</image>")
        self.line = tok.convert_tokens_to_ids("</line>")
        first = tok.unk_token_id + 1
        self.slots = list(range(first, first + num_image_tokens))

    # ------------------------------------------------------------------ pieces
    def text_ids(self, text: str) -> list[int]:
        return self.tokenizer(text, add_special_tokens=False)["input_ids"]

    def pixels(self, image, image_mode: str | None = None, zoom=None):
        """A PIL image -> ((3, H, W) pixel values, frame): fitted to the model's square input (``image_mode``,
        default the encoder's: square resize or centre crop; ``zoom``: a random part of it), then the image
        processor. ``frame`` is the visible region of the original image (``kosmos.images.prepare_image``)."""
        from kosmos.images import prepare_image

        image, frame = prepare_image(image, self.image_size, image_mode or self.image_mode, zoom)
        return self.processor.image_processor(image, return_tensors="pt")["pixel_values"][0], frame

    def image_length(self) -> int:
        return self.num_image_tokens + 2

    # ------------------------------------------------------------------ one sequence
    def encode(self, segments: Sequence[Segment], max_tokens: int | None = None, add_eos: bool = True,
               add_bos: bool = True) -> dict[str, Any]:
        """Segments -> one row. ``max_tokens`` caps the whole row (``<s>`` and ``</s>`` included): text is cut,
        an image that would not fit whole is dropped with everything after it (never cut inside its slots);
        ``</s>`` is always kept when ``add_eos``."""
        ids: list[int] = [self.bos] if add_bos else []
        labels: list[int] = [IGNORE] if add_bos else []
        mask: list[int] = [0] * len(ids)
        pixels: list[torch.Tensor] = []
        budget = None if max_tokens is None else max_tokens - int(add_eos)
        for segment in segments:
            room = None if budget is None else budget - len(ids)
            if isinstance(segment, Image):
                need = self.image_length()
                if room is not None and need > room:
                    break
                ids += [self.boi, *self.slots, self.eoi]
                labels += [IGNORE] * need
                mask += [0] + [1] * self.num_image_tokens + [0]
                pixels.append(segment.pixels)
            else:
                piece = self.text_ids(segment.text)
                if room is not None and len(piece) > room:
                    piece = piece[: max(room, 0)]
                ids += piece
                labels += piece if segment.train else [IGNORE] * len(piece)
                mask += [0] * len(piece)
                if room is not None and len(ids) >= budget:
                    break
        if add_eos:
            ids.append(self.eos)
            labels.append(self.eos)
            mask.append(0)
        if add_bos and len(ids) <= 1 + int(add_eos):
            raise SequenceTooLong(f"nothing fits in {max_tokens} tokens")
        return self.row(ids, labels, mask, pixels)

    def row(self, ids: list[int], labels: list[int], mask: list[int], pixels: list[torch.Tensor]) -> dict[str, Any]:
        """A row from its token lists (``pixels``: the images in the order of their slots)."""
        input_ids = torch.tensor(ids, dtype=torch.long)
        if pixels:
            pixel_values = torch.stack(pixels)
        else:
            pixel_values = torch.zeros((0, 3, self.image_size, self.image_size))
        return {
            "input_ids": input_ids,
            "attention_mask": torch.ones_like(input_ids),
            "image_embeds_position_mask": torch.tensor(mask, dtype=torch.long),
            "labels": torch.tensor(labels, dtype=torch.long),
            "pixel_values": pixel_values,
        }


def collate(items: list[dict[str, Any]], pad_token_id: int) -> dict[str, Any]:
    """Right-pad rows into a batch (labels -100 and masks 0 on padding). ``pixel_values`` holds every image of
    the batch in row order, ``image_counts`` how many each row has (0 for text-only rows)."""
    length = max(i["input_ids"].numel() for i in items)

    def pad(name, value):
        out = torch.full((len(items), length), value, dtype=torch.long)
        for row, item in enumerate(items):
            out[row, : item[name].numel()] = item[name]
        return out

    pixels = [i["pixel_values"] for i in items]
    return {
        "input_ids": pad("input_ids", pad_token_id),
        "attention_mask": pad("attention_mask", 0),
        "image_embeds_position_mask": pad("image_embeds_position_mask", 0),
        "labels": pad("labels", IGNORE),
        "pixel_values": torch.cat(pixels) if pixels else torch.zeros((0, 3, 1, 1)),
        "image_counts": [int(p.size(0)) for p in pixels],
        "keys": [i.get("key") for i in items],
    }
