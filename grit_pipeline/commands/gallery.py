"""`grit gallery DIR`: a static HTML page of sampled images with their boxes, spans, scores and rejects (DIR: a
build, img2dataset shards, or the JSON lines `grit ground` writes)."""
from __future__ import annotations

import sys

HELP = "write a static HTML gallery (no server, no network) of sampled images with boxes, spans and rejects"


def add_arguments(parser) -> None:
    from grit_pipeline.views.gallery import (
        DEFAULT_PER_PAGE, DEFAULT_SAMPLE, DEFAULT_THUMB_SIZE, STATUS_CHOICES,
    )

    parser.add_argument("dir", help="a GRIT build (grit run output), img2dataset shards (e.g. GrIT-20M download), "
                                    "or a grit ground output file (JSON lines)")
    parser.add_argument("--sample", type=int, default=DEFAULT_SAMPLE,
                        help=f"how many samples to show, drawn uniformly at random (default {DEFAULT_SAMPLE})")
    parser.add_argument("--status", action="append", default=None, metavar="STATUS",
                        help="only samples with this status; repeat or comma-separate; 'rejected' = every "
                             f"non-kept status (choices: {', '.join(STATUS_CHOICES)}; default: all)")
    parser.add_argument("--min-score", type=float, default=None,
                        help="draw boxes scoring below this as dropped (dashed, hidden until toggled); "
                             "default: every stored box is drawn as kept")
    parser.add_argument("--seed", type=int, default=0, help="random seed of the sample (default 0)")
    parser.add_argument("--out", default=None, help="output HTML file (default DIR/_gallery.html; FILE_gallery.html beside a grit ground "
                             "output FILE)")
    parser.add_argument("--per-page", type=int, default=DEFAULT_PER_PAGE,
                        help=f"samples per page (default {DEFAULT_PER_PAGE})")
    parser.add_argument("--thumb-size", type=int, default=DEFAULT_THUMB_SIZE,
                        help=f"longer side in pixels of the embedded images (default {DEFAULT_THUMB_SIZE})")
    parser.add_argument("--title", default=None, help="page title")


def run(args) -> int:
    from grit_pipeline.views.dataset import DatasetError
    from grit_pipeline.views.gallery import write_gallery

    try:
        path = write_gallery(args.dir, args.out, sample=args.sample, statuses=args.status,
                             min_score=args.min_score, seed=args.seed, per_page=args.per_page,
                             thumb_size=args.thumb_size, title=args.title, progress=True)
    except (DatasetError, ValueError) as error:
        print(f"grit gallery: {error}", file=sys.stderr)
        return 2
    print(path)
    return 0
