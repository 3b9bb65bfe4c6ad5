"""The detector interface every grounding backend implements, and the registry of backends.

A backend turns a batch of images plus, per image, its phrases into raw detections:
(phrase index, normalised xyxy box, score). Class-agnostic NMS and the score threshold
are applied afterwards by ``grit_pipeline.grounding`` so every backend is filtered the same way.

A backend is named by ``--detector``: a built-in one (``demo``, ``hf``, ``noop``), an entry point of group
``grit_pipeline.detectors`` (``name = "module:Class"`` in an installed package's metadata), or
``package.module:Class`` for any importable module (docs/detectors.md, "Bring your own detector"). The same
names resolve on the driver (``check_detector``, before any worker starts) and in every worker
(``get_detector``).
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
    """A phrase-grounding detector. Subclasses set ``name`` and implement ``detect``.

    The constructor is given ``device=`` and ``batch_size=``, ``model=`` and ``dtype=`` when set, and every
    ``--detector-option key=value``. An optional classmethod ``check_options(**options)`` refuses bad options
    with a one-line ValueError without loading the model (run on the driver before any worker starts).
    ``detect`` raises ``grit_pipeline.faults.SampleError`` for one image's own failure and
    ``grit_pipeline.faults.SystemicFault`` (or lets a CUDA error propagate) for the device's.
    """

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
    """The backends known by name: the built-in ones, those registered with ``register_detector`` and the
    entry points of group ``grit_pipeline.detectors`` (a ``package.module:Class`` name works as well)."""
    _load_builtin_backends()
    return sorted(set(_REGISTRY) | set(_entry_points()))


def get_detector(name: str, **options) -> Detector:
    """Instantiate a backend by name with its options (model, device, dtype, ...): a built-in or registered
    name, then an entry point of group ``grit_pipeline.detectors``, then ``package.module:Class``."""
    return resolve_detector(name)(**options)


def check_detector(name: str, **options) -> None:
    """Check on this process, without loading a model, what a backend would refuse when built with
    ``options`` (unknown backend, missing or unreadable model, hub id out of reach): raises ValueError with
    one line. A backend checks through its optional ``check_options(**options)`` classmethod; the
    pipeline calls this before starting any worker, and ``grit ground`` before reading its input.

    A backend from outside (entry point or ``package.module:Class``) is also checked to take these options
    in its constructor, and whatever its ``check_options`` raises is reported in one line naming it."""
    factory = resolve_detector(name)
    check = getattr(factory, "check_options", None)
    if name in _REGISTRY:  # built-in or registered: its own one-line messages, as they are
        if check is not None:
            check(**options)
        return
    _check_constructor(name, factory, options)
    if check is None:
        return
    try:
        check(**options)
    except Exception as error:  # noqa: BLE001 - any refusal of a plugin's check: one line naming the detector
        if isinstance(error, ValueError):
            raise ValueError(f"detector {name!r}: {_one_line(error)}") from error
        raise ValueError(f"detector {name!r}: check_options failed ({type(error).__name__}: "
                         f"{_one_line(error)})") from error


def detector_parameters(name: str) -> set[str] | None:
    """The options a backend's constructor takes (None when it takes any keyword)."""
    import inspect

    factory = resolve_detector(name)
    try:
        parameters = inspect.signature(factory).parameters
    except (TypeError, ValueError):
        return None
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters.values()):
        return None
    return set(parameters)


# --- backends from outside: entry points and package.module:Class ------------------------------------------

ENTRY_POINT_GROUP = "grit_pipeline.detectors"
_PLUGINS: dict[str, type] = {}  # name -> class, once imported and checked


def resolve_detector(name: str) -> Callable[..., Detector]:
    """The class (factory) behind a detector name: a built-in or registered name first, then an entry point of
    group ``grit_pipeline.detectors`` (``name = "module:Class"``), then ``package.module:Class`` itself.
    Raises ValueError with one line: unknown name, module that does not import, missing class, not a
    Detector."""
    if not isinstance(name, str) or not name:
        raise ValueError(f"detector must be a name, got {name!r}")
    if name in _REGISTRY:
        return _REGISTRY[name]
    if name in BUILTIN_BACKENDS:
        _load_builtin_backends(name)
        return _REGISTRY[name]
    if name in _PLUGINS:
        return _PLUGINS[name]
    entry_point = _entry_points().get(name)
    if entry_point is not None:
        target = f"{entry_point.module}:{entry_point.attr}"
        factory = _import_detector(f"detector {name!r} (entry point {target!r} of group {ENTRY_POINT_GROUP})",
                                   entry_point.module, entry_point.attr)
    elif ":" in name:
        module, _, attr = name.partition(":")
        if not _is_dotted_name(module) or not _is_dotted_name(attr):
            raise ValueError(f"detector {name!r}: expected package.module:ClassName")
        factory = _import_detector(f"detector {name!r}", module, attr)
    else:
        _load_builtin_backends()
        if name in _REGISTRY:  # registered by a built-in module under another name
            return _REGISTRY[name]
        raise ValueError(f"unknown detector {name!r}; available: {', '.join(available_detectors())} "
                         f"(or package.module:Class, or an entry point of group {ENTRY_POINT_GROUP})")
    _PLUGINS[name] = factory
    return factory


