"""The detector interface every grounding backend implements, and the registry of backends.

A backend turns a batch of images plus, per image, its phrases into raw detections:
(phrase index, normalised xyxy box, score). Class-agnostic NMS and the score threshold
are applied afterwards by ``grit_pipeline.grounding`` so every backend is filtered the same way.
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Callable, ClassVar, Sequence

from PIL import Image


@dataclass(frozen=True)
class Detection:
    phrase_index: int                      # index into that image's phrase list
    box: tuple[float, float, float, float]  # normalised xyxy in [0, 1] w.r.t. the decoded image
    score: float                           # detector confidence in [0, 1]


class Detector(ABC):
    """A phrase-grounding detector. Subclasses set ``name`` and implement ``detect``."""

    name: ClassVar[str] = ""

    @abstractmethod
    def detect(self, images: Sequence[Image.Image], phrases: Sequence[Sequence[str]]) -> list[list[Detection]]:
        """One list of raw detections per image (before NMS and threshold)."""


_REGISTRY: dict[str, Callable[..., Detector]] = {}


def register_detector(name: str):
    """Class decorator: make a backend available under ``name``."""

    def wrap(cls):
        cls.name = name
        _REGISTRY[name] = cls
        return cls

    return wrap


def available_detectors() -> list[str]:
    _load_builtin_backends()
    return sorted(_REGISTRY)


def get_detector(name: str, **options) -> Detector:
    """Instantiate a registered backend by name with its options (model, device, dtype, ...)."""
    _load_builtin_backends(name)
    try:
        factory = _REGISTRY[name]
    except KeyError:
        raise ValueError(f"unknown detector {name!r}; available: {', '.join(sorted(_REGISTRY))}") from None
    return factory(**options)


def check_detector(name: str, **options) -> None:
    """Check on this process, without loading a model, what a backend would refuse when built with
    ``options`` (unknown backend, missing or unreadable model, hub id out of reach): raises ValueError with
    one line. A backend checks through its optional ``check_options(**options)`` classmethod; the
    pipeline calls this before starting any worker, and ``grit ground`` before reading its input."""
    _load_builtin_backends(name)
    if name not in _REGISTRY:
        raise ValueError(f"unknown detector {name!r}; available: {', '.join(sorted(_REGISTRY))}")
    check = getattr(_REGISTRY[name], "check_options", None)
    if check is not None:
        check(**options)


def detector_parameters(name: str) -> set[str] | None:
    """The options a registered backend's constructor takes (None when it takes any keyword)."""
    import inspect

    _load_builtin_backends()
    if name not in _REGISTRY:
        raise ValueError(f"unknown detector {name!r}; available: {', '.join(sorted(_REGISTRY))}")
    try:
        parameters = inspect.signature(_REGISTRY[name]).parameters
    except (TypeError, ValueError):
        return None
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters.values()):
        return None
    return set(parameters)


BUILTIN_BACKENDS = ("hf", "demo", "noop")


def _load_builtin_backends(name: str | None = None) -> None:
    """Import the built-in backend ``name`` only (all of them for another name or None, so that an unknown
    name is answered with the full list). Imported lazily so that importing the interface never pulls in
    torch/transformers, and checking or building ``noop`` never imports ``demo``'s torch model (3 s)."""
    import importlib

    if name in _REGISTRY:
        return
    for module in (name,) if name in BUILTIN_BACKENDS else BUILTIN_BACKENDS:
        try:
            importlib.import_module(f"grit_pipeline.detectors.{module}")
        except ModuleNotFoundError as error:
            if error.name != f"grit_pipeline.detectors.{module}":
                raise
