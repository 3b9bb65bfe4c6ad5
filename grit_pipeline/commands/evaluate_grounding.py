"""`grit evaluate-grounding`: precision/recall of a GRIT build against labelled truth (JSON on stdout)."""
from __future__ import annotations

import json
import sys

HELP = "phrase-level precision/recall at IoU 0.5 of a GRIT build against truth (synthetic or hand-labelled)"


def add_arguments(parser) -> None:
    parser.add_argument("--output", required=True, help="the GRIT build directory (NNNNN.parquet, _rejects/NNNNN.parquet)")
    parser.add_argument("--truth", required=True,
                        help="truth directory of NNNNN.jsonl files (or one .jsonl file), or a Flickr30k Entities "
                             "folder (Sentences/ + Annotations/)")
    parser.add_argument("--split", default=None,
                        help="Flickr30k Entities truth: only the images listed in SPLIT.txt (train, val, test)")
    parser.add_argument("--iou", type=float, default=0.5, help="box IoU for a match (default 0.5)")
    parser.add_argument("--ref-char-iou", type=float, default=0.5,
                        help="referring expressions: minimum character IoU with the truth expression (default 0.5)")
    parser.add_argument("--min-score", type=float, default=None,
                        help="only count boxes scoring above this (default: all boxes the build kept)")


def run(args) -> int:
    from grit_pipeline.evaluate import evaluate_grounding

    try:
        result = evaluate_grounding(args.output, args.truth, iou=args.iou, ref_char_iou=args.ref_char_iou,
                                    min_score=args.min_score, split=args.split)
    except (FileNotFoundError, ValueError) as error:
        print(f"grit evaluate-grounding: {error}", file=sys.stderr)
        return 2
    print(json.dumps(result, indent=2))
    return 0
