"""Backend ``noop``: no model. The pipeline's own speed ceiling (and a predictable detector for tests).

Phrase ``i`` of ``n`` gets one box, the vertical strip ``[i/n, 0, (i+1)/n, 1]`` (the whole image when
there is one phrase), so boxes never overlap and class-agnostic NMS keeps them all. Its score is ``score``
(default 0.9, above the 0.65 threshold), or with ``score="hash"`` a fixed pseudo-random value in [0, 1)
derived from the phrase text, which gives a deterministic mix of kept and dropped boxes.
"""
from __future__ import annotations

import hashlib
from typing import Sequence

from .base import Detection, Detector, register_detector


@register_detector("noop")
class NoopDetector(Detector):
    def __init__(self, score: float | str = 0.9, model=None, device: str = "auto", dtype=None,
                 batch_size: int = 8, **unused):
        self.hashed = score == "hash"
        self.score = None if self.hashed else float(score)
        if self.score is not None and not 0.0 <= self.score <= 1.0:
            raise ValueError(f"noop detector: score must be in [0, 1] or 'hash', got {score!r}")

    @classmethod
    def check_options(cls, **options) -> None:
        """The driver's check (``base.check_detector``): building one costs nothing, so build one."""
        cls(**options)

    def phrase_score(self, phrase: str) -> float:
        if not self.hashed:
            return self.score
        digest = hashlib.blake2b(phrase.encode("utf-8"), digest_size=8).digest()
        return int.from_bytes(digest, "big") / 2**64

    def detect(self, images: Sequence, phrases: Sequence[Sequence[str]]) -> list[list[Detection]]:
        if len(images) != len(phrases):
            raise ValueError(f"{len(images)} images but {len(phrases)} phrase lists")
        out = []
        for image_phrases in phrases:
            n = len(image_phrases)
            out.append([Detection(i, (i / n, 0.0, (i + 1) / n, 1.0), self.phrase_score(p))
                        for i, p in enumerate(image_phrases)])
        return out
