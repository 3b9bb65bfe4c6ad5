"""Caption templates for synthetic scenes, with the truth spans of every phrase they write.

The templates stress the text rules: spatial relations and prepositional chains, relative clauses,
conjunctions, abstract nouns ("a moment of peace"), phrases naming things absent from the image, plural
groups and pronoun references. Each phrase is written through ``CaptionBuilder`` so its character
offsets are exact by construction.
"""
from __future__ import annotations

import functools
import random
from dataclasses import dataclass, field

from .scene import Scene, SceneObject
from .vocab import (ABSENT_NOUNS, ABSTRACT_PHRASES, BACKGROUNDS, COLOURS, COUNT_WORDS, LARGE_WORDS, PLACES,
                    PLURAL, SHAPES, SMALL_WORDS, article)

OBJECT, ABSENT, IGNORE = "object", "absent", "ignore"


@dataclass
class Token:
    """One word of a caption with its place in the generator's dependency tree (spaCy's English labels):
    ``head`` is the index of its governor, None for a root."""

    text: str
    start: int
    head: int | None
    dep: str
    pos: str
    tag: str


@dataclass
class Mention:
    """One phrase in the caption. ``kind``: object (boxes = its objects), absent (must get no box),
    ignore (a box there is neither right nor wrong: pronouns, backgrounds, "a photo").

    ``ref`` is the phrase's meaning-based extent (what the generator means it to name); the truth's
    referring expression is derived from the tree instead (``writer.truth_record``). ``token``: the index of
    its head word; ``first``/``last``: its first and last word."""

    kind: str
    span: tuple[int, int]
    head: tuple[int, int]
    ref: tuple[int, int]
    objects: list[int] = field(default_factory=list)   # indices into scene.objects
    refers_to: list[int] = field(default_factory=list)  # pronouns: the objects they stand for
    token: int = -1
    first: int = -1
    last: int = -1


@dataclass
class Caption:
    text: str
    mentions: list[Mention]
    tokens: list[Token] = field(default_factory=list)


# Word classes of the phrases the templates write (the tree's tags for them).
_DETERMINERS = {"a", "an", "the", "some", "no", "any"}
_NUMBERS = set(COUNT_WORDS.values())
_ADJECTIVES = (set(COLOURS) | set(SMALL_WORDS) | set(LARGE_WORDS) |
               {"plain", "grey", "flat", "empty", "smooth", "fading", "noisy", "grainy", "speckled", "striped",
                "checkered", "tiled", "dotted", "spotted"})
_PUNCT_TAGS = {",": ",", ";": ":", ":": ":", ".": "."}
# Relations: the words and their arcs. The first word attaches to the governor, each next word to the one
# before, the object to the last word (pobj).
_RELATION_WORDS = {
    "in front of": (("prep", "ADP", "IN"), ("pobj", "NOUN", "NN"), ("prep", "ADP", "IN")),
    "next to": (("advmod", "ADV", "RB"), ("prep", "ADP", "IN")),
    "close to": (("advmod", "ADV", "RB"), ("prep", "ADP", "IN")),
    "left of": (("advmod", "ADV", "RB"), ("prep", "ADP", "IN")),
    "right of": (("advmod", "ADV", "RB"), ("prep", "ADP", "IN")),
    "far from": (("advmod", "ADV", "RB"), ("prep", "ADP", "IN")),
    "waiting for": (("acl", "VERB", "VBG"), ("prep", "ADP", "IN")),
}
_PREPOSITION = (("prep", "ADP", "IN"),)


