"""A backend module whose own import fails (a dependency that is not installed), for tests."""
import grit_no_such_dependency  # noqa: F401

from grit_pipeline.detectors.base import Detector


class Detector2(Detector):
    def detect(self, images, phrases):
        return [[] for _ in images]
