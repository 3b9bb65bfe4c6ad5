"""`grit run`: the fused pipeline, input shards -> GRIT build in one streaming pass."""
from __future__ import annotations

import sys

HELP = "build GRIT from img2dataset shards (fused pipeline; resumable)"


def add_arguments(parser) -> None:
    from grit_pipeline.pipeline.cli_args import add_pipeline_arguments

    add_pipeline_arguments(parser, input_required=True)


def run(args) -> int:
    from grit_pipeline.pipeline import run_pipeline
    from grit_pipeline.pipeline.cli_args import config_from_args
    from grit_pipeline.pipeline.preflight import WorkerError

    try:
        config = config_from_args(args)
        summary = run_pipeline(config)
    except (ValueError, FileNotFoundError) as error:  # refused before starting: nothing written
        print(f"grit run: error: {error}", file=sys.stderr)
        return 2
    except WorkerError as error:  # one line with the root cause; the traceback is in the log it names
        print(f"grit run: error: {error}", file=sys.stderr)
        return 1
    print(f"{len(summary.shards_written)} shards written, {len(summary.shards_skipped)} already done; "
          f"output in {summary.output} (see `grit stats {summary.output}`)")
    return 0
