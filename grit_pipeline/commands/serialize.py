"""`grit serialize`: GRIT records -> Kosmos-2 grounded text."""
from __future__ import annotations

import argparse
import json
import sys

from grit_pipeline.location import CELL_RULES, DEFAULT_CELL_RULE

HELP = "print the grounded text of GRIT records (JSON lines on stdin, or --input parquet)"


def add_arguments(parser) -> None:
    parser.add_argument("--input", default=None, help="a GRIT parquet file (default: JSON lines on stdin)")
    parser.add_argument("--format", dest="fmt", choices=("hf", "paper"), default="hf",
                        help="token spelling: hf (<phrase>/<object>/<patch_index_XXXX>) or paper (<p>/<box>/<loc_k>)")
    parser.add_argument("--min-score", type=float, default=0.65, help="keep boxes with score > this (default 0.65)")
    parser.add_argument("--phrase-mode", choices=("expression", "phrase"), default="expression",
                        help="link referring expressions (ref_exps, default) or noun chunks")
    parser.add_argument("--grid", type=positive_int, default=32, help="location grid size P (P x P tokens; default 32)")
    parser.add_argument("--cell-rule", choices=CELL_RULES, default=DEFAULT_CELL_RULE,
                        help="lower-right cell of a box: official (the released Kosmos-2 training loader, default) "
                             "or transformers (coordinate_to_patch_index); they differ when x2*P is whole")
    parser.add_argument("--jsonl", action="store_true",
                        help='print {"key": ..., "grounded_text": ...} lines (exact text, newlines included)')


def positive_int(text: str) -> int:
    """argparse type: an integer >= 1."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def _read_records(path: str | None):
    """Yield (label, raw record or exception) pairs; a bad line never stops the stream."""
    if path:
        import pyarrow.parquet as pq

        try:
            table = pq.read_table(path)
        except (OSError, ValueError) as error:  # pyarrow raises ArrowInvalid (a ValueError) or OSError
            yield path, ValueError(f"cannot read parquet: {error}")
            return
        for i, row in enumerate(table.to_pylist()):
            yield row.get("key", f"row {i}"), row
        return
    for number, line in enumerate(sys.stdin, start=1):
        if not line.strip():
            continue
        try:
            yield f"line {number}", json.loads(line)
        except ValueError as error:  # JSONDecodeError, or an integer over Python's 4300-digit limit
            yield f"line {number}", ValueError(f"not valid JSON: {error}")
        except RecursionError:
            yield f"line {number}", ValueError("not valid JSON: nested too deeply")


def run(args) -> int:
    from grit_pipeline.record import GritRecord
    from grit_pipeline.serialize import grounded_text

    failed = total = 0
    for label, raw in _read_records(args.input):
        total += 1
        try:
            if isinstance(raw, Exception):
                raise raw
            if not isinstance(raw, dict):
                raise ValueError(f"expected a JSON object, got {type(raw).__name__}")
            record = GritRecord.from_dict(raw)
            text = grounded_text(record, fmt=args.fmt, min_score=args.min_score,
                                 phrase_mode=args.phrase_mode, grid=args.grid, cell_rule=args.cell_rule)
        except (ValueError, TypeError, OverflowError, RecursionError) as error:
            failed += 1
            print(f"grit serialize: {label}: {error}", file=sys.stderr)
            continue
        if args.jsonl:
            print(json.dumps({"key": record.key, "grounded_text": text}, ensure_ascii=False))
        else:
            print(text.replace("\r", " ").replace("\n", " "))
    if failed:
        print(f"grit serialize: {failed} of {total} records failed", file=sys.stderr)
    return 1 if failed else 0
