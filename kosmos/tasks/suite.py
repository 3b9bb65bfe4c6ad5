"""Running tasks of the registry: ``run_task`` (``kosmos predict``), ``score_task`` (``kosmos score``),
``evaluate_task`` (``kosmos eval``: predict + score over shot counts and trials) and ``run_suite`` (the Kosmos-1
suite over a data folder).

Each task writes ``OUTPUT/TASK.json`` (task, benchmark, mode, model, seed, trials, and per shot count: items,
the headline metric's mean and standard deviation over trials, every trial's metrics), its predictions files
``OUTPUT/TASK/{k}shot_trial{t}.SUFFIX``; the suite adds ``OUTPUT/results.md`` (one row per task, one column per
shot count) and ``OUTPUT/shots.png`` (metric vs shots, one panel per task).
"""
from __future__ import annotations

import json
import math
import numbers
from pathlib import Path
from typing import Callable

from kosmos.evaluate.fewshot import mean_std
from kosmos.tasks import Inputs, get_task, registry


def run_task(task_name: str, model, processor, inputs: Inputs, batch_size: int = 16, image_mode: str = "square",
             limit: int | None = None, progress=None) -> list[dict]:
    """The task's results on ``model`` (not yet written): its queries generated or its items ranked."""
    from kosmos.evaluate.generate import generate
    from kosmos.evaluate.rank import rank

    task = get_task(task_name)
    if task.predict is not None:
        return task.predict(model, processor, inputs, batch_size=batch_size, image_mode=image_mode, limit=limit,
                            progress=progress)
    queries = task.queries(inputs)
    if limit:
        queries = queries[:limit]
    if task.mode == "generate":
        decodings = {name: t.decoding for name, t in registry().items() if t.decoding is not None}
        return list(generate(model, processor, queries, decodings, batch_size, image_mode, progress=progress))
    return list(rank(model, processor, queries, image_mode=image_mode, progress=progress))


def score_task(task: str, predictions: str, annotations: str, questions: str | None = None, **options) -> dict:
    """Score saved predictions of one task; ``options``: match, iou_dtype (rec, flickr), gt_boxes, flickr_entities,
    split (flickr), vqa_eval (vqa), keep_non_ascii (reg), images, class_names. Unset options (None) take the
    official defaults."""
    task_def = get_task(task)
    options = {k: v for k, v in options.items() if v is not None}
    for name, path in (("--predictions", predictions), ("--annotations", annotations)):
        if not Path(path).exists():
            raise FileNotFoundError(f"{name} {path}: no such file")
    inputs = Inputs(annotations=annotations, questions=questions, images=options.pop("images", None),
                    class_names=options.pop("class_names", None), options=options)
    return task_def.score(predictions, inputs)


def evaluate_task(task_name: str, model, processor, inputs, output: str | Path, shots=(0,), trials: int = 1,
                  model_name: str = "", batch_size: int = 16, image_mode: str = "square", limit: int | None = None,
                  log: Callable[[str], None] = lambda m: None) -> dict:
    """Run and score ``task_name`` for every shot count (``trials`` trials each when shots > 0; zero-shot has
    nothing random and runs once); write ``output/TASK.json`` and return it. Every shot count's inputs are checked
    (``shot_needs``) before the first query runs."""
    task = get_task(task_name)
    for k in shots:
        missing = [need for need in task.shot_needs if k and not getattr(inputs, need)]
        if missing:
            flags = " and ".join(f"--{need.replace('_', '-')}" for need in missing)
            raise ValueError(f"{k}-shot {task_name} needs {flags} (demonstrations)")
    output = Path(output)
    runs = []
    for k in shots:
        per_trial, items = [], 0
        for trial in range(trials if k > 0 else 1):
            run_inputs = inputs.with_(shots=k, trial=trial)
            results = run_task(task_name, model, processor, run_inputs, batch_size, image_mode, limit)
            path = output / task_name / f"{k}shot_trial{trial}.{task.suffix}"
            task.write_predictions(results, path, run_inputs)
            metrics = task.score(str(path), run_inputs)
            per_trial.append(metrics)
            items = len(results)
            log(f"[eval] {task_name} {k}-shot trial {trial}: {task.metric} {metrics.get(task.metric)} ({items} items)")
        mean, std = mean_std([m[task.metric] for m in per_trial])
        means = {name: round(mean_std([m[name] for m in per_trial])[0], 4) for name, value in per_trial[0].items()
                 if isinstance(value, numbers.Real) and not isinstance(value, bool)}
        runs.append({"shots": k, "trials": len(per_trial), "items": items, "metric": task.metric,
                     "mean": round(mean, 4), "std": round(std, 4), "means": means, "per_trial": per_trial})
    summary = {"task": task_name, "benchmark": task.benchmark, "mode": task.mode, "model": model_name,
               "seed": inputs.seed, "trials": trials, "metric": task.metric, "runs": runs}
    output.mkdir(parents=True, exist_ok=True)
    (output / f"{task_name}.json").write_text(json.dumps(summary, indent=1))
    return summary


