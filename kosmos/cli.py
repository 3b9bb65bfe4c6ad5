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


def _add_predict(sub) -> None:
    from kosmos.predict import TASKS

    p = sub.add_parser("predict", help="generate answers for an evaluation task",
                       description="Generate with the official prompt and decoding settings of TASK.")
    p.add_argument("task", choices=TASKS)
    p.add_argument("--model", required=True,
                   help="training output dir (latest checkpoint), checkpoint dir, or save_pretrained dir")
    p.add_argument("--images", required=True, help="directory the annotations' file names are relative to")
    p.add_argument("--annotations", help="MDETR json (rec, flickr, reg), a Flickr30k Entities folder (flickr) "
                                          "or COCO captions json (caption)")
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
    from kosmos.evalfiles import load_json
    from kosmos.train import resolve_device

    if args.threads:
        torch.set_num_threads(args.threads)
    if args.task == "vqa" and not args.questions:
        print("kosmos predict vqa: --questions is required", file=sys.stderr)
        return 2
    if args.task != "vqa" and not args.annotations:
        print(f"kosmos predict {args.task}: --annotations is required", file=sys.stderr)
        return 2
    if args.task == "flickr" and args.annotations and os.path.isdir(args.annotations):
        annotations = args.annotations  # a Flickr30k Entities folder (Sentences/ + Annotations/)
    else:
        annotations = load_json(args.annotations, "annotations") if args.annotations else None
    questions = load_json(args.questions, "questions") if args.questions else None
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
    p.add_argument("--predictions", required=True,
                   help="kosmos predict output, or (rec, flickr) the released evaluation's fairseq H- lines")
    p.add_argument("--annotations", required=True,
                   help="MDETR json (rec, reg, flickr), a Flickr30k Entities folder (flickr), COCO captions "
                        "json (caption), VQA annotations json (vqa)")
    p.add_argument("--questions", help="VQAv2 questions json (vqa)")
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
    p.set_defaults(_run=_run_score)


def _run_score(args) -> int:
    from kosmos.metrics import JavaMissingError
    from kosmos.score import score

    try:
        result = score(args.task, args.predictions, args.annotations, args.questions, match=args.match,
                       iou_dtype=args.iou_dtype, flickr_entities=args.flickr_entities, split=args.split,
                       gt_boxes=args.gt_boxes, vqa_eval=args.vqa_eval, keep_non_ascii=args.keep_non_ascii)
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

    from kosmos.predict import load_model
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
    _add_refcoco(sub)
    _add_mixture_tools(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    from grit_pipeline.cli import dispatch

    os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
    return dispatch(build_parser(), argv)


if __name__ == "__main__":
    sys.exit(main())
