"""The evaluation tasks: one module per task, each declaring a :class:`~kosmos.tasks.base.Task` as ``TASK``
(or several as ``TASKS``). ``MODULES`` is the one list of tasks: ``kosmos predict/score/eval``, ``kosmos tasks``,
the Makefile and the suite all read it through :func:`registry`."""
from __future__ import annotations

import importlib
from functools import lru_cache

from kosmos.tasks.base import Inputs, Task

# Kosmos-2 (grounding and the zero-shot five), then Kosmos-1's in-context suite (paper Table 1 order).
MODULES = (
    "rec", "flickr", "reg", "caption", "vqa",
    "storycloze", "hellaswag", "wsc273", "winogrande", "piqa", "boolq", "cb", "copa",
    "caption_flickr30k", "vizwiz", "classify", "classify_descriptions", "sst2", "hatefulmemes", "websrc", "raven",
    "cot_sst2", "relativesize", "memorycolor", "colorterms",
)


@lru_cache(maxsize=1)
def registry() -> dict[str, Task]:
    """Every task by name, in ``MODULES`` order."""
    tasks: dict[str, Task] = {}
    for name in MODULES:
        module = importlib.import_module(f"kosmos.tasks.{name}")
        for task in getattr(module, "TASKS", None) or [module.TASK]:
            if task.name in tasks:
                raise ValueError(f"two tasks named {task.name!r}")
            tasks[task.name] = task
    return tasks


def task_names() -> tuple[str, ...]:
    return tuple(registry())


def get_task(name: str) -> Task:
    try:
        return registry()[name]
    except KeyError:
        raise ValueError(f"unknown task {name!r}; choose one of {', '.join(registry())}") from None


__all__ = ["Inputs", "Task", "MODULES", "registry", "task_names", "get_task"]
