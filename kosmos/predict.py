"""``kosmos predict TASK``: run a task of the registry (``kosmos.tasks``) on a model and write its predictions.

Generation tasks write what ``kosmos score`` reads: JSON lines ``{"id", "text", "frame"}`` for rec / flickr / reg
(``text`` is the generated text after ``</image>``, prompt included, with location tokens; ``frame`` is the region
of the original image the model saw, normalised x0, y0, w, h) and the official results files for caption
(``[{"image_id", "caption"}]``) and vqa (``[{"question_id", "answer"}]``). Ranking tasks write JSON lines
``{"id", "loglikelihoods", "greedy", "tokens", ...}``, one log-likelihood per candidate.
"""
from __future__ import annotations

from typing import Iterator

from kosmos.evaluate.generate import Decoding, Query, clean_answer  # noqa: F401 - the predict API
from kosmos.evaluate.model import load_model, resolve_device  # noqa: F401
from kosmos.tasks import Inputs, get_task, task_names
from kosmos.tasks.flickr import flickr_prompt  # noqa: F401
from kosmos.tasks.rec import rec_prompt  # noqa: F401
from kosmos.tasks.reg import reg_prompt  # noqa: F401
from kosmos.tasks.suite import run_task  # noqa: F401

TASKS = task_names()


def decoding_of(task: str) -> Decoding:
    decoding = get_task(task).decoding
    if decoding is None:
        raise ValueError(f"task {task!r} does not generate")
    return decoding


def build_queries(task: str, images_dir: str, annotations=None, questions=None,
                  image_template: str = "COCO_{data_subtype}_{image_id:012d}.jpg") -> list[Query]:
    """The zero-shot prompts of one of the Kosmos-2 tasks from loaded annotation files (a dict, or a Flickr30k
    Entities folder's path); ``kosmos.tasks`` builds every task's queries from file paths."""
    from kosmos.tasks import caption, flickr, rec, reg, vqa

    if task == "rec":
        return rec.queries_from(annotations, images_dir)
    if task == "flickr":
        return flickr.queries_from(annotations, images_dir)
    if task == "reg":
        return reg.queries_from(annotations, images_dir)
    if task == "caption":
        return caption.queries_from(annotations["images"], images_dir)
    if task == "vqa":
        return vqa.queries_from(questions, images_dir, inputs=Inputs(image_template=image_template))
    raise ValueError(f"build_queries knows the Kosmos-2 tasks; use kosmos.tasks.get_task({task!r}).queries")


def generate(model, processor, queries: list[Query], batch_size: int = 16, image_mode: str = "square",
             device=None, progress=None) -> Iterator[dict]:
    """Generate for each query with its task's decoding settings (from the registry)."""
    from kosmos.evaluate.generate import generate as run

    return run(model, processor, queries, decoding_of, batch_size, image_mode, device, progress)


def write_predictions(task: str, results: list[dict], path, inputs: Inputs | None = None) -> None:
    """Atomically write the task's predictions file."""
    get_task(task).write_predictions(results, path, inputs or Inputs())
