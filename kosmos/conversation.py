"""The conversation template: how instruction turns are written around the image, in training and in generation.

Kosmos-2 never published how its instruction data was laid out. The template here (``qa``, the default) reuses
the Kosmos VQA prompt ("Question: {q} Answer:", paper section 4), so an instruction-tuned model and the VQA
evaluation share one format. A conversation of n (human, gpt) turns is one sequence::

    <s> <image> slots </image> [<grounding>] Question: {human 1} Answer: {gpt 1} Question: {human 2} Answer: {gpt 2}</s>

- the image (when there is one) comes first, as in pre-training; LLaVA's ``<image>`` mark in a human turn is
  removed (wherever it was);
- ``<grounding>`` follows the image when a turn holds grounding markup (``grounding="auto"``), as the grounded
  pre-training samples do; it is an input, never a target;
- every human turn with its role words is an input (``Text(train=False)``); every answer is a target (``Text``),
  ``</s>`` after the last answer is a target (the model learns to stop);
- a role word is joined to text that starts with markup (``<phrase>``, ``<object>``) without a space, so the
  markup tokenises as in the pre-training text (the serializer's rule); other text gets one space.

Other templates: ``chat`` ("User: ... Assistant: ...", turns on their own lines) and ``plain`` (turns one after
the other, no role words). ``kosmos chat`` builds its prompts with ``prompt_segments`` from the same template.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Sequence

from kosmos.sequence import Image, Text

IMAGE_MARK = re.compile(r"\s*<image>\s*")
MARKUP_START = ("<phrase>", "<object>", "<grounding>")
GROUNDING_MARKUP = ("<phrase>", "<object>")


@dataclass(frozen=True)
class ConversationTemplate:
    """Role words around the turns: ``human`` before a question, ``gpt`` between a question and its answer,
    ``separator`` between an answer and the next question."""

    name: str
    human: str
    gpt: str
    separator: str


TEMPLATES = {
    "qa": ConversationTemplate("qa", human="Question:", gpt=" Answer:", separator=" "),
    "chat": ConversationTemplate("chat", human="User:", gpt="\nAssistant:", separator="\n"),
    "plain": ConversationTemplate("plain", human="", gpt="", separator=" "),
}
DEFAULT_TEMPLATE = "qa"


def get_template(name: str) -> ConversationTemplate:
    try:
        return TEMPLATES[name]
    except KeyError:
        raise ValueError(f"unknown conversation template {name!r}; choose one of {sorted(TEMPLATES)}") from None


def join(prefix: str, text: str) -> str:
    """``prefix`` then ``text``: one space between, none before markup or after an empty prefix."""
    if not prefix:
        return text
    if text.startswith(MARKUP_START):
        return prefix + text
    return f"{prefix} {text}"


def strip_image_mark(text: str) -> str:
    return IMAGE_MARK.sub(" ", text).strip()


def turns_of(conversations: Any) -> list[tuple[str, str]]:
    """LLaVA-style ``[{"from": "human"|"gpt", "value": str}, ...]`` -> (question, answer) pairs.

    Roles ``user``/``assistant`` are read as human/gpt, a leading ``system`` turn is dropped. Raises ValueError
    for anything else (not alternating, an empty value, a trailing question)."""
    if not isinstance(conversations, list) or not conversations:
        raise ValueError("conversations must be a non-empty list")
    roles = {"human": "human", "user": "human", "gpt": "gpt", "assistant": "gpt"}
    items = []
    for turn in conversations:
        if not isinstance(turn, dict) or not isinstance(turn.get("value"), str):
            raise ValueError(f"a turn must be an object with a text 'value', got {str(turn)[:80]!r}")
        role = str(turn.get("from", "")).lower()
        if role == "system" and not items:
            continue
        if role not in roles:
            raise ValueError(f"unknown turn role {turn.get('from')!r}")
        items.append((roles[role], turn["value"]))
    if len(items) % 2 or any(role != ("human", "gpt")[i % 2] for i, (role, _) in enumerate(items)):
        raise ValueError("turns must alternate human, gpt, ... and end with an answer")
    pairs = [(strip_image_mark(items[i][1]), items[i + 1][1].strip()) for i in range(0, len(items), 2)]
    if any(not q or not a for q, a in pairs):
        raise ValueError("a question or an answer is empty")
    return pairs


def has_image_mark(conversations: Any) -> bool:
    return isinstance(conversations, list) and any(
        isinstance(t, dict) and isinstance(t.get("value"), str) and "<image>" in t["value"] for t in conversations)


def is_grounded(turns: Sequence[tuple[str, str]]) -> bool:
    return any(m in text for pair in turns for text in pair for m in GROUNDING_MARKUP)


def _question(template: ConversationTemplate, question: str, first: bool) -> str:
    return ("" if first else template.separator) + join(template.human, question) + template.gpt


def conversation_segments(turns: Sequence[tuple[str, str]], template: ConversationTemplate | str = DEFAULT_TEMPLATE,
                          pixels=None, grounding: str | bool = "auto") -> list:
    """A whole conversation as segments for ``SequenceEncoder.encode``: questions as inputs, answers as targets.
    ``grounding``: "auto" (``<grounding>`` when a turn holds grounding markup), True or False."""
    template = get_template(template) if isinstance(template, str) else template
    segments = _opening(turns, pixels, grounding)
    for i, (question, answer) in enumerate(turns):
        segments.append(Text(_question(template, question, i == 0), train=False))
        segments.append(Text(_answer(answer)))
    return segments


def conversation_text(turns: Sequence[tuple[str, str]], template: ConversationTemplate | str = DEFAULT_TEMPLATE) -> str:
    """The text of a conversation as the template writes it (what a tokenizer learnt from it should see)."""
    return "".join(s.text for s in conversation_segments(turns, template, grounding=False))


def prompt_segments(history: Sequence[tuple[str, str]], question: str,
                    template: ConversationTemplate | str = DEFAULT_TEMPLATE, pixels=None,
                    grounding: str | bool = True) -> list:
    """The prompt of the next answer: earlier turns, then ``question`` and the answer's role words (encode it
    with ``add_eos=False``; the model continues with the answer). Written exactly as in training."""
    template = get_template(template) if isinstance(template, str) else template
    segments = _opening([*history, (question, "")], pixels, grounding)
    for i, (earlier, answer) in enumerate(history):
        segments.append(Text(_question(template, earlier, i == 0), train=False))
        segments.append(Text(_answer(answer)))
    segments.append(Text(_question(template, question, not history), train=False))
    return segments


def _answer(answer: str) -> str:
    """An answer after its role words: markup directly, words after one space."""
    return answer if answer.startswith(MARKUP_START) else " " + answer


def _opening(turns, pixels, grounding) -> list:
    segments: list = [] if pixels is None else [Image(pixels)]
    if grounding is True or (grounding == "auto" and is_grounded(turns)):
        segments.append(Text("<grounding>", train=False))
    return segments