def plugin_import_paths(name: str) -> list[str]:
    """The ``sys.path`` folders a worker process needs to build the detector ``name`` as this process does:
    for a backend from outside, the folder its module was imported from and, for an entry point, the folder
    holding its distribution's metadata, when they are not site-packages (a module of the current folder, of
    a tests/ folder put on ``sys.path``, a dist-info laid next to it). Empty for built-in backends, for
    installed packages, and for a name that does not resolve (the preflight reports that)."""
    import os
    import sys

    if name in _REGISTRY or name in BUILTIN_BACKENDS:
        return []
    try:
        factory = resolve_detector(name)
    except ValueError:
        return []
    folders = []
    module = sys.modules.get(getattr(factory, "__module__", "") or "")
    if module is not None:
        top = sys.modules.get(module.__name__.partition(".")[0], module)
        folders.append(_import_root(top))
    entry_point = _entry_points().get(name)
    if entry_point is not None and getattr(entry_point, "dist", None) is not None:
        try:
            folders.append(os.path.abspath(str(entry_point.dist.locate_file(""))))
        except Exception:  # noqa: BLE001 - a distribution without a location on disk
            pass
    installed = _site_folders()
    out = []
    for folder in folders:
        if folder and os.path.isdir(folder) and folder not in installed and folder not in out:
            out.append(folder)
    return out


def _import_detector(what: str, module_name: str, attr: str):
    import inspect

    try:
        module = _import_module(module_name)
    except Exception as error:  # noqa: BLE001 - any import failure of a plugin module: one line
        raise ValueError(f"{what}: cannot import module {module_name!r} ({type(error).__name__}: "
                         f"{_one_line(error)})") from None
    obj = module
    for part in attr.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            raise ValueError(f"{what}: module {module_name!r} has no attribute {attr!r}") from None
    if not isinstance(obj, type):
        raise ValueError(f"{what}: {module_name}:{attr} is not a Detector (not a class but a "
                         f"{type(obj).__name__})")
    if not issubclass(obj, Detector) and not callable(getattr(obj, "detect", None)):
        raise ValueError(f"{what}: {module_name}:{attr} is not a Detector (no detect method)")
    if inspect.isabstract(obj):
        missing = ", ".join(sorted(getattr(obj, "__abstractmethods__", ())))
        raise ValueError(f"{what}: {module_name}:{attr} is abstract (does not implement {missing})")
    return obj


def _import_module(module_name: str):
    """``importlib.import_module``, also from the current folder when it is not on ``sys.path`` (the ``grit``
    script's ``sys.path`` starts with its own folder, not the current one): ``--detector my_adapter:Class``
    finds ``./my_adapter.py`` as ``python -m`` would. The folder is added at the end, so it never shadows an
    installed module, and only when the module is found there."""
    import importlib
    import os
    import sys

    try:
        return importlib.import_module(module_name)
    except ModuleNotFoundError as error:
        top = module_name.partition(".")[0]
        here = os.getcwd()
        on_path = {os.path.abspath(p or os.curdir) for p in sys.path}
        if error.name != top or here in on_path:
            raise
        sys.path.append(here)
        try:
            return importlib.import_module(module_name)
        except ModuleNotFoundError as again:
            if again.name == top:
                sys.path.remove(here)
                raise error from None
            raise


def _check_constructor(name: str, factory, options: dict) -> None:
    """A plugin's constructor must take every option grit passes it (device, batch_size, --detector-option)."""
    import inspect

    try:
        signature = inspect.signature(factory)
    except (TypeError, ValueError):
        return
    try:
        signature.bind(**options)
    except TypeError as error:
        raise ValueError(f"detector {name!r}: its constructor does not take these options: {_one_line(error)} "
                         f"(grit passes device=, batch_size=, model=/dtype= when given and each "
                         f"--detector-option; accept **options for the rest)") from None


def _entry_points() -> dict:
    """name -> EntryPoint of group ``grit_pipeline.detectors`` (the first one of each name)."""
    from importlib.metadata import entry_points

    found = {}
    try:
        for entry_point in entry_points(group=ENTRY_POINT_GROUP):
            found.setdefault(entry_point.name, entry_point)
    except Exception:  # noqa: BLE001 - a broken distribution's metadata never hides the built-in backends
        return {}
    return found


def _import_root(module) -> str:
    """The ``sys.path`` folder ``module`` (a top-level module or package) was imported from."""
    import os

    location = getattr(module, "__file__", None)
    if location:
        path = os.path.dirname(os.path.abspath(location))
        if os.path.basename(location).startswith("__init__."):  # a package: its parent folder
            path = os.path.dirname(path)
        return path
    search = list(getattr(module, "__path__", []) or [])  # a namespace package
    return os.path.dirname(os.path.abspath(search[0])) if search else ""


def _site_folders() -> set[str]:
    import os
    import site
    import sysconfig

    folders = set()
    try:
        folders.update(site.getsitepackages())
    except AttributeError:
        pass
    try:
        folders.add(site.getusersitepackages())
    except AttributeError:
        pass
    for key in ("purelib", "platlib", "stdlib", "platstdlib"):
        try:
            folders.add(sysconfig.get_paths()[key])
        except KeyError:
            pass
    return {os.path.abspath(f) for f in folders if f}


def _is_dotted_name(text: str) -> bool:
    return bool(text) and all(part.isidentifier() for part in text.split("."))


def _one_line(error: BaseException) -> str:
    text = " ".join(str(error).split())
    return text[:300] + ("..." if len(text) > 300 else "")


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
