"""`grit calibrate`: choose --box-threshold (and --nms-iou) for a detector from one grounding pass on labelled data."""
from __future__ import annotations

import sys

HELP = ("ground a labelled sample once with NMS off and no threshold, then sweep --box-threshold / --nms-iou "
        "offline: precision, recall, boxes per image, a P/R plot and a recommended threshold")
# PipelineConfig fields that are grit calibrate flags too (the detector and what feeds it)
SHARED_SETTINGS = ("detector", "model", "detector_options", "dtype", "device", "spacy_model", "abstract_nouns",
                   "max_pixels", "ground_batch_size", "text_batch_size")


def _threshold_list(text: str) -> list[float]:
    """``0.05,0.1,0.65`` or ``START:STOP:STEP`` (STOP included)."""
    text = text.strip()
    if ":" in text:
        start, stop, step = (float(v) for v in text.split(":"))
        if step <= 0:
            raise ValueError("the step must be positive")
        count = int(round((stop - start) / step))
        return [round(start + i * step, 6) for i in range(count + 1)]
    return [float(v) for v in text.split(",") if v.strip()]


def add_arguments(parser) -> None:
    from grit_pipeline.config_flags import add_config_arguments
    from grit_pipeline.pipeline.config import PipelineConfig

    parser.add_argument("--input", default=None, help="labelled input shards in img2dataset layout (e.g. grit synth "
                                                     "or grit flickr30k shards output)")
    parser.add_argument("--truth", required=True, help="truth lines (DIR of *.jsonl or one file) or a Flickr30k "
                                                      "Entities folder")
    parser.add_argument("--split", default=None, help="Flickr30k Entities truth: only the images of SPLIT.txt")
    parser.add_argument("--output", required=True, help="calibration folder: scores.parquet, calibration.json, "
                                                       "pr_curve.png, report.html, report.md")
    parser.add_argument("--scores-from", default=None, metavar="DIR",
                        help="reuse the grounding pass saved in DIR (a previous --output): no detector run")
    parser.add_argument("--limit", type=int, default=None, help="score at most N labelled samples")
    parser.add_argument("--thresholds", default=None, metavar="LIST",
                        help="thresholds to sweep: 0.3,0.5,0.65 or START:STOP:STEP (default 0:0.99:0.01)")
    parser.add_argument("--nms-iou", type=float, nargs="+", default=[0.6], metavar="IOU",
                        help="NMS IoUs to sweep (default 0.6, the pipeline's)")
    parser.add_argument("--level", choices=("noun_chunks", "ref_exps"), default="noun_chunks",
                        help="the level the recommendation optimises (default noun_chunks, what the detector sees)")
    target = parser.add_mutually_exclusive_group()
    target.add_argument("--target-precision", type=float, default=None,
                        help="recommend the threshold with the highest recall at this precision or more")
    target.add_argument("--reference-boxes-per-image", type=float, default=None,
                        help="recommend the threshold whose boxes per grounded image are closest to this "
                             "(GrIT-20M, paper Table 1: 1.516)")
    target.add_argument("--reference", default=None, metavar="DIR",
                        help="like --reference-boxes-per-image, measured on a reference build or GrIT-20M parquet")
    parser.add_argument("--iou", type=float, default=0.5, help="box IoU for a match (default 0.5)")
    parser.add_argument("--ref-char-iou", type=float, default=0.5,
                        help="expressions: minimum character IoU with the truth expression (default 0.5)")
    add_config_arguments(parser, PipelineConfig, only=SHARED_SETTINGS)


