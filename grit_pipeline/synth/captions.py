"""Caption templates for synthetic scenes, with the truth spans of every phrase they write.

The templates stress the text rules: spatial relations and prepositional chains, relative clauses,
conjunctions, abstract nouns ("a moment of peace"), phrases naming things absent from the image, plural
groups and pronoun references. Each phrase is written through ``CaptionBuilder`` so its character
offsets are exact by construction.
"""
from __future__ import annotations

import random
from dataclasses import dataclass, field

from .scene import Scene, SceneObject
from .vocab import (ABSENT_NOUNS, ABSTRACT_PHRASES, BACKGROUNDS, COLOURS, COUNT_WORDS, LARGE_WORDS, PLACES,
                    PLURAL, SHAPES, SMALL_WORDS, article)

OBJECT, ABSENT, IGNORE = "object", "absent", "ignore"


@dataclass
class Mention:
    """One phrase in the caption. ``kind``: object (boxes = its objects), absent (must get no box),
    ignore (a box there is neither right nor wrong: pronouns, backgrounds, "a photo")."""

    kind: str
    span: tuple[int, int]
    head: tuple[int, int]
    ref: tuple[int, int]
    objects: list[int] = field(default_factory=list)   # indices into scene.objects
    refers_to: list[int] = field(default_factory=list)  # pronouns: the objects they stand for


@dataclass
class Caption:
    text: str
    mentions: list[Mention]


class CaptionBuilder:
    def __init__(self) -> None:
        self.parts: list[str] = []
        self.pos = 0
        self.mentions: list[Mention] = []

    def text(self, s: str) -> "CaptionBuilder":
        self.parts.append(s)
        self.pos += len(s)
        return self

    def phrase(self, s: str, head_word: str, kind: str, objects=(), refers_to=()) -> Mention:
        start = self.pos
        h = s.rfind(head_word)
        assert h >= 0, (s, head_word)
        self.text(s)
        m = Mention(kind, (start, self.pos), (start + h, start + h + len(head_word)), (start, self.pos),
                    list(objects), list(refers_to))
        self.mentions.append(m)
        return m

    def extend_ref(self, m: Mention) -> None:
        """The referring expression of ``m`` runs to the current position."""
        m.ref = (m.ref[0], self.pos)

    def build(self) -> Caption:
        return Caption("".join(self.parts), self.mentions)


def _groups(scene: Scene) -> list[list[int]]:
    groups: dict[int, list[int]] = {}
    for i, obj in enumerate(scene.objects):
        groups.setdefault(obj.group, []).append(i)
    return [groups[g] for g in sorted(groups)]


def _group_phrase(rng: random.Random, scene: Scene, idx: list[int], start_of_caption: bool) -> tuple[str, str]:
    obj = scene.objects[idx[0]]
    if len(idx) == 1:
        words = []
        if obj.size == "small" and rng.random() < 0.6:
            words.append(rng.choice(SMALL_WORDS))
        elif obj.size == "large" and rng.random() < 0.6:
            words.append(rng.choice(LARGE_WORDS))
        words += [obj.colour, obj.shape]
        det = rng.choice(["a", "a", "the"])
        if det == "a":
            det = article(words[0])
        return f"{det} {' '.join(words)}", obj.shape
    det = rng.choice([COUNT_WORDS[len(idx)], COUNT_WORDS[len(idx)], "the", "some", ""])
    noun = PLURAL[obj.shape]
    return (f"{det} {obj.colour} {noun}".strip(), noun)


def _relation(a: SceneObject, b: SceneObject, rng: random.Random) -> str:
    dx = b.centre[0] - a.centre[0]
    dy = b.centre[1] - a.centre[1]
    dist = (dx * dx + dy * dy) ** 0.5
    if dist < 1.6 * (a.radius + b.radius) and rng.random() < 0.4:
        return rng.choice(["next to", "beside", "near", "close to"])
    if abs(dx) > abs(dy):
        return "left of" if dx > 0 else "right of"   # a is left of b when b lies to the right
    return "above" if dy > 0 else "below"


def _absent_combo(rng: random.Random, scene: Scene) -> tuple[str, str]:
    present = {(o.shape, o.colour) for o in scene.objects}
    while True:
        # hard negatives: share the shape or the colour of something that is there
        ref = rng.choice(scene.objects) if scene.objects else None
        shape = ref.shape if ref and rng.random() < 0.4 else rng.choice(SHAPES)
        colour = ref.colour if ref and rng.random() < 0.4 else rng.choice(list(COLOURS))
        if (shape, colour) not in present:
            return colour, shape


def make_short_caption(rng: random.Random, scene: Scene) -> Caption:
    """Curriculum captions (levels 1 and 2): one phrase naming one object ("a small red square"); with two
    objects the other is a distractor the caption does not mention."""
    b = CaptionBuilder()
    target = rng.randrange(len(scene.objects))
    text, head = _group_phrase(rng, scene, [target], True)
    b.phrase(text, head, OBJECT, objects=[target])
    return b.build()


