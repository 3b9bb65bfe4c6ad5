"""``grit download``: fetch a LAION/COYO url list into webdataset shards (img2dataset, GRIT-safe settings)."""
from __future__ import annotations

import argparse
import json
import sys

HELP = "download a LAION/COYO url list (parquet/csv/tsv/jsonl) into webdataset shards that `grit run` reads"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from grit_pipeline.download import INPUT_FORMATS, SOURCES, DownloadConfig

    d = DownloadConfig()
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
    parser.add_argument("--image-size", type=int, default=d.image_size,
                        help=f"shorter side after keep_ratio resizing, downscale only (default {d.image_size})")
    parser.add_argument("--upscale", action="store_true", help="also upscale images smaller than --image-size")
    parser.add_argument("--processes", type=int, default=d.processes,
                        help="download processes (default 0: one per CPU core)")
    parser.add_argument("--threads", type=int, default=d.threads,
                        help=f"download threads per process (default {d.threads})")
    parser.add_argument("--timeout", type=float, default=d.timeout,
                        help=f"seconds per request (default {d.timeout:g})")
    parser.add_argument("--retries", type=int, default=d.retries,
                        help=f"extra attempts per failed url (default {d.retries})")
    parser.add_argument("--shard-size", type=int, default=d.shard_size,
                        help=f"urls per output shard (default {d.shard_size})")
    parser.add_argument("--min-image-size", type=int, default=d.min_image_size,
                        help="reject images whose shorter side is smaller (default 0: keep all)")
    parser.add_argument("--encode-quality", type=int, default=d.encode_quality,
                        help=f"JPEG quality of the stored images (default {d.encode_quality})")
    parser.add_argument("--user-agent-token", default=d.user_agent_token,
                        help="token added to the User-Agent (site owners can then opt out by name)")
    parser.add_argument("--overwrite", action="store_true",
                        help="delete what is in --output and start again (default: resume, skipping finished shards)")


def run(args: argparse.Namespace) -> int:
    from grit_pipeline.download import DownloadConfig, DownloadInputError, download

    config = DownloadConfig(
        image_size=args.image_size,
        resize_only_if_bigger=not args.upscale,
        encode_quality=args.encode_quality,
        processes=args.processes,
        threads=args.threads,
        timeout=args.timeout,
        retries=args.retries,
        shard_size=args.shard_size,
        min_image_size=args.min_image_size,
        user_agent_token=args.user_agent_token,
        overwrite=args.overwrite,
    )
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
