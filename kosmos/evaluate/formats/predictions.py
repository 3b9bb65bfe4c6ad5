"""Prediction files: our JSON lines (``kosmos predict``: ``{"id", "text", "frame"}`` for generation, ``{"id",
"loglikelihoods"}`` for ranking), the fairseq ``H-`` lines of the released Kosmos-2 evaluation, and the official
results lists (``[{"image_id", "caption"}]``, ``[{"question_id", "answer"}]``)."""
from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from typing import Any

from kosmos.evaluate.formats.common import load_json, read_records, record_field


@dataclass
class Predictions:
    """Prediction texts keyed by id. ``positional``: ids are 0-based positions in the benchmark's query order
    (fairseq ``H-`` lines), else the ids the annotation files give (our JSON lines)."""

    by_id: dict[Any, dict] = field(default_factory=dict)
    positional: bool = False
    lines: dict[Any, int] = field(default_factory=dict)  # id -> line number, for error messages

    def get(self, key, position: int):
        if self.positional:
            return self.by_id.get(position)
        for candidate in _id_variants(key):
            if candidate in self.by_id:
                return self.by_id[candidate]
        return None

    def unknown(self, known_keys, count: int) -> list[tuple[Any, int]]:
        """(id, line) of predictions that match no query."""
        if self.positional:
            return [(i, self.lines[i]) for i in self.by_id if not 0 <= i < count]
        known = {v for key in known_keys for v in _id_variants(key)}
        return [(i, self.lines[i]) for i in self.by_id if i not in known]


def _id_variants(key) -> list:
    # json round trips turn ids into strings or back: "12" and 12 name the same entry
    variants = [key, str(key)]
    if isinstance(key, str) and _is_small_number(key):
        variants.append(int(key))
    return variants


def _is_small_number(text: str) -> bool:
    return text.isascii() and text.isdigit() and len(text) <= 18


def read_predictions(path) -> Predictions:
    """Read a predictions file: JSON lines ``{"id", "text", optional "frame"}`` (``kosmos predict``) or the
    fairseq output of the released evaluation (``H-<n>\\t<score>\\t<text>`` lines; other lines ignored).

    A malformed line, a wrong type or a repeated id raises ValueError naming the line."""
    try:
        with open(path, encoding="utf-8") as handle:
            lines = handle.read().splitlines()
    except FileNotFoundError:
        raise ValueError(f"predictions {path}: no such file") from None
    except (UnicodeDecodeError, IsADirectoryError) as error:
        raise ValueError(f"predictions {path}: cannot read ({error})") from None
    if any(_is_hypothesis(line) is not None for line in lines):
        return _read_fairseq(path, lines)
    if not any(line.strip() for line in lines):
        raise ValueError(f"predictions {path}: empty (expected JSON lines or fairseq 'H-<n>' hypothesis lines)")
    out = Predictions()
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        where = f"predictions {path}:{number}"
        try:
            row = json.loads(line)
        except ValueError as error:
            raise ValueError(f"{where}: not JSON ({error})") from None
        except RecursionError:
            raise ValueError(f"{where}: not JSON (nested too deeply)") from None
        if not isinstance(row, dict):
            raise ValueError(f"{where}: expected a JSON object with 'id' and 'text', got {type(row).__name__}")
        if "id" not in row or "text" not in row:
            raise ValueError(f"{where}: prediction lines need 'id' and 'text', got keys {sorted(row)}")
        key = row["id"]
        if isinstance(key, bool) or not isinstance(key, (str, int)):
            raise ValueError(f"{where}: 'id' must be a string or an integer, got {type(key).__name__}")
        if not isinstance(row["text"], str):
            raise ValueError(f"{where}: 'text' must be a string, got {type(row['text']).__name__}")
        if row.get("generated") is not None and not isinstance(row["generated"], str):
            raise ValueError(f"{where}: 'generated' must be a string, got {type(row['generated']).__name__}")
        if row.get("frame") is not None:
            row = {**row, "frame": _frame(row["frame"], where)}
        if any(variant in out.by_id for variant in _id_variants(key)):
            raise ValueError(f"{where}: a second prediction for id {key!r:.60} (first on line "
                             f"{out.lines[next(v for v in _id_variants(key) if v in out.by_id)]})")
        out.by_id[key] = row
        out.lines[key] = number
    return out


def _is_hypothesis(line: str) -> int | None:
    """The sample id of a fairseq-generate hypothesis line ("H-<sample id>\\t<score>\\t<text>"): as the
    official scripts read them, a line whose first tab field contains "H-" and ends in "-<digits>"."""
    first = line.split("\t")[0]
    last = first.split("-")[-1]
    return int(last) if "H-" in first and _is_small_number(last) else None


def _read_fairseq(path, lines: list[str]) -> Predictions:
    out = Predictions(positional=True)
    for number, line in enumerate(lines, 1):
        index = _is_hypothesis(line)
        if index is None:
            continue  # S-, T-, D-, P- lines and logging, skipped as the official scripts skip them
        if index in out.by_id:
            raise ValueError(f"predictions {path}:{number}: a second hypothesis for sample {index} "
                             f"(first on line {out.lines[index]})")
        out.by_id[index] = {"id": index, "text": line.split("\t")[-1]}
        out.lines[index] = number
    return out


def _frame(value, where: str) -> tuple[float, float, float, float]:
    if not isinstance(value, (list, tuple)) or len(value) != 4:
        raise ValueError(f"{where}: 'frame' must be four numbers [x0, y0, w, h], got {value!r:.60}")
    numbers = []
    for v in value:
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
            raise ValueError(f"{where}: 'frame' must be four finite numbers [x0, y0, w, h], got {value!r:.60}")
        numbers.append(float(v))
    if numbers[2] <= 0 or numbers[3] <= 0:
        raise ValueError(f"{where}: 'frame' width and height must be positive, got {value!r:.60}")
    return tuple(numbers)


def check_known(predictions: Predictions, keys, count: int, path) -> None:
    """Every prediction names a query of the annotations (an id, or a sample position < ``count``), else one line."""
    unknown = predictions.unknown(keys, count)
    if unknown:
        key, line = unknown[0]
        what = "sample" if predictions.positional else "id"
        raise ValueError(f"predictions {path}:{line}: {what} {key!r:.60} is not in the annotations"
                         + (f" ({len(unknown)} such lines)" if len(unknown) > 1 else ""))


def read_loglikelihoods(path) -> dict[str, list]:
    """A ranking task's predictions jsonl as {id (as text): its candidates' log-likelihoods}."""
    return {str(record_field(r, "id", w, (str, int))): record_field(r, "loglikelihoods", w, list)
            for w, r in read_records(path, "predictions")}


def read_results_list(path, id_field: str, text_field: str) -> list[dict]:
    """An official results file: a JSON list of ``{id_field, text_field}`` objects (ids strings or integers)."""
    value = load_json(path, "predictions")
    if not isinstance(value, list):
        raise ValueError(f"predictions {path}: expected a JSON list of {{{id_field!r}, {text_field!r}}} objects")
    for index, row in enumerate(value):
        where = f"predictions {path}: entry {index}"
        if not isinstance(row, dict) or id_field not in row or text_field not in row:
            raise ValueError(f"{where}: expected an object with {id_field!r} and {text_field!r}")
        if isinstance(row[id_field], (bool, list, dict, float)) or row[id_field] is None:
            raise ValueError(f"{where}: {id_field!r} must be a string or an integer, got {row[id_field]!r:.40}")
        if not isinstance(row[text_field], str):
            raise ValueError(f"{where}: {text_field!r} must be a string, got {type(row[text_field]).__name__}")
    return value
