"""`grit report DIR`: HTML + Markdown report with Table-1-style totals and distribution plots."""
from __future__ import annotations

import sys

HELP = "write an HTML + Markdown report (totals vs the paper's Table 1, score/box/span/length plots, drops)"


def add_arguments(parser) -> None:
    parser.add_argument("dir", help="a GRIT build (grit run output) or img2dataset shards (e.g. GrIT-20M download)")
    parser.add_argument("--truth", default=None,
                        help="truth directory (synthetic world DIR/truth or hand-labelled, same format): "
                             "adds precision/recall of the boxes")
    parser.add_argument("--out", default=None, help="output directory (default DIR/_report)")


def run(args) -> int:
    from grit_pipeline.views.dataset import DatasetError
    from grit_pipeline.views.report import write_report

    try:
        path = write_report(args.dir, args.out, truth=args.truth, progress=True)
    except (DatasetError, ValueError, RuntimeError) as error:
        print(f"grit report: {error}", file=sys.stderr)
        return 2
    print(path)
    print(path.with_name("report.md"))
    return 0