class CaptionBuilder:
    def __init__(self) -> None:
        self.parts: list[str] = []
        self.pos = 0
        self.mentions: list[Mention] = []
        self.tokens: list[Token] = []

    def text(self, s: str) -> "CaptionBuilder":
        """Spaces between words (every word goes through ``word``)."""
        assert not s.strip(), s
        self.parts.append(s)
        self.pos += len(s)
        return self

    def word(self, w: str, dep: str, head: int | None, pos: str, tag: str) -> int:
        """Append one word with its arc; returns its index."""
        assert w and not any(c.isspace() for c in w), w
        self.tokens.append(Token(w, self.pos, head, dep, pos, tag))
        self.parts.append(w)
        self.pos += len(w)
        return len(self.tokens) - 1

    def punct(self, p: str, head: int | None) -> int:
        return self.word(p, "punct", head, "PUNCT", _PUNCT_TAGS[p])

    def relation(self, words: str, governor: int | None) -> int:
        """A relation ("above", "in front of", "waiting for") attached to ``governor``; returns the index of
        the word its object attaches to."""
        arcs = _RELATION_WORDS.get(words, _PREPOSITION * len(words.split()))
        head = governor
        for k, (w, (dep, pos, tag)) in enumerate(zip(words.split(), arcs)):
            if k:
                self.text(" ")
            head = self.word(w, dep, head, pos, tag)
        return head

    def phrase(self, s: str, head_word: str, kind: str, objects=(), refers_to=(), dep: str = "ROOT",
               head: int | None = None) -> Mention:
        """A noun phrase (or a pronoun) whose head word ``head_word`` attaches to ``head`` with ``dep``."""
        start = self.pos
        h = s.rfind(head_word)
        assert h >= 0, (s, head_word)
        words = s.split(" ")
        noun_at = len(s[:h].split())  # index of the head word among the phrase's words
        first = len(self.tokens)
        root = first + noun_at
        for k, w in enumerate(words):
            if k:
                self.text(" ")
            if k == noun_at:
                pos, tag = _head_tags(w, kind)
                self.word(w, dep, head, pos, tag)
            elif w in _DETERMINERS:
                self.word(w, "det", root, "DET", "DT")
            elif w in _NUMBERS:
                self.word(w, "nummod", root, "NUM", "CD")
            elif w in _ADJECTIVES:
                self.word(w, "amod", root, "ADJ", "JJ")
            else:
                self.word(w, "compound", root, "NOUN", "NN")
        m = Mention(kind, (start, self.pos), (start + h, start + h + len(head_word)), (start, self.pos),
                    list(objects), list(refers_to), root, first, len(self.tokens) - 1)
        self.mentions.append(m)
        return m

    def extend_ref(self, m: Mention) -> None:
        """The meaning-based extent of ``m`` runs to the current position."""
        m.ref = (m.ref[0], self.pos)

    def build(self) -> Caption:
        return Caption("".join(self.parts), self.mentions, self.tokens)


