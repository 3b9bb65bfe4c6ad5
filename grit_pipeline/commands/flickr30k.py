"""`grit flickr30k truth|shards`: Flickr30k Entities as truth lines, or as input shards with their truth."""
from __future__ import annotations

import json
import sys

HELP = "Flickr30k Entities (Sentences/ + Annotations/) -> truth lines (truth) or img2dataset input shards (shards)"


def add_arguments(parser) -> None:
    actions = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    truth = actions.add_parser("truth", help="write the truth lines of every sentence to one .jsonl file")
    shards = actions.add_parser("shards", help="write input shards in img2dataset layout (one sample per "
                                               "sentence) from an image folder, with truth/NNNNN.jsonl beside")
    for sub in (truth, shards):
        sub.add_argument("--entities", required=True, help="the Flickr30k Entities folder (Sentences/, Annotations/)")
        sub.add_argument("--split", default=None, help="only the images listed in SPLIT.txt (train, val, test)")
        sub.add_argument("--limit", type=int, default=None, help="only the first N images")
    truth.add_argument("--output", required=True, help="the .jsonl file to write")
    shards.add_argument("--images", required=True, help="the Flickr30k image folder (<image id>.jpg)")
    shards.add_argument("--output", required=True, help="the shard folder to write (NNNNN.tar, .parquet, truth/)")
    shards.add_argument("--shard-size", type=int, default=1000, help="samples (sentences) per shard (default 1000)")


def run(args) -> int:
    from grit_pipeline import flickr30k

    if args.limit is not None and args.limit < 1:
        print("grit flickr30k: --limit must be >= 1", file=sys.stderr)
        return 2
    try:
        if args.action == "truth":
            summary = flickr30k.write_truth(args.entities, args.output, split=args.split, limit=args.limit)
        else:
            summary = flickr30k.write_shards(args.entities, args.images, args.output, split=args.split,
                                             limit=args.limit, shard_size=args.shard_size)
    except (ValueError, FileNotFoundError) as error:
        print(f"grit flickr30k {args.action}: {error}", file=sys.stderr)
        return 2
    print(json.dumps(summary, indent=2))
    return 0
