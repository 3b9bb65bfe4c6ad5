"""Grounded instruction data from GRIT records (Kosmos-2 paper, section 3 and Table 9).

The authors turned GRIT's (expression, box) pairs into instruction data but never released how. Two kinds of
turn are made here from one record, both written with the project's one serializer
(``grit_pipeline.serialize.serialize_entities``), so spellings, the space rule and the cell rule are those of
``grounded_text``:

- expression -> box: the instruction is the expression between phrase tags (``<phrase>a red dog</phrase>``),
  the answer its ``<object>`` with every box of the expression (joined by the delimiter);
- box -> expression: one of the six Table 9 templates around one of the expression's boxes
  (``What is<phrase> it</phrase><object>...</object>?``), the answer the expression.

Which expressions, boxes, templates and the order of the turns are a deterministic function of
``(seed, key)`` (``record_rng``). A record becomes one LLaVA-style conversation (``conversations``: human / gpt
turns, the first human turn opening with ``<image>\\n`` as in LLaVA-Instruct) or an ``InstructReject`` with a
status of ``grit_pipeline.status`` and a reason. Plain functions over plain records; ``instruct_build`` runs
them over a GRIT build shard by shard.
"""
from __future__ import annotations

import random
import zlib
from dataclasses import dataclass, field
from typing import Any, Sequence

from grit_pipeline import status as S
from grit_pipeline.limits import MAX_CAPTION_CHARS
from grit_pipeline.location import DEFAULT_CELL_RULE, DEFAULT_GRID, spelling
from grit_pipeline.record import GritRecord, RecordError
from grit_pipeline.serialize import DEFAULT_MIN_SCORE, Entity, select_entities, serialize_entities

EXPRESSION_TO_BOX = "expression_to_box"
BOX_TO_EXPRESSION = "box_to_expression"
IMAGE_MARK = "<image>"  # LLaVA-Instruct's image slot in the first human turn


@dataclass(frozen=True)
class BoxTemplate:
    """One Table 9 template: its plain text and the words in it that carry the box."""

    name: str
    text: str
    phrase: str

    def render(self, box, fmt: str = "hf", grid: int = DEFAULT_GRID, cell_rule: str = DEFAULT_CELL_RULE) -> str:
        """The template with ``phrase`` linked to ``box`` (e.g. ``What is<phrase> it</phrase><object>..</object>?``)."""
        start = self.text.index(self.phrase)
        entity = Entity(start, start + len(self.phrase), [tuple(box)])
        return serialize_entities(self.text, [entity], fmt=fmt, grid=grid, grounding=False, cell_rule=cell_rule)


# Kosmos-2 Table 9, in the paper's order (its "<p> it </p><box>..</box>" spacing is the paper's tokenised view;
# written text follows serialize_entities: a space before a phrase goes inside the phrase tag).
BOX_TEMPLATES = (
    BoxTemplate("what_is_it", "What is it?", "it"),
    BoxTemplate("what_is_this", "What is this?", "this"),
    BoxTemplate("describe_this_object", "Describe this object", "this object"),
    BoxTemplate("it", "It", "It"),
    BoxTemplate("this", "This", "This"),
    BoxTemplate("the_object", "The object", "The object"),
)
TEMPLATES = {t.name: t for t in BOX_TEMPLATES}
TEMPLATE_NAMES = tuple(TEMPLATES)


