"""Atomic training checkpoints with a ``latest`` pointer (open_clip / nanoGPT style).

Layout under ``OUTPUT/checkpoints/``::

    step_0000100/model/      save_pretrained model + processor (loadable by ``kosmos predict --model``)
    step_0000100/state.pt    optimiser, scheduler, step, RNG states, data-reader positions, config
    latest                   text file naming the newest complete checkpoint directory

A checkpoint is written to ``step_N.tmp-<pid>`` and renamed when complete; ``latest`` is replaced
atomically after that, so a crash at any point leaves the previous checkpoint usable.
"""
from __future__ import annotations

import os
import random
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch

from grit_pipeline.safe_load import UnsafeFileError, check_torch_file, load_torch_file

LATEST = "latest"


def rng_state() -> dict[str, Any]:
    """RNG states in types ``torch.load(weights_only=True)`` accepts (numpy's key array as a tensor)."""
    name, keys, position, has_gauss, cached = np.random.get_state()
    numpy_state = (name, torch.from_numpy(keys.astype(np.int64)), int(position), int(has_gauss), float(cached))
    state = {"python": random.getstate(), "numpy": numpy_state, "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    random.setstate(state["python"])
    name, keys, position, has_gauss, cached = state["numpy"]
    np.random.set_state((name, np.asarray(keys, dtype=np.int64).astype(np.uint32), position, has_gauss, cached))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _write_text_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(f"{path.name}.tmp-{os.getpid()}")
    tmp.write_text(text)
    os.replace(tmp, path)


def save_checkpoint(root: Path, step: int, model, processor, state: dict[str, Any], keep: int = 2) -> Path:
    """Write checkpoint ``step`` atomically, point ``latest`` at it, delete all but the newest ``keep``."""
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    name = f"step_{step:07d}"
    final = root / name
    tmp = root / f"{name}.tmp-{os.getpid()}"
    if tmp.exists():
        shutil.rmtree(tmp)
    model.save_pretrained(tmp / "model")
    processor.save_pretrained(tmp / "model")
    torch.save(state, tmp / "state.pt")
    if final.exists():  # a rerun of the same step replaces it
        shutil.rmtree(final)
    os.replace(tmp, final)
    _write_text_atomic(root / LATEST, name + "\n")
    if keep > 0:
        done = sorted(p for p in root.glob("step_*") if p.is_dir() and ".tmp-" not in p.name)
        for old in done[:-keep]:
            shutil.rmtree(old, ignore_errors=True)
    return final


def latest_checkpoint(root: Path) -> Path | None:
    """The directory ``latest`` points at, or None when there is no complete checkpoint."""
    pointer = Path(root) / LATEST
    if not pointer.exists():
        return None
    path = Path(root) / pointer.read_text().strip()
    if not (path / "state.pt").exists():
        raise FileNotFoundError(f"{pointer} names {path}, which is not a complete checkpoint")
    return path


CheckpointError = UnsafeFileError  # a checkpoint refused or unreadable (one-line message)


def load_state(path: Path) -> dict[str, Any]:
    """The training state of a checkpoint, loaded with ``weights_only=True`` (``grit_pipeline.safe_load``):
    a crafted ``state.pt`` is refused before anything in it runs."""
    return load_torch_file(Path(path) / "state.pt")


def check_state(path: Path) -> None:
    """Refuse a crafted ``state.pt`` without loading it (the driver of a distributed run checks it once)."""
    check_torch_file(Path(path) / "state.pt")
