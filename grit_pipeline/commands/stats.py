"""`grit stats DIR`: a GRIT build's totals in the paper's Table 1 terms, and why samples were dropped."""
from __future__ import annotations

import json
import sys

HELP = "totals of a GRIT build (images, boxes, text spans, expression length) and drop reasons"


def add_arguments(parser) -> None:
    parser.add_argument("output", help="a GRIT build folder (grit run --output)")
    parser.add_argument("--json", action="store_true", help="print the totals as JSON")
    parser.add_argument("--top", type=int, default=10, help="how many drop reasons to list")


def run(args) -> int:
    from grit_pipeline.pipeline import collect_totals, drop_reasons, format_totals
    from grit_pipeline.pipeline.stats import build_warnings
    from grit_pipeline.pipeline.storage import Folder

    if not Folder(args.output).exists():
        print(f"grit stats: error: no such folder {args.output}", file=sys.stderr)
        return 2
    from grit_pipeline.pipeline.index import OutputIndex

    index = OutputIndex(args.output)  # one listing; markers, stats, keys and rejects each read once, concurrently
    if index.previous_layout:
        print(f"grit stats: error: {args.output} is a build of grit's previous layout (NNNNN.done beside the "
              f"shards); `grit convert {args.output}` moves it to the current one (grit run does it too)",
              file=sys.stderr)
        return 2
    totals = collect_totals(args.output, index)
    totals["warnings"] = build_warnings(args.output, totals, index)
    if totals["shards"] == 0 and not totals["unreadable_stats"]:
        print(f"grit stats: error: no finished shard in {args.output} (no _done/NNNNN.done)", file=sys.stderr)
        return 2
    reasons = drop_reasons(args.output, top=args.top, index=index)
    if args.json:
        totals["drop_reasons"] = [{"status": s, "reason": r, "count": n} for s, r, n in reasons]
        print(json.dumps(totals, indent=1, sort_keys=True))
    else:
        print(format_totals(totals, reasons))
    return 0