def _head_tags(word: str, kind: str) -> tuple[str, str]:
    if word in ("it", "they"):
        return "PRON", "PRP"
    if word in ("that", "which"):
        return "PRON", "WDT"
    return "NOUN", "NNS" if word.endswith("s") and word not in ("cross",) else "NN"


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
    """A caption for ``scene`` with exact spans for every phrase and its dependency tree, drawn from varied
    templates (level 3) or one short phrase (levels 1 and 2, see ``make_short_caption``).

    The tree is the templates' own grammar: relations and relative clauses attach to the phrase they
    describe, lists are conjunctions of their first item, a coordinated "but no X" is a conjunct of the
    caption's main phrase, trailing modifiers ("near the edge", "with no dog in sight") attach to the last
    phrase and comma-set ones (", far from a dog", ", waiting for a cat") to the main phrase."""
    if level < 3:
        return make_short_caption(rng, scene)
    b = CaptionBuilder()
    groups = _groups(scene)
    rng.shuffle(groups)

    # optional framing: "a photo of ...", "a moment of peace: ..."
    opener = rng.random()
    body_dep, body_head = "ROOT", None
    if opener < 0.12:
        noun = rng.choice(["photo", "picture", "image"])
        frame = b.phrase(f"{article(noun)} {noun}", noun, IGNORE)
        b.text(" ")
        body_dep, body_head = "pobj", b.relation("of", frame.token)
        b.text(" ")
    elif opener < 0.25:
        frame = _abstract(b, rng)
        b.punct(":", frame.token)
        b.text(" ")
        body_dep, body_head = "appos", frame.token

    def say(idx: list[int], dep: str, head: int | None) -> Mention:
        text, head_word = _group_phrase(rng, scene, idx, b.pos == 0)
        return b.phrase(text, head_word, OBJECT, objects=idx, dep=dep, head=head)

    style = rng.random()
    mentions: list[Mention] = []
    if len(groups) == 1:
        m = say(groups[0], body_dep, body_head)
        mentions.append(m)
        main = m.token
        if rng.random() < 0.5:
            _background(b, rng, scene, attach=[m])
    elif len(groups) >= 3 and style < 0.5:
        # conjunction: "A, B and C on a striped background" (A has conjuncts: not expanded)
        for k, idx in enumerate(groups):
            if k:
                if k == len(groups) - 1:
                    b.text(" ")
                    b.word("and", "cc", mentions[-1].token, "CCONJ", "CC")
                    b.text(" ")
                else:
                    b.punct(",", mentions[-1].token)
                    b.text(" ")
            mentions.append(say(idx, "conj", mentions[0].token) if k else say(idx, body_dep, body_head))
        main = mentions[0].token
        if rng.random() < 0.5:
            _background(b, rng, scene, attach=[mentions[-1]])
    else:
        # prepositional chain / relative clause: "A rel B", "A that is rel B", "A, which is rel B,"
        first, second = groups[0], groups[1]
        rel = _relation(scene.objects[first[0]], scene.objects[second[0]], rng)
        m1 = say(first, body_dep, body_head)
        main = m1.token
        mentions.append(m1)
        clause = rng.random()
        if clause < 0.5:
            b.text(" ")
            governor = b.relation(rel, m1.token)
            b.text(" ")
        else:  # a relative clause: "that is left of ..." or "which sits left of ..."
            pronoun, verb_word, pos = ("that", "is", "AUX") if clause < 0.75 else ("which", "sits", "VERB")
            b.text(" ")
            subject = b.phrase(pronoun, pronoun, IGNORE, dep="nsubj")
            b.text(" ")
            verb = b.word(verb_word, "relcl", m1.token, pos, "VBZ")
            b.tokens[subject.token].head = verb
            b.text(" ")
            governor = b.relation(rel, verb)
            b.text(" ")
        m2 = say(second, "pobj", governor)
        mentions.append(m2)
        if rng.random() < 0.4:
            _background(b, rng, scene, attach=[m2])
        b.extend_ref(m1)
        rest = groups[2:]
        if rest and rng.random() < 0.5:
            # pronoun: "... ; it is above C" / "... . they sit near C"
            plural = len(first) > 1
            joiner = rng.choice(["; ", ". ", ", and "])
            b.punct(joiner[0], m1.token)
            b.text(" ")
            if joiner == ", and ":
                b.word("and", "cc", m1.token, "CCONJ", "CC")
                b.text(" ")
            pronoun = b.phrase("they" if plural else "it", "they" if plural else "it", IGNORE, refers_to=first,
                               dep="nsubj")
            b.text(" ")
            # a second sentence after "; " or ". ", a conjunct of the main phrase after ", and "
            verb = b.word("are" if plural else "is", "conj" if joiner == ", and " else "ROOT",
                          m1.token if joiner == ", and " else None, "AUX", "VBP" if plural else "VBZ")
            b.tokens[pronoun.token].head = verb
            b.text(" ")
            governor = b.relation(_relation(scene.objects[first[0]], scene.objects[rest[0][0]], rng), verb)
            b.text(" ")
            mentions.append(say(rest[0], "pobj", governor))
            if joiner != ", and ":
                main = verb
            rest = rest[1:]
        for idx in rest:
            joiner = rng.choice([", and ", " and ", ", with ", ", plus "])
            if joiner.startswith(","):
                b.punct(",", main)
            b.text(" ")
            if joiner.strip(", ") == "with":
                governor = b.relation("with", main)
                b.text(" ")
                mentions.append(say(idx, "pobj", governor))
                continue
            b.word(joiner.strip(", "), "cc", main, "CCONJ", "CC")
            b.text(" ")
            mentions.append(say(idx, "conj", main))

    # trailing modifiers ("near the edge", "with no dog in sight", "where ... used to be") attach to the
    # last phrase, so they belong to every expression that ends there; coordinated ones (", but no X") do not
    tail = [m for m in b.mentions if m.kind == OBJECT and m.ref[1] == b.pos]
    last = max(tail, key=lambda m: m.span[0]).token if tail else main
    # places: "near the edge"
    if rng.random() < 0.15:
        word = rng.choice([" near ", " by ", " at "])
        b.text(" ")
        governor = b.relation(word.strip(), last)
        b.text(" ")
        place = rng.choice(PLACES)
        b.phrase(place, place.split()[-1], ABSENT, dep="pobj", head=governor)
        for m in tail:
            b.extend_ref(m)
    # absent things
    absent = rng.random()
    if absent < 0.2:
        colour, shape = _absent_combo(rng, scene)
        joiner = rng.choice([", but no ", ", without any ", " and no "])
        if joiner.startswith(","):
            b.punct(",", main)
        b.text(" ")
        if joiner == ", without any ":
            governor = b.relation("without", main)
            b.text(" ")
            det = b.word("any", "det", None, "DET", "DT")
            b.text(" ")
            thing = b.phrase(f"{colour} {shape}", shape, ABSENT, dep="pobj", head=governor)
        else:
            b.word(joiner.strip(", ").split()[0], "cc", main, "CCONJ", "CC")
            b.text(" ")
            det = b.word("no", "det", None, "DET", "DT")
            b.text(" ")
            thing = b.phrase(f"{colour} {shape}", shape, ABSENT, dep="conj", head=main)
        b.tokens[det].head = thing.token
    elif absent < 0.35:
        noun = rng.choice(ABSENT_NOUNS)
        if rng.random() < 0.5:
            b.text(" ")
            governor = b.relation("with", last)
            b.text(" ")
            det = b.word("no", "det", None, "DET", "DT")
            b.text(" ")
            thing = b.phrase(noun, noun, ABSENT, dep="pobj", head=governor)
            b.tokens[det].head = thing.token
            b.text(" ")
            governor = b.relation("in", thing.token)
            b.text(" ")
            b.phrase("sight", "sight", ABSENT, dep="pobj", head=governor)
            for m in tail:
                b.extend_ref(m)
        else:
            words = rng.choice([", waiting for ", ", far from "])
            b.punct(",", main)
            b.text(" ")
            governor = b.relation(words.strip(", "), main)
            b.text(" ")
            b.phrase(f"{article(noun)} {noun}", noun, ABSENT, dep="pobj", head=governor)
    elif absent < 0.45:
        colour, shape = _absent_combo(rng, scene)
        b.punct(",", last)
        b.text(" ")
        where = b.word("where", "advmod", None, "ADV", "WRB")
        b.text(" ")
        thing = b.phrase(f"{article(colour)} {colour} {shape}", shape, ABSENT, dep="nsubj")
        b.text(" ")
        used = b.word("used", "relcl", last, "VERB", "VBD")
        b.tokens[where].head = used
        b.tokens[thing.token].head = used
        b.text(" ")
        to = b.word("to", "aux", None, "PART", "TO")
        b.text(" ")
        be = b.word("be", "xcomp", used, "AUX", "VB")
        b.tokens[to].head = be
        for m in tail:
            b.extend_ref(m)
    if opener >= 0.25 and rng.random() < 0.12:
        b.punct(",", main)
        b.text(" ")
        _abstract(b, rng, dep="appos", head=main)
    return b.build()


