"""`grit instruct`: a GRIT build in, grounded instruction data out (docs/instruct.md)."""
from __future__ import annotations

import sys

HELP = "grounded instruction data (expression -> box, Table 9 box -> expression) from a GRIT build; resumable"


def add_arguments(parser) -> None:
    from grit_pipeline import config_flags
    from grit_pipeline.instruct_build import FLAGS, InstructConfig

    config_flags.add_config_arguments(parser, InstructConfig, only=FLAGS, required=("input", "output"))


def run(args) -> int:
    from grit_pipeline import config_flags
    from grit_pipeline.instruct_build import FLAGS, InstructConfig, run_instruct
    from grit_pipeline.pipeline.preflight import WorkerError

    try:
        config = config_flags.config_from_args(InstructConfig, args, only=FLAGS)
        config = config.replace(ray_address=config.ray_address or None)
        summary = run_instruct(config)
    except (ValueError, FileNotFoundError) as error:  # refused before starting: nothing written
        print(f"grit instruct: error: {error}", file=sys.stderr)
        return 2
    except WorkerError as error:
        print(f"grit instruct: error: {error}", file=sys.stderr)
        return 1
    print(f"{len(summary.shards_written)} shards written, {len(summary.shards_skipped)} already done; "
          f"records {dict(sorted(summary.counts.items()))}; output in {summary.output}")
    return 0
