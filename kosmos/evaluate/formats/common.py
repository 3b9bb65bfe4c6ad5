"""Reading benchmark files in general: JSON (one-line errors), the records of a JSON lines / JSON / CSV / parquet
file, checked fields and numbers. Every problem is a ``ValueError`` with one line that names the file and the line
or entry, so that ``kosmos score`` / ``kosmos eval`` can print it and exit 2 instead of a traceback."""
from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any


def load_json(path, what: str = "file") -> Any:
    """``json.load`` with one-line errors (missing file, bad JSON, nesting too deep, oversize integers)."""
    try:
        with open(path, encoding="utf-8") as handle:
            return json.load(handle)
    except FileNotFoundError:
        raise ValueError(f"{what} {path}: no such file") from None
    except IsADirectoryError:
        raise ValueError(f"{what} {path}: is a directory, expected a json file") from None
    except (ValueError, UnicodeDecodeError) as error:
        raise ValueError(f"{what} {path}: not valid JSON ({error})") from None
    except RecursionError:
        raise ValueError(f"{what} {path}: not valid JSON (nested too deeply)") from None


def number(value, where: str) -> float:
    """A finite number, from a number or a numeric string (MDETR's Flickr json stores sizes as strings)."""
    if isinstance(value, bool):
        raise ValueError(f"{where}: expected a number, got {value!r}")
    try:
        out = float(value)
    except (TypeError, ValueError, OverflowError):
        raise ValueError(f"{where}: expected a number, got {value!r:.40}") from None
    if not math.isfinite(out):
        raise ValueError(f"{where}: expected a finite number, got {value!r:.40}")
    return out


def read_records(path, what: str = "data") -> list[tuple[str, dict]]:
    """``(where, record)`` of a benchmark file (``where`` names the file and the line, row or entry): JSON lines (``.jsonl``), a JSON list (``.json``),
    CSV with a header row (``.csv``, ``.tsv``) or parquet. Every problem is one line naming the file and line."""
    import csv

    path = Path(path)
    if not path.exists():
        raise ValueError(f"{what} {path}: no such file")
    if path.is_dir():
        raise ValueError(f"{what} {path}: is a directory, expected a file")
    suffix = path.suffix.lower()
    if suffix == ".parquet":
        import pyarrow.parquet as pq

        try:
            rows = pq.read_table(path).to_pylist()
        except Exception as error:  # noqa: BLE001 - pyarrow raises several kinds for a bad file
            raise ValueError(f"{what} {path}: not a parquet file ({' '.join(str(error).split())[:200]})") from None
        return [(f"{what} {path}: row {n}", row) for n, row in enumerate(rows, 1)]
    try:
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as error:
        raise ValueError(f"{what} {path}: not UTF-8 text ({error})") from None
    if suffix in (".csv", ".tsv"):
        reader = csv.DictReader(text.splitlines(), delimiter="\t" if suffix == ".tsv" else ",")
        return [(f"{what} {path}:{number}", dict(row)) for number, row in enumerate(reader, 2)]
    if suffix == ".json":
        value = load_json(path, what)
        if isinstance(value, dict) and isinstance(value.get("data"), list):
            value = value["data"]
        if not isinstance(value, list):
            raise ValueError(f"{what} {path}: expected a JSON list of objects")
        for index, row in enumerate(value):
            if not isinstance(row, dict):
                raise ValueError(f"{what} {path}: entry {index}: expected an object, got {type(row).__name__}")
        return [(f"{what} {path}: entry {index}", row) for index, row in enumerate(value)]
    out = []
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except (ValueError, RecursionError) as error:
            raise ValueError(f"{what} {path}:{number}: not JSON ({str(error)[:120]})") from None
        if not isinstance(row, dict):
            raise ValueError(f"{what} {path}:{number}: expected a JSON object, got {type(row).__name__}")
        out.append((f"{what} {path}:{number}", row))
    return out


def record_field(record: dict, name: str, where: str, kind=str):
    """``record[name]`` checked to be of ``kind`` (a type or tuple of types), else a one-line error at ``where``."""
    if name not in record:
        raise ValueError(f"{where}: missing field {name!r} (has {sorted(record)[:8]})")
    value = record[name]
    if not isinstance(value, kind) or isinstance(value, bool) and bool not in (kind if isinstance(kind, tuple) else (kind,)):
        names = "/".join(k.__name__ for k in (kind if isinstance(kind, tuple) else (kind,)))
        raise ValueError(f"{where}: field {name!r} must be {names}, got {value!r:.60}")
    return value
