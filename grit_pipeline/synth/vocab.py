"""The words of the synthetic world: shapes, colours, sizes, backgrounds and the distractor phrases.

One source of truth for the scene renderer, the caption templates and the demo detector's vocabulary
(``grit_pipeline.detectors`` uses this package, never the other way round).
"""
from __future__ import annotations

SHAPES = ("circle", "square", "triangle", "star", "diamond", "cross", "ring")
PLURAL = {s: s + "s" for s in SHAPES} | {"cross": "crosses"}

# Saturated, well separated colours (RGB). Backgrounds use muted tones so every object stays visible.
COLOURS = {
    "red": (220, 30, 30),
    "green": (30, 170, 50),
    "blue": (30, 60, 220),
    "yellow": (245, 225, 20),
    "purple": (140, 40, 180),
    "orange": (250, 140, 10),
    "white": (250, 250, 250),
    "black": (15, 15, 15),
}

SMALL_WORDS = ("small", "little", "tiny")
LARGE_WORDS = ("large", "big", "huge")
COUNT_WORDS = {2: "two", 3: "three"}

# background kind -> phrases naming it (the detector learns these name no object)
BACKGROUNDS = {
    "flat": ("a plain background", "a grey background", "a flat backdrop", "an empty wall"),
    "gradient": ("a gradient background", "a smooth gradient", "a fading backdrop"),
    "noise": ("a noisy background", "a grainy backdrop", "a speckled surface"),
    "stripes": ("a striped background", "a striped wall", "a striped cloth"),
    "checker": ("a checkered background", "a checkered floor", "a tiled wall"),
    "dots": ("a dotted background", "a polka dot backdrop", "a spotted cloth"),
}

# Abstract framings: spaCy gives a chunk for the first noun ("a moment"), the second is on the
# abstract-noun list (unilm issue #1421) and is dropped by the text rules.
ABSTRACT_PHRASES = (
    "a moment of peace", "a feeling of hope", "the pursuit of happiness", "a sense of freedom",
    "a lesson in wisdom", "a story of love", "a symbol of faith", "a picture of courage",
)

# Concrete things that never appear in a synthetic image.
ABSENT_NOUNS = ("dog", "cat", "car", "tree", "person", "bird", "house", "boat", "chair", "flower")

# Places in the frame (named, but no object to box).
PLACES = ("the corner", "the edge", "the border", "the middle")

PRONOUNS_SINGULAR = ("it",)
PRONOUNS_PLURAL = ("they", "them")

DETERMINERS = ("a", "an", "the", "one", "some", "no", "its", "their", "this", "that", "these", "those")


def article(word: str) -> str:
    return "an" if word[0] in "aeiou" else "a"


def vocabulary() -> list[str]:
    """Every word the captions can use (lower case), for the demo detector's word vocabulary."""
    words: set[str] = set()
    words.update(SHAPES, PLURAL.values(), COLOURS, SMALL_WORDS, LARGE_WORDS, COUNT_WORDS.values())
    words.update(ABSENT_NOUNS, (n + "s" for n in ABSENT_NOUNS), PRONOUNS_SINGULAR, PRONOUNS_PLURAL, DETERMINERS)
    for phrases in (*BACKGROUNDS.values(), ABSTRACT_PHRASES, PLACES):
        for phrase in phrases:
            words.update(tokenize(phrase))
    words.update(("which", "who", "what", "shape", "shapes", "object", "objects", "picture", "photo", "image"))
    return sorted(words)


def tokenize(text: str) -> list[str]:
    """Lower-case words (letters only); the demo detector's text tokenizer."""
    out, word = [], []
    for ch in text.lower():
        if ch.isalpha():
            word.append(ch)
        elif word:
            out.append("".join(word))
            word = []
    if word:
        out.append("".join(word))
    return out
