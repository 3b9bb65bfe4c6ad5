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