def make_caption(rng: random.Random, scene: Scene, level: int = 3) -> Caption:
    """A caption for ``scene`` with exact spans for every phrase, drawn from varied templates (level 3) or
    one short phrase (levels 1 and 2, see ``make_short_caption``)."""
    if level < 3:
        return make_short_caption(rng, scene)
    b = CaptionBuilder()
    groups = _groups(scene)
    rng.shuffle(groups)

    # optional framing: "a photo of ...", "a moment of peace: ..."
    opener = rng.random()
    if opener < 0.12:
        noun = rng.choice(["photo", "picture", "image"])
        b.phrase(f"{article(noun)} {noun}", noun, IGNORE)
        b.text(" of ")
    elif opener < 0.25:
        _abstract(b, rng)
        b.text(": ")

    def say(idx: list[int]) -> Mention:
        text, head = _group_phrase(rng, scene, idx, b.pos == 0)
        return b.phrase(text, head, OBJECT, objects=idx)

    style = rng.random()
    mentions: list[Mention] = []
    if len(groups) == 1:
        m = say(groups[0])
        mentions.append(m)
        if rng.random() < 0.5:
            _background(b, rng, scene, attach=[m])
    elif len(groups) >= 3 and style < 0.5:
        # conjunction: "A, B and C on a striped background" (A has conjuncts: not expanded)
        for k, idx in enumerate(groups):
            if k:
                b.text(" and " if k == len(groups) - 1 else ", ")
            mentions.append(say(idx))
        if rng.random() < 0.5:
            _background(b, rng, scene, attach=[mentions[-1]])
    else:
        # prepositional chain / relative clause: "A rel B", "A that is rel B", "A, which is rel B,"
        first, second = groups[0], groups[1]
        rel = _relation(scene.objects[first[0]], scene.objects[second[0]], rng)
        m1 = say(first)
        mentions.append(m1)
        clause = rng.random()
        if clause < 0.5:
            b.text(f" {rel} ")
        elif clause < 0.75:
            b.text(" ")
            b.phrase("that", "that", IGNORE)
            b.text(f" is {rel} ")
        else:
            b.text(" ")
            b.phrase("which", "which", IGNORE)
            b.text(f" sits {rel} ")
        m2 = say(second)
        mentions.append(m2)
        if rng.random() < 0.4:
            _background(b, rng, scene, attach=[m2])
        b.extend_ref(m1)
        rest = groups[2:]
        if rest and rng.random() < 0.5:
            # pronoun: "... ; it is above C" / "... . they sit near C"
            plural = len(first) > 1
            b.text(rng.choice(["; ", ". ", ", and "]))
            b.phrase("they" if plural else "it", "they" if plural else "it", IGNORE, refers_to=first)
            b.text(" " + ("are " if plural else "is ") + _relation(scene.objects[first[0]], scene.objects[rest[0][0]], rng) + " ")
            mentions.append(say(rest[0]))
            rest = rest[1:]
        for idx in rest:
            b.text(rng.choice([", and ", " and ", ", with ", ", plus "]))
            mentions.append(say(idx))

    # trailing modifiers ("near the edge", "with no dog in sight", "where ... used to be") attach to the
    # last phrase, so they belong to every expression that ends there; coordinated ones (", but no X") do not
    tail = [m for m in b.mentions if m.kind == OBJECT and m.ref[1] == b.pos]
    # places: "near the edge"
    if rng.random() < 0.15:
        b.text(rng.choice([" near ", " by ", " at "]))
        place = rng.choice(PLACES)
        b.phrase(place, place.split()[-1], ABSENT)
        for m in tail:
            b.extend_ref(m)
    # absent things
    absent = rng.random()
    if absent < 0.2:
        colour, shape = _absent_combo(rng, scene)
        b.text(rng.choice([", but no ", ", without any ", " and no "]))
        b.phrase(f"{colour} {shape}", shape, ABSENT)
    elif absent < 0.35:
        noun = rng.choice(ABSENT_NOUNS)
        if rng.random() < 0.5:
            b.text(" with no ")
            b.phrase(noun, noun, ABSENT)
            b.text(" in ")
            b.phrase("sight", "sight", ABSENT)
            for m in tail:
                b.extend_ref(m)
        else:
            b.text(rng.choice([", waiting for ", ", far from "]))
            b.phrase(f"{article(noun)} {noun}", noun, ABSENT)
    elif absent < 0.45:
        colour, shape = _absent_combo(rng, scene)
        b.text(", where ")
        b.phrase(f"{article(colour)} {colour} {shape}", shape, ABSENT)
        b.text(" used to be")
        for m in tail:
            b.extend_ref(m)
    if opener >= 0.25 and rng.random() < 0.12:
        b.text(", ")
        _abstract(b, rng)
    return b.build()


def _abstract(b: CaptionBuilder, rng: random.Random) -> None:
    phrase = rng.choice(ABSTRACT_PHRASES)
    first, _, last = phrase.partition(" of ") if " of " in phrase else phrase.partition(" in ")
    joiner = phrase[len(first):len(phrase) - len(last)]
    m = b.phrase(first, first.split()[-1], ABSENT)
    b.text(joiner)
    b.phrase(last, last.split()[-1], ABSENT)
    b.extend_ref(m)


def _background(b: CaptionBuilder, rng: random.Random, scene: Scene, attach: list[Mention]) -> None:
    b.text(rng.choice([" on ", " against ", " in front of "]))
    phrase = rng.choice(BACKGROUNDS[scene.background])
    b.phrase(phrase, phrase.split()[-1], IGNORE)
    for m in attach:
        b.extend_ref(m)
