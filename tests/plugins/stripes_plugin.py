"""A detector backend from outside grit, for tests (``--detector stripes_plugin:StripesDetector`` with
tests/plugins on ``sys.path``, or the entry point ``stripes`` a test registers).

Phrase ``i`` of ``n`` gets the box ``[i/n, 0.25, (i+1)/n, 0.75]`` (boxes never overlap) with score ``score``
(default 0.8). Distinct from the built-in ``noop`` so a test can tell which backend built a record.
"""
from __future__ import annotations

import os
from typing import Sequence

from grit_pipeline.detectors.base import Detection, Detector


class StripesDetector(Detector):
    name = "stripes"

    def __init__(self, score: float | str = 0.8, device: str = "auto", batch_size: int = 8, **unused):
        self.check_options(score=score)
        self.score = float(score)
        self.batch_sizes: list[int] = []
        self.pid = os.getpid()

    @classmethod
    def check_options(cls, score: float | str = 0.8, **unused) -> None:
        try:
            value = float(score)
        except (TypeError, ValueError):
            value = -1.0
        if not 0.0 <= value <= 1.0:
            raise ValueError(f"stripes: score must be in [0, 1], got {score!r}")

    def detect(self, images: Sequence, phrases: Sequence[Sequence[str]]) -> list[list[Detection]]:
        self.batch_sizes.append(len(images))
        out = []
        for image, image_phrases in zip(images, phrases):
            assert image.mode == "RGB"
            n = len(image_phrases)
            out.append([Detection(i, (i / n, 0.25, (i + 1) / n, 0.75), self.score) for i in range(n)])
        return out
