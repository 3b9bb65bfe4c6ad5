"""The ``kosmos`` command line: train, predict, score (and convert synthetic truth to RefCOCO format)."""
from __future__ import annotations

import argparse
import json
import os
import sys
import time


def _add_train(sub) -> None:
    from grit_pipeline.config_flags import add_config_arguments
    from kosmos.sources import DataConfig
    from kosmos.train import TrainConfig

    p = sub.add_parser("train", help="train Kosmos-2 on GRIT webdataset shards",
                       description="Train Kosmos-2 (from scratch with a preset, or from --init) on GRIT shards.")
    add_config_arguments(p, TrainConfig)
    # data options given on the command line override DataConfig's defaults (and the preset's max_length)
    add_config_arguments(p, DataConfig, only_given=True)
    p.set_defaults(_run=_run_train)


def _run_train(args) -> int:
    from grit_pipeline.config_flags import config_from_args, config_options
    from kosmos.sources import DataConfig
    from kosmos.train import TrainConfig, train

    cfg = config_from_args(TrainConfig, args, data_options=config_options(DataConfig, args))
    summary = train(cfg, log=lambda m: print(m, file=sys.stderr, flush=True))
    print(json.dumps(summary, default=str))
    return 0


def _add_task_inputs(p, task_help: str, optional: bool = False) -> None:
    """The task positional and the input flags of every task of the registry (each task says which it needs)."""
    from kosmos.tasks import task_names

    p.add_argument("task", choices=task_names(), metavar="TASK", help=task_help + " (kosmos tasks lists them)",
                   **({"nargs": "?", "default": None} if optional else {}))
    p.add_argument("--annotations", help="the benchmark's evaluation file or folder: MDETR json (rec, flickr, reg), "
                                          "a Flickr30k Entities folder (flickr), COCO captions json (caption), VQA "
                                          "annotations json (vqa), the task's jsonl/csv/parquet/json or image folder")
    p.add_argument("--images", help="directory the annotations' image names are relative to")
    p.add_argument("--questions", help="VQAv2 questions json (vqa)")
    p.add_argument("--class-names", help="zero-shot classification: class names (one per line, or a json list/dict)")
    p.add_argument("--image-template", default="COCO_{data_subtype}_{image_id:012d}.jpg",
                   help="vqa image file name pattern")
    d = p.add_argument_group("demonstrations (few-shot)")
    d.add_argument("--train", help="the training split's file, in the benchmark's format (demonstrations)")
    d.add_argument("--train-questions", help="vqa: the training split's questions json")
    d.add_argument("--train-images", help="images of the training split (default: --images)")
    d.add_argument("--seed", type=int, default=1234, help="demonstration seed: query q of trial t draws its demonstrations with "
                        "random.Random(f'{seed}/{t}/{q}') (docs/evaluation.md)")
    p.add_argument("--template", default=None, help="the prompt template of a task that has several (copa, cb: "
                                                     "harness-legacy, the default, or harness-current; kosmos tasks)")


def _inputs(args, shots: int = 0, trial: int = 0):
    from kosmos.tasks import Inputs

    return Inputs(annotations=args.annotations, images=args.images, questions=args.questions, train=args.train,
                  train_questions=args.train_questions, train_images=args.train_images,
                  class_names=args.class_names, image_template=args.image_template, shots=shots, seed=args.seed,
                  trial=trial, template=args.template)


def _missing_inputs(command: str, args, shots) -> str | None:
    """One line naming what a run of ``args.task`` at every one of ``shots`` lacks, checked before any model is
    loaded or any query run; None when nothing is missing."""
    from kosmos.tasks import get_task

    task = get_task(args.task)
    for need in task.needs:
        if not getattr(args, need):
            return f"kosmos {command} {args.task}: --{need.replace('_', '-')} is required"
    if getattr(args, "template", None) is not None and args.template not in task.templates:
        known = ", ".join(task.templates) if task.templates else "none (it has one prompt)"
        return f"kosmos {command} {args.task}: --template {args.template}: the task's templates are {known}"
    for k in shots:
        if k < 0:
            return f"kosmos {command} {args.task}: --shots {k}: shot counts are 0 or more"
        if k and task.demonstrations == "none":  # (the cross-modal tasks take --train demonstrations)
            return f"kosmos {command} {args.task}: the task is zero-shot only (Kosmos-1 section 4)"
        missing = [need for need in task.shot_needs if k and not getattr(args, need)]
        if missing:
            flags = " and ".join(f"--{need.replace('_', '-')}" for need in missing)
            return f"kosmos {command} {args.task}: {k}-shot {args.task} needs {flags} (demonstrations)"
    return None