def run(args) -> int:
    from pathlib import Path

    from grit_pipeline import calibrate
    from grit_pipeline.config_flags import config_from_args
    from grit_pipeline.evaluate import load_truth
    from grit_pipeline.pipeline.config import PipelineConfig

    try:
        if args.input is None and args.scores_from is None:
            raise ValueError("give --input (labelled shards to ground) or --scores-from (a saved grounding pass)")
        if args.limit is not None and args.limit < 1:
            raise ValueError("--limit must be >= 1")
        if args.target_precision is not None and not 0.0 < args.target_precision <= 1.0:
            raise ValueError("--target-precision must be in (0, 1]")
        thresholds = _threshold_list(args.thresholds) if args.thresholds else list(calibrate.DEFAULT_THRESHOLDS)
        reference = args.reference_boxes_per_image
        if args.reference:
            reference = calibrate.reference_boxes_per_image(args.reference)
        truth = load_truth(args.truth, args.split)
        config = config_from_args(PipelineConfig, args, only=SHARED_SETTINGS, input=args.input or "",
                                  engine="local", progress=False)
        problems = config.number_problems()
        if problems:
            raise ValueError(problems[0])
    except (ValueError, FileNotFoundError) as error:
        print(f"grit calibrate: {error}", file=sys.stderr)
        return 2
    out = Path(args.output)
    if args.scores_from:
        try:
            rows = calibrate.load_scores(args.scores_from)
        except (FileNotFoundError, OSError, ValueError) as error:
            print(f"grit calibrate: {error}", file=sys.stderr)
            return 2
    else:
        print(f"[calibrate] one grounding pass: detector {config.detector}"
              + (f" (model {config.model})" if config.model else "") + ", NMS off, no threshold", file=sys.stderr)
        try:
            rows = calibrate.score_samples(config, keys=set(truth), limit=args.limit, progress=True)
        except FileNotFoundError as error:
            print(f"grit calibrate: {error}", file=sys.stderr)
            return 2
        calibrate.save_scores(rows, out / calibrate.SCORES_FILE)
    if not rows:
        print("grit calibrate: no input sample has a truth line (are --input and --truth the same data?)", file=sys.stderr)
        return 2
    try:
        result = calibrate.sweep(rows, truth, thresholds, args.nms_iou, iou=args.iou, ref_char_iou=args.ref_char_iou,
                                 level=args.level, target_precision=args.target_precision,
                                 reference_boxes_per_image=reference)
    except ValueError as error:
        print(f"grit calibrate: {error}", file=sys.stderr)
        return 2
    result.update(input=args.input, truth=args.truth, scores_from=args.scores_from, detector=config.detector,
                  model=config.model, detector_options=config.detector_options)
    calibrate.write_result(result, out)
    calibrate.plot_curves(result, out / calibrate.PLOT_FILE)
    from grit_pipeline.views.report import write_calibration_report

    report = write_calibration_report(result, out)
    print(calibrate_summary(result))
    print(f"report: {report}")
    return 0


def calibrate_summary(result: dict) -> str:
    """A few lines: P/R every 0.05 at the first NMS IoU, and the recommendation."""
    lines = [f"{'nms':>5} {'thr':>5}  {'P chunks':>8} {'R chunks':>8}  {'P expr':>8} {'R expr':>8}  {'boxes/img':>9}"]
    for row in result["table"]:
        if row["nms_iou"] != result["nms_ious"][0] or round(row["threshold"] * 100) % 5:
            continue
        fmt = lambda v: "n/a" if v is None else f"{v:.4f}"  # noqa: E731
        lines.append(f"{row['nms_iou']:>5g} {row['threshold']:>5.2f}  {fmt(row['noun_chunks']['precision']):>8} "
                     f"{fmt(row['noun_chunks']['recall']):>8}  {fmt(row['ref_exps']['precision']):>8} "
                     f"{fmt(row['ref_exps']['recall']):>8}  {fmt(row['boxes_per_image']):>9}")
    rec = result.get("recommendation")
    if rec is None:
        lines.append("no recommendation asked (--target-precision or --reference-boxes-per-image)")
    elif rec.get("threshold") is None:
        lines.append(f"recommendation: {rec['note']}")
    else:
        lines.append(f"recommendation ({rec['by']} {rec['target']:g}, {rec['level']}): --box-threshold "
                     f"{rec['threshold']:g} --nms-iou {rec['nms_iou']:g}: precision {rec['precision']}, recall "
                     f"{rec['recall']}, {rec['boxes_per_image']} boxes per grounded image")
    return "\n".join(lines)
