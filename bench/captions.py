"""A fixed, seeded set of LAION-like captions for text benchmarks (same 5,000 on every machine)."""
from __future__ import annotations

import random

NOUNS = ["dog", "cat", "woman", "man", "child", "car", "house", "tree", "table", "chair", "bike", "boat",
         "mountain", "lake", "street", "window", "flower", "bird", "horse", "cup", "laptop", "phone",
         "building", "bridge", "beach", "dress", "shirt", "hat", "bag", "book", "sofa", "lamp", "clock"]
ADJECTIVES = ["red", "small", "old", "wooden", "white", "large", "vintage", "modern", "blue", "happy",
              "beautiful", "black", "green", "tiny", "bright", "cozy", "rustic", "shiny"]
PREPOSITIONS = ["on", "in", "near", "under", "next to", "behind", "with", "in front of", "at", "by"]
VERBS = ["sitting", "standing", "running", "lying", "playing", "waiting", "parked", "hanging"]
EXTRAS = ["stock photo", "free shipping", "HD wallpaper", "| size 10", "- Getty Images", "(2019)",
          "for sale", "- a moment of peace", "illustration vector", "with love"]


def _phrase(rng: random.Random) -> str:
    words = [rng.choice(["a", "the", "two", "an old", "some"])]
    words += rng.sample(ADJECTIVES, rng.randint(0, 2))
    words.append(rng.choice(NOUNS) + ("s" if words[0] in ("two", "some") else ""))
    return " ".join(words)


def fixed_captions(n: int = 5000, seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    captions = []
    for _ in range(n):
        parts = [_phrase(rng)]
        if rng.random() < 0.6:
            parts.append(rng.choice(VERBS))
        for _ in range(rng.randint(0, 3)):
            parts += [rng.choice(PREPOSITIONS), _phrase(rng)]
        if rng.random() < 0.3:
            parts += ["and", _phrase(rng)]
        if rng.random() < 0.3:
            parts.append(rng.choice(EXTRAS))
        caption = " ".join(parts)
        captions.append(caption[0].upper() + caption[1:] if rng.random() < 0.5 else caption)
    return captions
