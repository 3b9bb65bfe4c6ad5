"""GRIT record <-> Kosmos-2 grounded text (Kosmos-2 paper, section 2, step 2, and section 3.1).

The one serializer of the project: the pipeline writes ``grounded_text`` with it and the ``kosmos`` data
loader builds its training text with it (after moving boxes with its crop).
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Sequence

from grit_pipeline.location import (DEFAULT_CELL_RULE, DEFAULT_GRID, TokenSpelling, box_to_cells, cells_to_box,
                                    check_cell_rule, check_grid, spelling)

DEFAULT_MIN_SCORE = 0.65
PHRASE_MODES = ("expression", "phrase")  # serialize ref_exps (default) or noun_chunks

Box = tuple[float, float, float, float]


@dataclass
class Entity:
    """A caption span ``caption[start:end]`` and the boxes linked to it (normalised xyxy)."""

    start: int
    end: int
    boxes: list[Box] = field(default_factory=list)
    scores: list[float] = field(default_factory=list)


@dataclass
class ParsedText:
    caption: str
    entities: list[Entity]


def _field(record: Any, name: str):
    return record[name] if isinstance(record, dict) else getattr(record, name)


def select_entities(record: Any, min_score: float | None = DEFAULT_MIN_SCORE,
                    phrase_mode: str = "expression") -> list[Entity]:
    """The spans to link in the training text, in caption order.

    Keeps boxes with score > ``min_score`` (None keeps all), groups identical spans into one entity with
    several boxes, and drops every span that another kept span contains (paper, section 2, step 2). ``record`` is a
    ``GritRecord`` or a dict with ``noun_chunks``/``ref_exps`` (e.g. a GrIT-20M sample's json).
    """
    if phrase_mode not in PHRASE_MODES:
        raise ValueError(f"phrase_mode must be one of {PHRASE_MODES}, got {phrase_mode!r}")
    items = _field(record, "ref_exps" if phrase_mode == "expression" else "noun_chunks") or []
    grouped: dict[tuple[int, int], Entity] = {}
    for item in items:
        start, end, x1, y1, x2, y2, score = item
        if min_score is not None and not score > min_score:
            continue
        span = (int(start), int(end))
        entity = grouped.setdefault(span, Entity(*span))
        entity.boxes.append((float(x1), float(y1), float(x2), float(y2)))
        entity.scores.append(float(score))
    spans = sorted(grouped, key=lambda s: (s[0], -s[1]))
    kept: list[Entity] = []
    for span in spans:
        if any(o != span and o[0] <= span[0] and span[1] <= o[1] for o in grouped):
            continue  # contained in a longer expression
        if kept and span[0] < kept[-1].end:
            # A partial overlap (no containment) cannot be written as nested markup: the earlier span wins.
            continue
        kept.append(grouped[span])
    return kept


def serialize_entities(caption: str, entities: Sequence[Entity], fmt: str = "hf", grid: int = DEFAULT_GRID,
                       grounding: bool = True, cell_rule: str = DEFAULT_CELL_RULE) -> str:
    """Write ``caption`` with each entity wrapped as ``<phrase>span</phrase><object>locations</object>``.

    Entities must be in caption order and must not overlap. As in Kosmos-2's own outputs, a space just
    before a phrase goes inside the phrase tag (``of<phrase> a dog</phrase>``), which keeps the
    tokenisation of the caption words unchanged. ``cell_rule`` picks the lower-right cell encoding
    (``grit_pipeline.location``).
    """
    tokens = spelling(fmt)
    check_grid(grid)
    check_cell_rule(cell_rule)
    pieces = [tokens.grounding] if grounding else []
    position = 0
    for entity in entities:
        if entity.start < position or not (0 <= entity.start < entity.end <= len(caption)):
            raise ValueError(f"entity [{entity.start}, {entity.end}) is out of order, overlapping or outside "
                             f"the caption (length {len(caption)})")
        if not entity.boxes:
            raise ValueError(f"entity [{entity.start}, {entity.end}) has no box")
        phrase_start = entity.start
        while phrase_start > position and caption[phrase_start - 1] == " ":
            phrase_start -= 1
        pieces.append(caption[position:phrase_start])
        pieces.append(tokens.phrase_open + caption[phrase_start:entity.end] + tokens.phrase_close)
        pieces.append(_object_markup(entity.boxes, tokens, grid, cell_rule))
        position = entity.end
    pieces.append(caption[position:])
    return "".join(pieces)


def _object_markup(boxes: Sequence[Box], tokens: TokenSpelling, grid: int, cell_rule: str) -> str:
    locations = []
    for box in boxes:
        ul, lr = box_to_cells(box, grid, cell_rule)
        locations.append(tokens.location(ul) + tokens.location(lr))
    return tokens.object_open + tokens.delimiter.join(locations) + tokens.object_close


def grounded_text(record: Any, fmt: str = "hf", min_score: float | None = DEFAULT_MIN_SCORE,
                  phrase_mode: str = "expression", grid: int = DEFAULT_GRID,
                  cell_rule: str = DEFAULT_CELL_RULE) -> str:
    """``<grounding>`` + the record's caption with its kept spans linked to their location tokens.

    A record with no span left to link is its plain caption, without ``<grounding>``, as the released
    training loader writes such a sample."""
    entities = select_entities(record, min_score=min_score, phrase_mode=phrase_mode)
    return serialize_entities(_field(record, "caption"), entities, fmt=fmt, grid=grid, cell_rule=cell_rule,
                              grounding=bool(entities))


def parse_grounded_text(text: str, fmt: str = "hf", grid: int = DEFAULT_GRID) -> ParsedText:
    """Read grounded text back to its caption and entities (spans into the caption, decoded boxes).

    Tolerant of model output: a phrase without an object stays plain text, an object without a phrase
    gives an empty-span entity at its position, malformed location groups are skipped.
    """
    tokens = spelling(fmt)
    prefix, suffix = re.split(r"\{[^}]*\}", tokens.location_format)
    location_re = re.escape(prefix) + r"(?P<index>\d+)" + re.escape(suffix)
    markup = re.compile(
        "|".join(
            [f"(?P<loc>{location_re})"]
            + [f"(?P<{name}>{re.escape(value)})" for name, value in (
                ("grounding", tokens.grounding), ("popen", tokens.phrase_open), ("pclose", tokens.phrase_close),
                ("oopen", tokens.object_open), ("oclose", tokens.object_close), ("delim", tokens.delimiter))]
        )
    )
    caption: list[str] = []
    length = 0
    entities: list[Entity] = []
    phrase_start: int | None = None
    last_phrase: tuple[int, int] | None = None  # closed phrase awaiting its object
    in_object = False
    locations: list[int] = []
    boxes: list[Box] = []
    position = 0
    for match in markup.finditer(text):
        if match.start() > position:
            chunk = text[position:match.start()]
            if not in_object:  # stray text inside an object is dropped
                caption.append(chunk)
                length += len(chunk)
                last_phrase = None  # text between </phrase> and <object>: the phrase is not linked
        position = match.end()
        kind = match.lastgroup
        if kind == "popen":
            phrase_start, last_phrase = length, None
        elif kind == "pclose" and phrase_start is not None:
            last_phrase, phrase_start = (phrase_start, length), None
        elif kind == "oopen":
            in_object, locations, boxes = True, [], []
        elif kind == "loc" and in_object:
            locations.append(int(match.group("index")))
        elif kind == "delim" and in_object:
            boxes.extend(_pairs_to_boxes(locations, grid))
            locations = []
        elif kind == "oclose" and in_object:
            boxes.extend(_pairs_to_boxes(locations, grid))
            in_object = False
            if boxes:
                start, end = last_phrase if last_phrase else (length, length)
                start, end = _strip_span("".join(caption), start, end)
                entities.append(Entity(start, end, boxes))
            last_phrase = None
    if position < len(text) and not in_object:
        caption.append(text[position:])
    return ParsedText("".join(caption), entities)


def _pairs_to_boxes(locations: list[int], grid: int) -> list[Box]:
    if len(locations) != 2 or not all(0 <= i < grid * grid for i in locations):
        return []
    return [cells_to_box(locations[0], locations[1], grid)]


def _strip_span(caption: str, start: int, end: int) -> tuple[int, int]:
    # The space moved inside the phrase tag belongs to the text before the span.
    while start < end and caption[start].isspace():
        start += 1
    while end > start and caption[end - 1].isspace():
        end -= 1
    return start, end
