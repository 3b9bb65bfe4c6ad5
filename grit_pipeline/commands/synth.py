"""`grit synth`: write the synthetic grounded world in img2dataset's layout, with its truth beside it."""
from __future__ import annotations

import json
import sys

HELP = "write synthetic image-caption shards (img2dataset layout) + ground truth, for demos and tests"


def add_arguments(parser) -> None:
    parser.add_argument("--output", required=True, help="directory for NNNNN.tar/.parquet/_stats.json and truth/")
    parser.add_argument("--images", type=int, default=500, help="number of images (default 500)")
    parser.add_argument("--seed", type=int, default=0, help="world seed: same seed, same bytes (default 0)")
    parser.add_argument("--shard-size", type=int, default=1000, help="images per shard (default 1000)")
    parser.add_argument("--defect-rate", type=float, default=0.0,
                        help="share of samples given a real-download defect: failed download, truncated JPEG, "
                             "empty or abstract-only caption (no truth line; default 0)")
    parser.add_argument("--level", type=int, default=3, choices=(1, 2, 3),
                        help="curriculum world: 1 one object and a short caption naming it; 2 two objects, the "
                             "caption names one (by colour and shape); 3 the full world (default)")


def run(args) -> int:
    from grit_pipeline.synth.writer import _print_progress, write_synthetic_world

    if args.images < 0 or args.shard_size < 1 or not 0.0 <= args.defect_rate <= 1.0:
        print("grit synth: --images must be >= 0, --shard-size >= 1 and --defect-rate in [0, 1]", file=sys.stderr)
        return 2
    summary = write_synthetic_world(args.output, args.images, seed=args.seed, shard_size=args.shard_size,
                                    progress=_print_progress, defect_rate=args.defect_rate,
                                    level=args.level)
    print(json.dumps(summary, indent=2))
    return 0
