"""Backends grit must refuse in one line, for tests (tests/plugins on ``sys.path``)."""
from __future__ import annotations

from grit_pipeline.detectors.base import Detection, Detector


class NotADetector:
    """A class without a ``detect`` method."""

    def __init__(self, **options):
        pass


def make_detector(**options):
    """A function, not a class."""


class Unfinished(Detector):
    """Subclasses Detector but does not implement ``detect``."""


class CheckRaises(Detector):
    """``check_options`` fails with an error that is not a ValueError, over several lines."""

    def __init__(self, **options):
        pass

    @classmethod
    def check_options(cls, **options):
        raise RuntimeError("licence server unreachable\n  at 10.0.0.1:27000\nretry later")

    def detect(self, images, phrases):
        return [[] for _ in images]


class CheckRefuses(CheckRaises):
    """``check_options`` refuses an option with its own ValueError."""

    @classmethod
    def check_options(cls, **options):
        if "weights" not in options:
            raise ValueError("give --detector-option weights=PATH")


class NarrowConstructor(Detector):
    """A constructor that takes neither device nor batch_size."""

    def __init__(self, threshold: float = 0.5):
        self.threshold = threshold

    def detect(self, images, phrases):
        return [[Detection(0, (0.0, 0.0, 1.0, 1.0), 1.0)] for _ in images]


class DuckDetector:
    """Not a Detector subclass, but with a callable ``detect``: accepted."""

    def __init__(self, **options):
        self.options = options

    def detect(self, images, phrases):
        return [[Detection(i, (0.0, 0.0, 1.0, 1.0), 0.99) for i in range(len(p))] for p in phrases]
