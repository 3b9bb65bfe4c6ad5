"""What a task declares, once: the files it reads, its prompt as the paper writes it, its mode, where its
demonstrations come from, what it writes, its metric and what it needs on the command line."""
from __future__ import annotations

import json
import os
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable

from kosmos.evaluate.generate import Decoding

MODES = ("generate", "rank", "p_answer")  # generate text | rank candidates by log-likelihood | P of a fixed answer


@dataclass(frozen=True)
class Inputs:
    """What the command line (or the suite) gives a task; a task reads the fields it declares in ``needs``."""

    annotations: str | None = None      # the benchmark's evaluation file (or folder)
    images: str | None = None           # folder the annotations' image names are relative to
    questions: str | None = None        # VQAv2 questions json
    train: str | None = None            # the training split (demonstrations), in the benchmark's format
    train_questions: str | None = None
    train_images: str | None = None     # default: images
    class_names: str | None = None      # zero-shot classification: one name per line, or a json list / dict
    image_template: str = "COCO_{data_subtype}_{image_id:012d}.jpg"
    shots: int = 0
    seed: int = 1234                    # lm-evaluation-harness's few-shot seed
    trial: int = 0
    template: str | None = None         # the prompt template of a task that has several (None: the task's default)
    options: dict = field(default_factory=dict)  # scoring variants (match, iou_dtype, vqa_eval, ...)

    def with_(self, **changes) -> "Inputs":
        return replace(self, **changes)

    def option(self, name: str, default=None):
        value = self.options.get(name)
        return default if value is None else value


@dataclass(frozen=True)
class Task:
    """One evaluation task. ``queries(inputs)`` builds generation queries (``generate``) or rank items (``rank``,
    ``p_answer``); ``write(results, path, inputs)`` writes the predictions file; ``score(path, inputs)`` returns
    the metrics (``metric`` names the headline one; every rate ends in ``_pct``, docs/evaluation.md). ``predict``
    replaces the default run (generate or rank the queries) for tasks of several stages. ``find(dir)`` gives the
    task's inputs under a suite folder, or None. ``shot_needs``: the inputs a few-shot run reads besides ``needs``
    (checked for every shot count before a model is loaded); ``needs_java``: its metric runs Java (pycocoevalcap)."""

    name: str
    benchmark: str
    mode: str
    prompt: str
    needs: tuple[str, ...]
    metric: str
    queries: Callable[[Inputs], list]
    score: Callable[[str, Inputs], dict]
    write: Callable[[list, str, Inputs], None] | None = None
    decoding: Decoding | None = None
    shots: tuple[int, ...] = (0,)
    demonstrations: str = "none"        # where demonstrations come from (for docs and `kosmos tasks`)
    suffix: str = "jsonl"
    find: Callable[[Path], Inputs | None] | None = None
    predict: Callable | None = None
    notes: str = ""
    shot_needs: tuple[str, ...] = ("train",)
    needs_java: bool = False
    templates: tuple[str, ...] = ()    # prompt templates the task can write (``--template``); the first is the default

    def __post_init__(self):
        if self.mode not in MODES:
            raise ValueError(f"task {self.name}: mode must be one of {MODES}")

    def write_predictions(self, results: list, path, inputs: Inputs) -> None:
        (self.write or write_jsonl)(results, path, inputs)


def atomic_write(path, write: Callable[[Any], None]) -> None:
    """Write through a temporary file, then rename (a reader never sees half a file)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + f".tmp-{os.getpid()}")
    with open(tmp, "w", encoding="utf-8") as handle:
        write(handle)
    os.replace(tmp, path)


def write_jsonl(results: list, path, inputs: Inputs | None = None) -> None:
    atomic_write(path, lambda handle: handle.writelines(json.dumps(r) + "\n" for r in results))


def first_existing(root: Path, *names: str) -> Path | None:
    for name in names:
        found = sorted(root.glob(name))
        if found:
            return found[0]
    return None
