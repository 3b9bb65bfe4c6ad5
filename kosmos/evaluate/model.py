"""Loading a model for evaluation (any directory ``kosmos train`` writes, or a ``save_pretrained`` one)."""
from __future__ import annotations

from pathlib import Path

import torch


def resolve_device(name: str) -> torch.device:
    """``auto`` -> cuda when available, else cpu; anything else as torch names it."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def load_model(path: str, device: torch.device):
    """Model + processor from a checkpoint's ``model`` dir, a training output dir (its latest checkpoint),
    a checkpoint dir, or any ``save_pretrained`` directory."""
    import pickle

    from transformers import Kosmos2Processor

    from grit_pipeline.safe_load import UnsafeFileError
    from kosmos.checkpoint import latest_checkpoint
    from kosmos.modeling import load_pretrained

    root = Path(path)
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