def suite_tasks(data: str | Path) -> list[tuple]:
    """``(task, inputs)`` of every task whose files are under ``data`` (each task's ``find``), in registry order."""
    data = Path(data)
    if not data.is_dir():
        raise ValueError(f"--data {data}: not a folder")
    found = [(task, task.find(data) if task.find else None) for task in registry().values()]
    return [(task, inputs) for task, inputs in found if inputs is not None]


def run_suite(model, processor, data: str | Path, output: str | Path, shots=None, trials: int = 1, seed: int = 1234,
              model_name: str = "", log: Callable[[str], None] = lambda m: None, **options) -> dict:
    """Every task whose files are under ``data`` (each task's ``find``), at the paper's shot counts (or ``shots``);
    a task without its demonstrations' files (``shot_needs``: a training split) runs zero-shot only."""
    data, output = Path(data), Path(output)
    found = suite_tasks(data)
    names = {task.name for task, _ in found}
    skipped = [name for name in registry() if name not in names]
    summaries = []
    for task, inputs in found:
        counts = list(shots or task.shots)
        if any(getattr(inputs, need) is None for need in task.shot_needs):
            counts = [k for k in counts if k == 0] or [0]
        log(f"[eval] {task.name}: shots {counts}")
        summaries.append(evaluate_task(task.name, model, processor, inputs.with_(seed=seed), output, counts, trials,
                                       model_name, log=log, **options))
    if not summaries:
        raise ValueError(f"--data {data}: no task's files found there (docs/evaluation.md lists the layout)")
    (output / "results.md").write_text(markdown_table(summaries))
    plot_shots(summaries, output / "shots.png")
    return {"tasks": [s["task"] for s in summaries], "skipped": skipped, "table": str(output / "results.md"),
            "plot": str(output / "shots.png")}


def markdown_table(summaries: list[dict]) -> str:
    """One row per task, one column per shot count: ``mean`` or ``mean ± std`` (over trials)."""
    counts = sorted({run["shots"] for s in summaries for run in s["runs"]})
    lines = ["| task | metric | " + " | ".join(f"{k}-shot" for k in counts) + " |",
             "|---|---|" + "---|" * len(counts)]
    for s in summaries:
        cells = []
        by_shots = {run["shots"]: run for run in s["runs"]}
        for k in counts:
            run = by_shots.get(k)
            if run is None:
                cells.append("")
            elif run["trials"] > 1:
                cells.append(f"{run['mean']:.2f} ± {run['std']:.2f}")
            else:
                cells.append(f"{run['mean']:.2f}")
        lines.append(f"| {s['task']} | {s['metric']} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def plot_shots(summaries: list[dict], path: Path) -> None:
    """Metric vs shots, one panel per task (error bars: std over trials)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    columns = min(4, len(summaries))
    rows = math.ceil(len(summaries) / columns)
    figure, axes = plt.subplots(rows, columns, figsize=(3.2 * columns, 2.6 * rows), squeeze=False)
    for axis, s in zip(axes.flat, summaries):
        xs = [run["shots"] for run in s["runs"]]
        axis.errorbar(xs, [run["mean"] for run in s["runs"]], yerr=[run["std"] for run in s["runs"]],
                      marker="o", capsize=3)
        axis.set_title(s["task"], fontsize=9)
        axis.set_xlabel("shots", fontsize=8)
        axis.set_ylabel(s["metric"], fontsize=8)
        axis.set_xticks(xs)
    for axis in list(axes.flat)[len(summaries):]:
        axis.axis("off")
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)
