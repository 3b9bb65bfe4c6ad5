"""`grit convert DIR`: move a build of grit's previous layout into the current one, then write its card."""
from __future__ import annotations

import sys

HELP = "move a build of grit's previous layout (NNNNN.done beside the shards) into the current one"


def add_arguments(parser) -> None:
    parser.add_argument("output", help="a GRIT build folder, or a stage folder (WORK/<stage>)")


def run(args) -> int:
    from grit_pipeline.pipeline import layout
    from grit_pipeline.pipeline.card import write_card
    from grit_pipeline.pipeline.guard import output_lock
    from grit_pipeline.pipeline.storage import Folder

    folder = Folder(args.output)
    if not folder.exists():
        print(f"grit convert: error: no such folder {args.output}", file=sys.stderr)
        return 2
    with output_lock(args.output, "convert"):
        moved = layout.convert_previous_layout(args.output, progress=lambda line: print(line, file=sys.stderr),
                                               announce=False)
    print(f"{args.output}: {moved:,} shard(s) moved to the current layout" if moved
          else f"{args.output}: already in the current layout")
    names = folder.names()
    if "_run.json" in names and any(n.endswith(".parquet") for n in names):  # (a build, not a stage folder)
        for name in write_card(args.output):
            print(f"{args.output.rstrip('/')}/{name}")
    return 0
