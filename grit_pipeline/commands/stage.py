"""`grit stage NAME`: run one pipeline stage alone, reading the previous stage's per-shard parquet."""
from __future__ import annotations

import sys

HELP = "run one stage (noun-chunks | ground | expand | write) of the stage-by-stage pipeline"
STAGE_NAMES = ("noun-chunks", "ground", "expand", "write")


def add_arguments(parser) -> None:
    from grit_pipeline.pipeline.cli_args import add_pipeline_arguments

    parser.add_argument("name", choices=STAGE_NAMES, help="the stage to run")
    add_pipeline_arguments(parser, input_required=False)


def run(args) -> int:
    from grit_pipeline.pipeline import run_stage
    from grit_pipeline.pipeline.cli_args import config_from_args
    from grit_pipeline.pipeline.preflight import WorkerError

    try:
        config = config_from_args(args)
        if args.name == "noun-chunks" and not config.input:
            raise ValueError("stage noun-chunks reads the input shards: --input PATH_OR_URL is required")
        summary = run_stage(args.name, config)
    except (ValueError, FileNotFoundError) as error:
        print(f"grit stage {args.name}: error: {error}", file=sys.stderr)
        return 2
    except WorkerError as error:
        print(f"grit stage {args.name}: error: {error}", file=sys.stderr)
        return 1
    print(f"stage {args.name}: {len(summary.shards_written)} shards written, "
          f"{len(summary.shards_skipped)} already done")
    if summary.shards_not_ready:
        print(f"stage {args.name}: {len(summary.shards_not_ready)} shards have unfinished input from the previous "
              f"stage ({', '.join(summary.shards_not_ready[:5])}...); rerun the previous stage", file=sys.stderr)
        return 1
    return 0
