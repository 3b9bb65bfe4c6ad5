"""Loading a model for evaluation (any directory ``kosmos train`` writes, or a ``save_pretrained`` one)."""
from __future__ import annotations

import os
from pathlib import Path

import torch


def resolve_device(name: str) -> torch.device:
    """``auto`` -> cuda when available, else cpu; anything else as torch names it."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


class MissingModelError(FileNotFoundError):
    """A ``--model`` that names a local folder which is not there; ``str()`` is the one-line reason."""

    def __str__(self) -> str:
        return self.args[0]


def looks_local(path: str) -> bool:
    """Whether ``path`` names a folder on this machine rather than a Hub id: it exists, starts with ``.``, ``/``
    or ``~``, has more than one path separator, or is ``a/b`` where ``a`` is a local folder (``kosmos_out/nope``
    beside ``kosmos_out/``). A Hub id (``gpt2``, ``microsoft/kosmos-2-patch14-224``) is left to transformers."""
    text = str(path).replace(os.sep, "/")
    if Path(text).expanduser().exists() or text.startswith((".", "/", "~")) or text.count("/") > 1:
        return True
    return "/" in text and Path(text.split("/", 1)[0]).is_dir()


def check_model_path(path: str, flag: str = "--model") -> None:
    """Refuse, in one line, a local-looking ``path`` that does not exist, before transformers would send it to the
    Hub as a model id (offline that is half a minute of retries and a connection error)."""
    expanded = Path(str(path)).expanduser()
    if looks_local(path) and not expanded.exists():
        parent = next((p for p in expanded.parents if p.is_dir()), None)
        where = f" (nearest existing folder: {parent})" if parent is not None and str(parent) != "." else ""
        raise MissingModelError(f"{flag} {path}: the local folder does not exist{where}")


def load_model(path: str, device: torch.device):
    """Model + processor from a checkpoint's ``model`` dir, a training output dir (its latest checkpoint),
    a checkpoint dir, or any ``save_pretrained`` directory. A local-looking path that is missing is refused
    (``MissingModelError``), never looked up on the Hub."""
    import pickle

    from transformers import Kosmos2Processor

    from grit_pipeline.safe_load import UnsafeFileError
    from kosmos.checkpoint import latest_checkpoint
    from kosmos.modeling import load_pretrained

    check_model_path(path)
    root = Path(path).expanduser()
    if (root / "checkpoints").is_dir():
        root = latest_checkpoint(root / "checkpoints") or root
    if (root / "model").is_dir():
        root = root / "model"
    try:
        # safetensors only: a pytorch_model.bin is a pickle, and loading one could run code.
        model = load_pretrained(root, use_safetensors=True).to(device).eval()
        processor = Kosmos2Processor.from_pretrained(str(root))
    except (OSError, ValueError, pickle.UnpicklingError) as error:
        raise UnsafeFileError(f"cannot load a model from {root} (safetensors weights only): "
                              f"{' '.join(str(error).split())[:300]}") from None
    return model, processor