@dataclass(frozen=True)
class InstructParams:
    """What shapes the samples of a record (every field is an output-affecting parameter)."""

    seed: int = 0
    expression_to_box: int = 1    # expression -> box turns per record (at most one per expression)
    box_to_expression: int = 1    # box -> expression turns per record (at most one per expression)
    templates: tuple[str, ...] = TEMPLATE_NAMES
    fmt: str = "hf"               # "hf" (release spelling) or "paper"
    min_score: float = DEFAULT_MIN_SCORE
    phrase_mode: str = "expression"  # expressions (ref_exps) or bare noun chunks
    grid: int = DEFAULT_GRID
    cell_rule: str = DEFAULT_CELL_RULE
    max_caption_chars: int = MAX_CAPTION_CHARS

    def problems(self) -> list[str]:
        """Settings that cannot work, one line each."""
        out = []
        for name in ("expression_to_box", "box_to_expression"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                out.append(f"{name} must be a whole number >= 0, got {value!r}")
        if self.expression_to_box == 0 and self.box_to_expression == 0:
            out.append("expression_to_box and box_to_expression are both 0: no sample would be made")
        unknown = [t for t in self.templates if t not in TEMPLATES]
        if unknown or not self.templates:
            out.append(f"templates must be some of {', '.join(TEMPLATE_NAMES)}, got {', '.join(self.templates) or 'none'}")
        spelling(self.fmt)  # raises ValueError for an unknown spelling
        return out


class InstructReject(ValueError):
    """A record that gives no sample: ``status`` (grit_pipeline.status) and a one-line ``reason``."""

    def __init__(self, status: str, reason: str):
        self.status, self.reason = status, reason
        super().__init__(f"{status}: {reason}")


def record_rng(seed: int, key: str) -> random.Random:
    """The random choices of one record: the same (seed, key) always gives the same samples."""
    return random.Random(zlib.crc32(f"grit-instruct/{seed}/{key}".encode("utf-8")))


def expression_to_box_turn(expression: str, boxes: Sequence, fmt: str = "hf", grid: int = DEFAULT_GRID,
                           cell_rule: str = DEFAULT_CELL_RULE) -> tuple[str, str]:
    """(instruction, answer): ``<phrase>expression</phrase>`` and ``<object>`` with every box."""
    tokens = spelling(fmt)
    linked = serialize_entities(expression, [Entity(0, len(expression), [tuple(b) for b in boxes])], fmt=fmt,
                                grid=grid, grounding=False, cell_rule=cell_rule)
    instruction = tokens.phrase_open + expression + tokens.phrase_close
    assert linked.startswith(instruction), linked  # the serializer's own layout
    return instruction, linked[len(instruction):]


def box_to_expression_turn(template: str, box, expression: str, fmt: str = "hf", grid: int = DEFAULT_GRID,
                           cell_rule: str = DEFAULT_CELL_RULE) -> tuple[str, str]:
    """(instruction, answer): the Table 9 template around ``box``, and the expression."""
    return TEMPLATES[template].render(box, fmt=fmt, grid=grid, cell_rule=cell_rule), expression


def checked_record(record: dict[str, Any], max_caption_chars: int = MAX_CAPTION_CHARS) -> GritRecord:
    """The record as a validated ``GritRecord``, or ``InstructReject`` naming what is wrong (a caption that is
    missing, not text or too long: ``bad_caption``; a span, box or score out of range: ``bad_metadata``)."""
    caption = record.get("caption")
    if not isinstance(caption, str) or not caption.strip():
        raise InstructReject(S.BAD_CAPTION, f"caption missing or not text ({type(caption).__name__})")
    if len(caption) > max_caption_chars:
        raise InstructReject(S.BAD_CAPTION, f"caption is {len(caption)} characters long (> max_caption_chars "
                                            f"{max_caption_chars})")
    if not record.get("ref_exps") and not record.get("noun_chunks"):
        raise InstructReject(S.BAD_METADATA, "the record has no noun_chunks / ref_exps (not a GRIT record)")
    try:
        return GritRecord.from_dict({**record, "width": record.get("width") or 1,
                                     "height": record.get("height") or 1})
    except RecordError as error:
        raise InstructReject(S.BAD_METADATA, f"{error.field_name}: {error.problem}") from None
    except (TypeError, ValueError) as error:
        raise InstructReject(S.BAD_METADATA, f"unreadable spans: {error}") from None


@dataclass
class Conversation:
    """A record's instruction sample: LLaVA-style turns and what each question/answer pair was made from."""

    conversations: list[dict[str, str]] = field(default_factory=list)
    samples: list[dict[str, Any]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {"conversations": self.conversations, "samples": self.samples}


def make_conversation(record: dict[str, Any], params: InstructParams = InstructParams()) -> Conversation:
    """One record (dict with key, caption, noun_chunks, ref_exps) -> its instruction conversation.

    Expressions are those ``select_entities`` links in the training text (score > ``min_score``, identical
    spans grouped with all their boxes, contained expressions dropped). Raises ``InstructReject``."""
    key = str(record.get("key"))
    grit = checked_record(record, params.max_caption_chars)
    entities = select_entities(grit, min_score=params.min_score, phrase_mode=params.phrase_mode)
    if not entities:
        raise InstructReject(S.NO_BOX, f"no {params.phrase_mode} has a box scoring above {params.min_score}")
    rng = record_rng(params.seed, key)
    samples = []
    for entity in rng.sample(entities, min(params.expression_to_box, len(entities))):
        expression = grit.caption[entity.start:entity.end]
        instruction, answer = expression_to_box_turn(expression, entity.boxes, params.fmt, params.grid,
                                                     params.cell_rule)
        samples.append({"task": EXPRESSION_TO_BOX, "template": "phrase", "expression": expression,
                        "span": [entity.start, entity.end], "boxes": [list(b) for b in entity.boxes],
                        "instruction": instruction, "answer": answer})
    for entity in rng.sample(entities, min(params.box_to_expression, len(entities))):
        expression = grit.caption[entity.start:entity.end]
        box = entity.boxes[rng.randrange(len(entity.boxes))]
        template = params.templates[rng.randrange(len(params.templates))]
        instruction, answer = box_to_expression_turn(template, box, expression, params.fmt, params.grid,
                                                     params.cell_rule)
        samples.append({"task": BOX_TO_EXPRESSION, "template": template, "expression": expression,
                        "span": [entity.start, entity.end], "boxes": [list(box)],
                        "instruction": instruction, "answer": answer})
    rng.shuffle(samples)
    turns = []
    for i, sample in enumerate(samples):
        question = (IMAGE_MARK + "\n" if i == 0 else "") + sample["instruction"]
        turns += [{"from": "human", "value": question}, {"from": "gpt", "value": sample["answer"]}]
    return Conversation(turns, samples)
