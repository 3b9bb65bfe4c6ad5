"""`grit card DIR`: write a build's dataset card (``.huggingface.yaml`` + ``_README.md``)."""
from __future__ import annotations

import sys

HELP = "write a build's dataset card, so datasets.load_dataset(DIR) gives the pairs (docs/reading.md)"


def add_arguments(parser) -> None:
    from grit_pipeline.pipeline.card import DEFAULT_LICENSE

    parser.add_argument("output", help="a GRIT build folder (grit run --output)")
    parser.add_argument("--license", default=DEFAULT_LICENSE,
                        help=f"the card's licence id (default {DEFAULT_LICENSE}: the input dataset's terms apply)")
    parser.add_argument("--source-dataset", action="append", default=None, metavar="NAME",
                        help="a source dataset of the build, e.g. laion/relaion2B-en-research (repeatable)")


def run(args) -> int:
    from grit_pipeline.pipeline.card import write_card
    from grit_pipeline.pipeline.index import OutputIndex

    index = OutputIndex(args.output, progress=False)
    if not index.sizes:
        print(f"grit card: error: no such folder {args.output}", file=sys.stderr)
        return 2
    if index.previous_layout:
        print(f"grit card: error: {args.output} is a build of grit's previous layout; `grit convert "
              f"{args.output}` moves it to the current one and writes the card", file=sys.stderr)
        return 2
    try:
        names = write_card(args.output, license=args.license, source_datasets=args.source_dataset)
    except FileNotFoundError as error:
        print(f"grit card: error: {error}", file=sys.stderr)
        return 2
    for name in names:
        print(f"{args.output.rstrip('/')}/{name}")
    return 0