def _abstract(b: CaptionBuilder, rng: random.Random, dep: str = "ROOT", head: int | None = None) -> Mention:
    phrase = rng.choice(ABSTRACT_PHRASES)
    first, _, last = phrase.partition(" of ") if " of " in phrase else phrase.partition(" in ")
    joiner = phrase[len(first):len(phrase) - len(last)]
    m = b.phrase(first, first.split()[-1], ABSENT, dep=dep, head=head)
    b.text(" ")
    governor = b.relation(joiner.strip(), m.token)
    b.text(" ")
    b.phrase(last, last.split()[-1], ABSENT, dep="pobj", head=governor)
    b.extend_ref(m)
    return m


def _background(b: CaptionBuilder, rng: random.Random, scene: Scene, attach: list[Mention]) -> None:
    words = rng.choice([" on ", " against ", " in front of "])
    b.text(" ")
    governor = b.relation(words.strip(), attach[-1].token)
    b.text(" ")
    phrase = rng.choice(BACKGROUNDS[scene.background])
    b.phrase(phrase, phrase.split()[-1], IGNORE, dep="pobj", head=governor)
    for m in attach:
        b.extend_ref(m)


def caption_doc(caption: Caption, vocab=None):
    """The caption as a spaCy ``Doc`` carrying the generator's own tree (words, heads, labels, tags), so
    the text core's rules (``text.expand_chunk``) can run on it exactly as on a parse."""
    from spacy.tokens import Doc

    tokens = caption.tokens
    ends = [t.start + len(t.text) for t in tokens]
    spaces = [i + 1 < len(tokens) and tokens[i + 1].start > ends[i] for i in range(len(tokens))]
    doc = Doc(vocab or _vocab(), words=[t.text for t in tokens], spaces=spaces,
              heads=[i if t.head is None else t.head for i, t in enumerate(tokens)],
              deps=["ROOT" if t.head is None else t.dep for t in tokens],
              pos=[t.pos for t in tokens], tags=[t.tag for t in tokens])
    assert doc.text == caption.text, (doc.text, caption.text)
    return doc


@functools.lru_cache(maxsize=1)
def _vocab():
    import spacy

    return spacy.blank("en").vocab  # English lexical attributes: is_punct, like_num, ...


def tree_ref(caption: Caption, mention: Mention, doc=None) -> tuple[int, int]:
    """The referring expression the paper's rule (``text.expand_chunk``) gives ``mention`` on the
    generator's own tree."""
    from grit_pipeline.text import expand_chunk

    doc = doc if doc is not None else caption_doc(caption)
    return expand_chunk(doc, doc[mention.first:mention.last + 1])
