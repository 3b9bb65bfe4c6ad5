"""The ``kosmos`` command line: train, predict, score (and convert synthetic truth to RefCOCO format)."""
from __future__ import annotations

import argparse
import json
import os
import sys
import time


def _add_train(sub) -> None:
    from grit_pipeline.config_flags import add_config_arguments
    from kosmos.data import DataConfig
    from kosmos.train import TrainConfig

    p = sub.add_parser("train", help="train Kosmos-2 on GRIT webdataset shards",
                       description="Train Kosmos-2 (from scratch with a preset, or from --init) on GRIT shards.")
    add_config_arguments(p, TrainConfig)
    # data options given on the command line override DataConfig's defaults (and the preset's max_length)
    add_config_arguments(p, DataConfig, only_given=True)
    p.set_defaults(_run=_run_train)


def _run_train(args) -> int:
    import torch

    from grit_pipeline.config_flags import config_from_args, config_options
    from kosmos.data import DataConfig
    from kosmos.train import TrainConfig, train

    cfg = config_from_args(TrainConfig, args, data_options=config_options(DataConfig, args))
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    summary = train(cfg, log=lambda m: print(m, file=sys.stderr, flush=True))
    print(json.dumps(summary, default=str))
    return 0


def _add_predict(sub) -> None:
    from kosmos.predict import TASKS

    p = sub.add_parser("predict", help="generate answers for an evaluation task",
                       description="Generate with the official prompt and decoding settings of TASK.")
    p.add_argument("task", choices=TASKS)
    p.add_argument("--model", required=True,
                   help="training output dir (latest checkpoint), checkpoint dir, or save_pretrained dir")
    p.add_argument("--images", required=True, help="directory the annotations' file names are relative to")
    p.add_argument("--annotations", help="MDETR json (rec, flickr, reg) or COCO captions json (caption)")
    p.add_argument("--questions", help="VQAv2 questions json (vqa)")
    p.add_argument("--image-template", default="COCO_{data_subtype}_{image_id:012d}.jpg",
                   help="vqa image file name pattern")
    p.add_argument("--output", required=True, help="predictions file (JSON lines; json for caption/vqa)")
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--image-mode", default="square", choices=("square", "crop"),
                   help="how images are fitted (default square: the whole image stays visible)")
    p.add_argument("--limit", type=int, help="only the first N queries")
    p.add_argument("--device", default="auto")
    p.add_argument("--threads", type=int)
    p.set_defaults(_run=_run_predict)


def _run_predict(args) -> int:
    import torch

    from kosmos.predict import build_queries, generate, load_model, write_predictions
    from kosmos.score import read_json
    from kosmos.train import resolve_device

    if args.threads:
        torch.set_num_threads(args.threads)
    if args.task == "vqa" and not args.questions:
        print("kosmos predict vqa: --questions is required", file=sys.stderr)
        return 2
    if args.task != "vqa" and not args.annotations:
        print(f"kosmos predict {args.task}: --annotations is required", file=sys.stderr)
        return 2
    annotations = read_json(args.annotations) if args.annotations else None
    questions = read_json(args.questions) if args.questions else None
    queries = build_queries(args.task, args.images, annotations, questions, args.image_template)
    if args.limit:
        queries = queries[: args.limit]
    device = resolve_device(args.device)
    model, processor = load_model(args.model, device)
    started = time.perf_counter()

    def progress(done, total):
        if done == total or done % 200 < args.batch_size:
            print(f"{done}/{total} queries, {done / (time.perf_counter() - started):.1f}/s", file=sys.stderr)

    results = list(generate(model, processor, queries, args.batch_size, args.image_mode, device, progress))
    write_predictions(args.task, results, args.output)
    print(json.dumps({"task": args.task, "predictions": len(results), "output": args.output,
                      "wall_s": round(time.perf_counter() - started, 2)}))
    return 0


def _add_score(sub) -> None:
    p = sub.add_parser("score", help="metrics from saved predictions",
                       description="Score saved predictions against the benchmark's annotations; prints JSON.")
    p.add_argument("task", choices=("rec", "flickr", "reg", "caption", "vqa"))
    p.add_argument("--predictions", required=True)
    p.add_argument("--annotations", required=True)
    p.add_argument("--questions", help="VQAv2 questions json (vqa)")
    p.set_defaults(_run=_run_score)


def _run_score(args) -> int:
    from kosmos.metrics import JavaMissingError
    from kosmos.score import score

    try:
        result = score(args.task, args.predictions, args.annotations, args.questions)
    except (JavaMissingError, FileNotFoundError, ValueError) as error:
        print(f"kosmos score {args.task}: {error}", file=sys.stderr)
        return 2
    print(json.dumps({"task": args.task, **result}))
    return 0


def _add_refcoco(sub) -> None:
    p = sub.add_parser("synth-refcoco", help="synthetic truth -> MDETR RefCOCO json + images",
                       description="Convert `grit synth` truth into MDETR RefCOCO format for `kosmos score rec`.")
    p.add_argument("--synth", required=True, help="a `grit synth --output` directory (shards + truth/)")
    p.add_argument("--output", required=True)
    p.add_argument("--split", default="val")
    p.set_defaults(_run=lambda a: _print_json(__import__("kosmos.refcoco", fromlist=["x"]).write_refcoco(
        a.synth, a.output, a.split)))


def _print_json(obj) -> int:
    print(json.dumps(obj))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="kosmos", description="Train and evaluate Kosmos-2 on GRIT shards.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    _add_train(sub)
    _add_predict(sub)
    _add_score(sub)
    _add_refcoco(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    from grit_pipeline.cli import dispatch

    os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
    return dispatch(build_parser(), argv)


if __name__ == "__main__":
    sys.exit(main())
