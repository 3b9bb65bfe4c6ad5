"""Loading torch files without running code from them: the one rule for checkpoints and detector weights.

A ``.pt`` file is a pickle: loading it with ``weights_only=False`` runs whatever the file asks for. Every
torch file grit or the companion reads goes through ``load_torch_file`` (``weights_only=True``: tensors,
numbers, strings and containers only); model directories load with safetensors. A file that asks for
anything else is refused with ``UnsafeFileError``, whose message is one line.
"""
from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any


class UnsafeFileError(ValueError):
    """A file refused because loading it could run code, or unreadable; ``str()`` is the one-line reason."""


def load_torch_file(path: str | Path) -> Any:
    """``torch.load(path, weights_only=True)`` on the CPU, with refusals as ``UnsafeFileError``."""
    import torch

    try:
        return torch.load(Path(path), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        detail = next((line.strip() for line in str(error).splitlines() if "Unsupported" in line), "")
        raise UnsafeFileError(f"{path}: refused to load: it holds more than tensors and plain values, so "
                              f"loading it could run code" + (f" ({detail[:200]})" if detail else "")) from None
    except FileNotFoundError:
        raise
    except (RuntimeError, EOFError, OSError, ValueError) as error:
        raise UnsafeFileError(f"{path}: not a readable torch file ({type(error).__name__}: "
                              f"{' '.join(str(error).split())[:200]})") from None


# What ``torch.save`` of tensors in dicts and lists names, all on torch's ``weights_only`` allow-list (a test checks
# that): a file whose pickle names these only passes ``check_torch_file`` without importing torch (seconds on a
# driver that never runs the model); any other name or layout goes to torch's own check.
PLAIN_TENSOR_GLOBALS = frozenset({
    "collections.OrderedDict", "torch._utils._rebuild_tensor_v2", "torch._utils._rebuild_parameter",
    *(f"torch.{kind}Storage" for kind in ("Float", "Double", "Half", "BFloat16", "Long", "Int", "Short", "Char",
                                          "Byte", "Bool"))})
MAX_PICKLE_BYTES = 64 << 20  # a larger data.pkl (not tensors: they are stored beside it) goes to torch's check


def check_torch_file(path: str | Path) -> None:
    """Refuse (``UnsafeFileError``) a torch file that names anything ``weights_only`` would not build,
    without loading its tensors: a cheap check for a process that hands the file to others (the driver of
    a distributed training run), so the refusal is one line there rather than a failure inside a worker."""
    if plain_tensor_file(path):
        return
    from torch.serialization import get_unsafe_globals_in_checkpoint

    try:
        unsafe = get_unsafe_globals_in_checkpoint(Path(path))
    except FileNotFoundError:
        raise
    except Exception as error:  # noqa: BLE001 - not a torch zip file: the real load will say what it is
        raise UnsafeFileError(f"{path}: not a readable torch file ({type(error).__name__}: "
                              f"{' '.join(str(error).split())[:200]})") from None
    if unsafe:
        raise UnsafeFileError(f"{path}: refused to load: it holds more than tensors and plain values, so loading "
                              f"it could run code (it names {', '.join(sorted(unsafe)[:5])})")


def plain_tensor_file(path: str | Path) -> bool:
    """True when ``path`` is a ``torch.save`` archive whose pickle imports nothing but ``PLAIN_TENSOR_GLOBALS``
    (read with ``pickletools``, without torch); False for anything else, which is left to torch to judge."""
    import pickletools
    import zipfile

    try:
        with zipfile.ZipFile(path) as archive:
            members = archive.infolist()
            pickles = [m for m in members if m.filename.count("/") == 1 and m.filename.endswith("/data.pkl")]
            if (len(pickles) != 1 or pickles[0].file_size > MAX_PICKLE_BYTES
                    # torch's archive has a version record; a TorchScript one a constants.pkl: torch's call
                    or pickles[0].filename[:-len("data.pkl")] + "version" not in archive.namelist()
                    or any(m.filename.endswith("/constants.pkl") for m in members)):
                return False
            data = archive.read(pickles[0])
        for opcode, argument, _ in pickletools.genops(data):
            if opcode.name == "GLOBAL":
                if argument.replace(" ", ".", 1) not in PLAIN_TENSOR_GLOBALS:
                    return False
            elif opcode.name in ("STACK_GLOBAL", "INST", "OBJ", "EXT1", "EXT2", "EXT4"):
                return False  # other ways to name a callable
        return True
    except Exception:  # noqa: BLE001 - not a zip, a broken pickle, ...: torch's check says what it is
        return False
