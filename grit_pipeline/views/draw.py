"""Boxes and their phrases drawn into the picture itself (PIL), for ``grit ground --draw`` and the Kosmos-2 chat and
demo page: one colour per phrase (the gallery's palette), each box's outline in it and the phrase on a filled label
just above the box's top left corner."""
from __future__ import annotations

from typing import Sequence

from PIL import Image, ImageDraw, ImageFont

from grit_pipeline.views.html import PALETTE

Entity = tuple[str, Sequence[Sequence[float]]]  # (phrase, [normalised x1, y1, x2, y2 boxes])
MAX_LABEL_CHARS = 40


def rgb(colour: str) -> tuple[int, int, int]:
    """``#rrggbb`` -> (r, g, b)."""
    return tuple(int(colour[i:i + 2], 16) for i in (1, 3, 5))


COLOURS = tuple(rgb(colour) for colour in PALETTE)


def colour_of(index: int) -> tuple[int, int, int]:
    """The colour of the ``index``-th phrase (cycled past the palette's length)."""
    return COLOURS[index % len(COLOURS)]


def outline_width(width: int, height: int) -> int:
    """Box outline in pixels: 1 % of the shorter side, at least one pixel."""
    return max(1, round(min(width, height) / 100))


def draw_entities(image: Image.Image, entities: Sequence[Entity]) -> Image.Image:
    """A copy of ``image`` (RGB) with entity i's boxes outlined in ``colour_of(i)`` and its phrase on a label of
    that colour. Boxes are normalised to the image; a box outside [0, 1] is clipped to it."""
    canvas = image.convert("RGB")  # convert() always returns a new image: the caller's stays as it was
    draw = ImageDraw.Draw(canvas)
    width, height = canvas.size
    line = outline_width(width, height)
    font = _font(max(10, min(width, height) // 30))
    for i, (phrase, boxes) in enumerate(entities):
        colour = colour_of(i)
        for box in boxes:
            x1, y1, x2, y2 = (min(max(float(v), 0.0), 1.0) for v in box)
            left, top = x1 * width, y1 * height
            right, bottom = max(left, x2 * width - 1), max(top, y2 * height - 1)
            draw.rectangle([left, top, right, bottom], outline=colour, width=line)
            label = phrase[:MAX_LABEL_CHARS]
            if label:
                _label(draw, label, colour, font, (left, top, right, bottom), line, (width, height))
    return canvas


def _label(draw, text, colour, font, box, line, size) -> None:
    """The phrase on a filled label just above the box's top left corner (inside the box when there is no room
    above), kept within the image."""
    left, top, _, _ = box
    width, height = size
    x0, y0, x1, y1 = draw.textbbox((0, 0), text, font=font)
    text_w, text_h = x1 - x0 + 2, y1 - y0 + 2
    x = min(max(0, left), max(0, width - text_w))
    y = top - text_h if top - text_h >= 0 else top + line
    draw.rectangle([x, y, x + text_w - 1, y + text_h - 1], fill=colour)
    draw.text((x + 1 - x0, y + 1 - y0), text, fill=_text_colour(colour), font=font)


def _text_colour(background: tuple[int, int, int]) -> tuple[int, int, int]:
    r, g, b = background
    return (0, 0, 0) if 0.299 * r + 0.587 * g + 0.114 * b > 150 else (255, 255, 255)


def _font(size: int):
    try:
        return ImageFont.load_default(size=size)  # a scalable font when PIL has FreeType
    except (TypeError, OSError, ImportError):
        return ImageFont.load_default()