def _java_problem(command: str, tasks) -> str | None:
    """One line when a task among ``tasks`` scores with Java (METEOR, CIDEr's tokenizer) and none is installed."""
    from kosmos.evaluate.metrics.captioning import java_missing

    needing = [task.name for task in tasks if task.needs_java]
    problem = java_missing() if needing else None
    return f"kosmos {command} {', '.join(needing)}: {problem}" if problem else None


def _add_run_options(p) -> None:
    p.add_argument("--model", required=True,
                   help="training output dir (latest checkpoint), checkpoint dir, or save_pretrained dir")
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--image-mode", default="square", choices=("square", "crop"),
                   help="how images are fitted (default square: the whole image stays visible)")
    p.add_argument("--limit", type=int, help="only the first N queries")
    p.add_argument("--device", default="auto")
    p.add_argument("--threads", type=int)


def _add_predict(sub) -> None:
    p = sub.add_parser("predict", help="run an evaluation task on a model, write its predictions",
                       description="Generate (or rank candidates) with the prompt and settings TASK declares.")
    _add_task_inputs(p, "the task")
    p.add_argument("--shots", type=int, default=0, help="demonstrations per query (from --train)")
    p.add_argument("--trial", type=int, default=0,
                   help="which trial's demonstrations (query q draws with random.Random(f'{seed}/{trial}/{q}'))")
    p.add_argument("--output", required=True, help="predictions file (JSON lines; json for caption/vqa)")
    _add_run_options(p)
    p.set_defaults(_run=_run_predict)


def _progress(started: float, every: int):
    def progress(done, total):
        if done == total or done % 200 < every:
            print(f"{done}/{total} queries, {done / (time.perf_counter() - started):.1f}/s", file=sys.stderr)
    return progress


def _run_predict(args) -> int:
    import torch

    from kosmos.evaluate.model import load_model, resolve_device
    from kosmos.predict import run_task, write_predictions

    if args.threads:
        torch.set_num_threads(args.threads)
    problem = _missing_inputs("predict", args, [args.shots])
    if problem:
        print(problem, file=sys.stderr)
        return 2
    inputs = _inputs(args, args.shots, args.trial)
    device = resolve_device(args.device)
    model, processor = load_model(args.model, device)
    started = time.perf_counter()
    try:
        results = run_task(args.task, model, processor, inputs, args.batch_size, args.image_mode, args.limit,
                           _progress(started, args.batch_size))
    except ValueError as error:
        print(f"kosmos predict {args.task}: {error}", file=sys.stderr)
        return 2
    write_predictions(args.task, results, args.output, inputs)
    print(json.dumps({"task": args.task, "predictions": len(results), "output": args.output,
                      "wall_s": round(time.perf_counter() - started, 2)}))
    return 0


def _add_score_options(p) -> None:
    o = p.add_argument_group("protocol (defaults: the official scripts, docs/evaluation.md)")
    o.add_argument("--phrase-match", dest="match", choices=("exact", "normalised"), default=None,
                   help="rec, flickr: phrase text equal after strip() (official, default) or ignoring case, "
                        "spacing and end punctuation (tolerant parser)")
    o.add_argument("--iou-dtype", choices=("float32", "float64"), default=None,
                   help="rec, flickr: IoU precision (official: float32 for rec, float64 for flickr)")
    o.add_argument("--flickr-entities", default=None,
                   help="flickr: Flickr30k Entities folder whose XML gives the ground-truth boxes (as the "
                        "official script); without it the json's boxes are used")
    o.add_argument("--split", default=None, help="flickr with a folder as --annotations: read <split>.txt")
    o.add_argument("--gt-boxes", choices=("phrase-text", "span"), default=None,
                   help="flickr: boxes of the first phrase with the same text (official, default) or of the "
                        "phrase's own span")
    o.add_argument("--vqa-eval", choices=("2021", "2016"), default=None,
                   help="vqa: vqaEval.py answer processing of 2021 (default, the evaluation server's) or 2016")
    o.add_argument("--keep-non-ascii", action="store_true", default=None,
                   help="reg: keep non-ASCII characters in the references (refer drops them)")


def _score_options(args) -> dict:
    names = ("match", "iou_dtype", "flickr_entities", "split", "gt_boxes", "vqa_eval", "keep_non_ascii")
    return {name: getattr(args, name) for name in names if getattr(args, name) is not None}


