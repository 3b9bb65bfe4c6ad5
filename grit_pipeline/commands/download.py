"""``grit download``: fetch a LAION/COYO url list into webdataset shards (img2dataset, GRIT-safe settings)."""
from __future__ import annotations

import argparse
import json
import sys

HELP = "download a LAION/COYO url list (parquet/csv/tsv/jsonl) into webdataset shards that `grit run` reads"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from grit_pipeline.config_flags import add_config_arguments
    from grit_pipeline.download import INPUT_FORMATS, SOURCES, DownloadConfig

    parser.add_argument("--input", required=True,
                        help="url list: a parquet/csv/tsv/jsonl file or a folder of them (local or s3://, gs://)")
    parser.add_argument("--output", required=True, help="folder for NNNNN.tar/.parquet/_stats.json shards")
    parser.add_argument("--source", choices=sorted(SOURCES), default="laion",
                        help="column preset: laion (URL, TEXT, SAMPLE_ID|hash, similarity), "
                             "coyo (url, text, id, clip_similarity_*), custom (url, caption, id); default laion")
    parser.add_argument("--url-col", help="url column (overrides the preset)")
    parser.add_argument("--caption-col", help="caption column (overrides the preset)")
    parser.add_argument("--id-col", help="integer id column stored as `id` (overrides the preset; 'none' for no id)")
    parser.add_argument("--keep-cols", default="", help="comma-separated extra source columns to keep")
    parser.add_argument("--input-format", choices=("auto",) + INPUT_FORMATS, default="auto",
                        help="url list format; auto: from the file extension")
    add_config_arguments(parser, DownloadConfig)


def run(args: argparse.Namespace) -> int:
    from grit_pipeline.config_flags import config_from_args
    from grit_pipeline.download import DownloadConfig, DownloadInputError, download

    config = config_from_args(DownloadConfig, args)
    keep_cols = [c.strip() for c in args.keep_cols.split(",") if c.strip()]
    try:
        summary = download(args.input, args.output, source=args.source, url_col=args.url_col,
                           caption_col=args.caption_col, id_col=args.id_col, keep_cols=keep_cols,
                           input_format=args.input_format, config=config)
    except DownloadInputError as error:
        print(f"grit download: {error}", file=sys.stderr)
        return 2
    print(json.dumps(summary.to_dict(), indent=2))
    if not summary.complete:
        print(f"grit download: {len(summary.failed_shards)} shard(s) did not finish "
              f"({summary.failed_shards[:10]}); run the same command again to retry them", file=sys.stderr)
        return 1
    print(f"grit download: {summary.successes}/{summary.count} images in {summary.shards_done} shard(s) at "
          f"{summary.output}; failed urls are rows with status != success in the shard parquet files",
          file=sys.stderr)
    return 0
