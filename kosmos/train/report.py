"""``kosmos train --report-to tensorboard|wandb``: the series of ``train_log.jsonl`` (and ``eval_log.jsonl``) sent
to a tracker as well, under stable tag names (:func:`scalars`):

- ``train/loss``, ``train/text_loss``, ``train/loc_loss``, ``train/loc_acc``, ``train/lr``, ``train/grad_norm``,
  ``train/tokens_per_s``, ``train/samples_per_s``: a log line's totals;
- ``source/<LABEL>/loss``, ``.../text_loss``, ``.../loc_loss``, ``.../loc_acc``, ``.../tokens``, ``.../samples``:
  each mixture source's own;
- ``eval/rec``: held-out REC accuracy (%) when ``--eval-every`` evaluates.

A value the log writes as null (no location targets in the window) is left out. ``train_log.jsonl`` stays the
record; the tracker is a view of it.
"""
from __future__ import annotations

from pathlib import Path

TENSORBOARD_DIR = "tensorboard"
SOURCE_SERIES = ("loss", "text_loss", "loc_loss", "loc_acc", "tokens", "samples")
TRAIN_SERIES = ("loss", "text_loss", "loc_loss", "loc_acc", "lr", "grad_norm", "tokens_per_s", "samples_per_s")


class ReporterError(ValueError):
    """A --report-to whose library is not installed (one line, before training starts)."""


def check_reporter(kind: str) -> None:
    """Refuse ``--report-to`` whose library is missing, before anything is trained."""
    if kind == "tensorboard":
        try:
            from torch.utils.tensorboard import SummaryWriter  # noqa: F401 - needs the tensorboard package
        except ImportError:
            raise ReporterError("--report-to tensorboard needs tensorboard: pip install tensorboard "
                                "(or the project's extra: pip install -e .[report])") from None
    elif kind == "wandb":
        try:
            import wandb  # noqa: F401
        except ImportError:
            raise ReporterError("--report-to wandb needs wandb: pip install wandb") from None
    elif kind != "none":
        raise ReporterError(f"--report-to {kind!r}: choose none, tensorboard or wandb")


def scalars(entry: dict) -> dict[str, float]:
    """The tagged numbers of one ``train_log.jsonl`` or ``eval_log.jsonl`` entry."""
    out = {f"train/{name}": entry[name] for name in TRAIN_SERIES if entry.get(name) is not None}
    for label, source in entry.get("sources", {}).items():
        out.update({f"source/{label}/{name}": source[name] for name in SOURCE_SERIES if source.get(name) is not None})
    if entry.get("eval_rec") is not None:
        out["eval/rec"] = entry["eval_rec"]
    return out


class Reporter:
    """Where the log entries go besides the jsonl files: nowhere, tensorboard event files or a wandb run."""

    def __init__(self, kind: str, output: Path, plan: dict | None = None, first_step: int = 1):
        self.kind, self.writer, self.run = kind, None, None
        if kind == "tensorboard":
            from torch.utils.tensorboard import SummaryWriter

            # a resumed run rewrites the steps after its checkpoint, as it does in train_log.jsonl
            self.writer = SummaryWriter(log_dir=str(Path(output) / TENSORBOARD_DIR),
                                        purge_step=first_step if first_step > 1 else None)
        elif kind == "wandb":
            import wandb

            self.run = wandb.init(project="kosmos", name=Path(output).name, dir=str(output), config=plan)

    def log(self, entry: dict) -> None:
        values = scalars(entry)
        if self.writer is not None:
            for tag, value in values.items():
                self.writer.add_scalar(tag, value, global_step=entry["step"])
        elif self.run is not None and values:
            self.run.log(values, step=entry["step"])

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
        elif self.run is not None:
            self.run.finish()