def _add_score(sub) -> None:
    from kosmos.tasks import task_names

    p = sub.add_parser("score", help="metrics from saved predictions",
                       description="Score saved predictions against the benchmark's annotations; prints JSON.")
    p.add_argument("task", choices=task_names(), metavar="TASK", help="the task (kosmos tasks lists them)")
    p.add_argument("--predictions", required=True,
                   help="kosmos predict output, or (rec, flickr) the released evaluation's fairseq H- lines")
    p.add_argument("--annotations", required=True,
                   help="MDETR json (rec, reg, flickr), a Flickr30k Entities folder (flickr), COCO captions "
                        "json (caption), VQA annotations json (vqa), the task's own file or folder")
    p.add_argument("--questions", help="VQAv2 questions json (vqa)")
    p.add_argument("--images", help="directory the annotations' image names are relative to")
    p.add_argument("--class-names", help="zero-shot classification: the class names file")
    _add_score_options(p)
    p.set_defaults(_run=_run_score)


def _run_score(args) -> int:
    from kosmos.evaluate.metrics.captioning import JavaMissingError
    from kosmos.tasks import get_task
    from kosmos.tasks.suite import score_task

    problem = _java_problem("score", [get_task(args.task)])
    if problem:
        print(problem, file=sys.stderr)
        return 2
    try:
        result = score_task(args.task, args.predictions, args.annotations, args.questions, images=args.images,
                       class_names=args.class_names, **_score_options(args))
    except (JavaMissingError, FileNotFoundError, ValueError) as error:
        print(f"kosmos score {args.task}: {error}", file=sys.stderr)
        return 2
    print(json.dumps({"task": args.task, **result}))
    return 0


def _add_eval(sub) -> None:
    p = sub.add_parser("eval", help="predict + score a task (or the Kosmos-1 suite) over shots and trials",
                       description="Run TASK (predict, then score) for each shot count and trial and write "
                                   "OUTPUT/TASK.json; or, with --suite kosmos1 --data DIR, every task whose files "
                                   "are in DIR, plus OUTPUT/results.md and OUTPUT/shots.png.")
    _add_task_inputs(p, "the task (omit with --suite)", optional=True)
    p.add_argument("--suite", choices=("kosmos1",), help="every task of the suite whose files are under --data")
    p.add_argument("--data", help="the suite's folder (docs/evaluation.md lists each task's files there)")
    p.add_argument("--shots", type=int, nargs="+", help="shot counts (default: 0 for one task, the paper's for the suite)")
    p.add_argument("--trials", type=int, default=1,
                   help="trials per few-shot count, t = 0..N-1, each drawing anew (mean and std reported)")
    p.add_argument("--output", required=True, help="folder for predictions and results")
    _add_run_options(p)
    _add_score_options(p)
    p.set_defaults(_run=_run_eval)


def _run_eval(args) -> int:
    import torch

    from kosmos.evaluate.metrics.captioning import JavaMissingError
    from kosmos.evaluate.model import load_model, resolve_device
    from kosmos.tasks import get_task
    from kosmos.tasks.suite import evaluate_task, run_suite, suite_tasks

    if args.threads:
        torch.set_num_threads(args.threads)
    if bool(args.suite) == bool(args.task):
        print("kosmos eval: give a TASK, or --suite kosmos1 --data DIR", file=sys.stderr)
        return 2
    if args.suite and not args.data:
        print("kosmos eval --suite: --data DIR is required", file=sys.stderr)
        return 2
    if args.trials < 1:
        print("kosmos eval: --trials must be >= 1", file=sys.stderr)
        return 2
    if args.task:
        problem = _missing_inputs("eval", args, args.shots or [0])
        if problem:
            print(problem, file=sys.stderr)
            return 2
    try:
        tasks = [get_task(args.task)] if args.task else [task for task, _ in suite_tasks(args.data)]
    except ValueError as error:
        print(f"kosmos eval {args.suite}: {error}", file=sys.stderr)
        return 2
    problem = _java_problem("eval", tasks)
    if problem:
        print(problem, file=sys.stderr)
        return 2
    model, processor = load_model(args.model, resolve_device(args.device))
    options = dict(batch_size=args.batch_size, image_mode=args.image_mode, limit=args.limit,
                   log=lambda m: print(m, file=sys.stderr, flush=True))
    try:
        if args.suite:
            summary = run_suite(model, processor, args.data, args.output, shots=args.shots, trials=args.trials,
                                seed=args.seed, model_name=args.model, **options)
        else:
            summary = evaluate_task(args.task, model, processor, _inputs(args).with_(options=_score_options(args)),
                                    args.output, shots=args.shots or [0], trials=args.trials, model_name=args.model,
                                    **options)
    except (JavaMissingError, FileNotFoundError, ValueError) as error:
        print(f"kosmos eval {args.task or args.suite}: {error}", file=sys.stderr)
        return 2
    print(json.dumps(summary))
    return 0


