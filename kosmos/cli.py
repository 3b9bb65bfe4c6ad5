"""The ``kosmos`` command line: train, predict, score (and convert synthetic truth to RefCOCO format)."""
from __future__ import annotations

import argparse
import json
import os
import sys
import time


def _add_train(sub) -> None:
    from kosmos.presets import PRESETS

    p = sub.add_parser("train", help="train Kosmos-2 on GRIT webdataset shards",
                       description="Train Kosmos-2 (from scratch with a preset, or from --init) on GRIT shards.")
    p.add_argument("--data", nargs="+", required=True,
                   help="shards: local directories or globs, {00000..00099} patterns, or shard URLs (http/s3/pipe:; remote shards are listed explicitly or with a brace pattern)")
    p.add_argument("--output", required=True, help="run directory (processor/, checkpoints/, train_log.jsonl)")
    p.add_argument("--preset", default="tiny", choices=sorted(PRESETS), help="model size (default tiny)")
    p.add_argument("--init", help="pretrained model + processor directory (from_pretrained) to fine-tune")
    p.add_argument("--tokenizer", help="processor directory to reuse instead of learning a tokenizer")
    p.add_argument("--tokenizer-samples", type=int, default=100_000, help="captions read to learn a tokenizer")
    p.add_argument("--steps", type=int, help="optimiser steps (preset default; paper 60000)")
    p.add_argument("--batch-size", type=int, help="samples per worker per micro-step (preset default)")
    p.add_argument("--grad-accum", type=int, default=1, help="micro-steps per optimiser step (default 1)")
    p.add_argument("--lr", type=float, help="peak learning rate (preset default; paper 2e-4)")
    p.add_argument("--warmup-steps", type=int, help="linear warm-up steps (preset default; paper 375)")
    p.add_argument("--min-lr-ratio", type=float, default=0.0, help="final lr / peak lr (default 0)")
    p.add_argument("--weight-decay", type=float, default=0.01)
    p.add_argument("--betas", type=float, nargs=2, default=(0.9, 0.98))
    p.add_argument("--grad-clip", type=float, default=1.0, help="max gradient norm (0: off; default 1.0)")
    p.add_argument("--log-every", type=int, default=10)
    p.add_argument("--checkpoint-every", type=int, default=500)
    p.add_argument("--keep-checkpoints", type=int, default=2)
    p.add_argument("--stop-at-step", type=int, help="leave (with a checkpoint) at this step; --resume continues")
    p.add_argument("--resume", nargs="?", const="latest",
                   help="continue from OUTPUT's latest checkpoint (or the checkpoint directory given)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--loader-workers", type=int, default=1, help="DataLoader processes per worker (default 1)")
    p.add_argument("--threads", type=int, help="torch CPU threads (default: torch's choice)")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N")
    p.add_argument("--precision", default="auto", choices=("auto", "bf16", "fp32"),
                   help="auto: bf16 autocast on GPU, fp32 on CPU")
    p.add_argument("--num-workers", type=int, default=1, help="Ray Train workers (>1 runs on Ray)")
    p.add_argument("--use-gpu", action="store_true", help="one GPU per Ray Train worker")
    p.add_argument("--ray-address", help="Ray cluster address (e.g. auto or ray://host:10001)")
    g = p.add_argument_group("data")
    g.add_argument("--grounding-prob", type=float, default=0.5,
                   help="share of samples trained with <grounding> and boxes; others as plain captions (0.5)")
    g.add_argument("--image-mode", default="crop", choices=("crop", "square"),
                   help="crop: resize + centre crop with boxes moved (default); square: resize to a square")
    g.add_argument("--min-box-area-kept", type=float, default=0.2, help="drop a cropped box keeping less (0.2)")
    g.add_argument("--min-score", type=float, default=0.65, help="box score threshold of the serializer (0.65)")
    g.add_argument("--phrase-mode", default="expression", choices=("expression", "phrase"),
                   help="link referring expressions (default) or noun chunks")
    g.add_argument("--max-length", type=int, help="text tokens after the image (preset default)")
    g.add_argument("--shuffle-buffer", type=int, default=1000, help="sample shuffle buffer per reader (1000)")
    p.set_defaults(_run=_run_train)


def _run_train(args) -> int:
    import torch

    from kosmos.train import TrainConfig, train

    if args.threads:
        torch.set_num_threads(args.threads)
    data_options = {"grounding_prob": args.grounding_prob, "image_mode": args.image_mode,
                    "min_box_area_kept": args.min_box_area_kept, "min_score": args.min_score,
                    "phrase_mode": args.phrase_mode, "shuffle_buffer": args.shuffle_buffer}
    if args.max_length:
        data_options["max_length"] = args.max_length
    cfg = TrainConfig(
        data=args.data, output=args.output, preset=args.preset, init=args.init, tokenizer=args.tokenizer,
        tokenizer_samples=args.tokenizer_samples, steps=args.steps, batch_size=args.batch_size,
        grad_accum=args.grad_accum, lr=args.lr, warmup_steps=args.warmup_steps, min_lr_ratio=args.min_lr_ratio,
        weight_decay=args.weight_decay, beta1=args.betas[0], beta2=args.betas[1], grad_clip=args.grad_clip,
        log_every=args.log_every, checkpoint_every=args.checkpoint_every, keep_checkpoints=args.keep_checkpoints,
        stop_at_step=args.stop_at_step, resume=args.resume, seed=args.seed, loader_workers=args.loader_workers,
        device=args.device, precision=args.precision, num_workers=args.num_workers, use_gpu=args.use_gpu,
        ray_address=args.ray_address, threads=args.threads, data_options=data_options,
    )
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
