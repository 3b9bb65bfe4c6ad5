"""The run folder's files: logs (truncated on resume), the best model kept by held-out REC."""
from __future__ import annotations

import json
import os
from pathlib import Path

BEST = "best"


def read_best(out: Path) -> dict | None:
    path = out / BEST / "best.json"
    return json.loads(path.read_text()) if path.exists() else None


def save_best(out: Path, model, processor, entry: dict) -> None:
    """Replace OUTPUT/best (model + processor + best.json) atomically."""
    import shutil

    tmp = out / f"{BEST}.tmp-{os.getpid()}"
    if tmp.exists():
        shutil.rmtree(tmp)
    model.save_pretrained(tmp)
    processor.save_pretrained(tmp)
    (tmp / "best.json").write_text(json.dumps(entry))
    old = out / f"{BEST}.old-{os.getpid()}"
    if (out / BEST).exists():
        os.replace(out / BEST, old)
    os.replace(tmp, out / BEST)
    shutil.rmtree(old, ignore_errors=True)



def truncate_log(path: Path, step: int) -> None:
    """Drop log lines past ``step`` (a resumed run rewrites them), atomically."""
    if not path.exists():
        return
    lines = [l for l in path.read_text().splitlines() if l.strip() and json.loads(l)["step"] <= step]
    tmp = path.with_name(path.name + f".tmp-{os.getpid()}")
    tmp.write_text("".join(l + "\n" for l in lines))
    os.replace(tmp, path)


def read_log(output: str | Path, name: str = "train_log.jsonl") -> list[dict]:
    """The training log's entries (``name="eval_log.jsonl"``: the held-out REC evaluations)."""
    path = Path(output) / name
    return [json.loads(l) for l in path.read_text().splitlines() if l.strip()] if path.exists() else []