def _add_tasks(sub) -> None:
    p = sub.add_parser("tasks", help="the evaluation tasks (the registry)",
                       description="List the evaluation tasks: mode, files, prompt, metric, shots.")
    p.add_argument("--suffix", metavar="TASK", help="print only TASK's predictions file suffix (for the Makefile)")
    p.set_defaults(_run=_run_tasks)


def _run_tasks(args) -> int:
    from kosmos.tasks import get_task, registry

    if args.suffix:
        try:
            print(get_task(args.suffix).suffix)
        except ValueError as error:
            print(f"kosmos tasks: {error}", file=sys.stderr)
            return 2
        return 0
    for task in registry().values():
        print(json.dumps({"task": task.name, "mode": task.mode, "benchmark": task.benchmark, "needs": task.needs,
                          "prompt": task.prompt, "metric": task.metric, "shots": task.shots,
                          "demonstrations": task.demonstrations, "templates": task.templates,
                          "needs_java": task.needs_java}))
    return 0


def _add_refcoco(sub) -> None:
    p = sub.add_parser("synth-refcoco", help="synthetic truth -> MDETR RefCOCO json + images",
                       description="Convert `grit synth` truth into MDETR RefCOCO format for `kosmos score rec`.")
    p.add_argument("--synth", required=True, help="a `grit synth --output` directory (shards + truth/)")
    p.add_argument("--output", required=True)
    p.add_argument("--split", default="val")
    p.set_defaults(_run=lambda a: _print_json(__import__("kosmos.refcoco", fromlist=["x"]).write_refcoco(
        a.synth, a.output, a.split)))


def _add_mixture_tools(sub) -> None:
    p = sub.add_parser("synth-mixture", help="every mixture source format from the synthetic world",
                       description="Write image-caption shards, a text corpus (jsonl + parquet, and a held-out one), "
                                   "MMC4 jsonl + images and OBELICS parquet from grit's synthetic world.")
    p.add_argument("--output", required=True)
    p.add_argument("--images", type=int, default=2000, help="image-caption pairs")
    p.add_argument("--text-documents", type=int, default=2000)
    p.add_argument("--documents", type=int, default=400, help="interleaved documents")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--level", type=int, default=1, choices=(1, 2, 3), help="the world's level for images")
    p.set_defaults(_run=lambda a: _print_json(__import__("kosmos.worlds", fromlist=["x"]).write_mixture_world(
        a.output, a.images, a.text_documents, a.documents, a.seed, a.level)))

    p = sub.add_parser("text-loss", help="held-out language loss of a model on a text corpus",
                       description="Mean next-token loss of a model on text corpus files, packed as training packs them.")
    p.add_argument("--model", required=True, help="training output dir, checkpoint dir or save_pretrained dir")
    p.add_argument("--data", required=True, nargs="+", help="text corpus files or folders")
    p.add_argument("--rows", type=int, default=200)
    p.add_argument("--threads", type=int)
    p.set_defaults(_run=_run_text_loss)


def _run_text_loss(args) -> int:
    import torch

    from kosmos.evaluate.model import load_model
    from kosmos.train.heldout import heldout_text_loss

    if args.threads:
        torch.set_num_threads(args.threads)
    model, processor = load_model(args.model, torch.device("cpu"))
    return _print_json(heldout_text_loss(model, processor, args.data, max_rows=args.rows))


def _print_json(obj) -> int:
    print(json.dumps(obj))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="kosmos", description="Train and evaluate Kosmos-2 on GRIT shards.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    _add_train(sub)
    _add_predict(sub)
    _add_score(sub)
    _add_eval(sub)
    _add_tasks(sub)
    _add_refcoco(sub)
    _add_mixture_tools(sub)
    from kosmos.chat import add_parser as add_chat
    from kosmos.demo import add_parser as add_demo

    add_chat(sub)
    add_demo(sub)
    from kosmos.export import add_parser as add_export
    from kosmos.plot import add_parser as add_plot

    add_plot(sub)
    add_export(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    from grit_pipeline.cli import dispatch

    os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
    return dispatch(build_parser(), argv)


if __name__ == "__main__":
    sys.exit(main())
