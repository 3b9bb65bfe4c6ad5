"""Measure a GRIT build against labelled truth: phrase-level precision and recall at IoU 0.5.

Reads a build in the documented output layout (``NNNNN.parquet`` GRIT rows, ``_rejects/NNNNN.parquet``) and
truth lines (``truth/NNNNN.jsonl``, written by ``grit synth``, ``grit flickr30k`` or by hand; format in
docs/evaluation.md, "The truth format"), or the official Flickr30k Entities folders (``grit_pipeline.flickr30k``).

Span matching rule (decided here; the paper defines no phrase-level evaluation of its own pipeline):
- noun chunks: a predicted span matches a truth object when it covers the truth phrase's head noun
  (``head`` offsets, or the last word of the truth ``noun_chunk``). This is robust to parsers that differ on
  determiners and pre-modifiers ("red circle" vs "a small red circle") but never lets one phrase stand for
  another, because no noun chunk contains two head nouns.
- referring expressions: the predicted expression covers the head noun AND its character IoU with the truth
  ``ref_exp`` is >= ``ref_char_iou`` (0.5): the expansion must be about as long as the true one, so an
  expression that swallows the rest of the caption, or stops at the bare chunk when a long one was meant,
  does not count.
A predicted (span, box) is a true positive when it matches a not-yet-matched truth object of its image with
the same span rule and box IoU >= ``iou`` (greedy, highest score first). Other predictions are false
positives, split by cause: ``wrong_box`` (the phrase is right, no box fits), ``duplicate`` (the object
was already found), ``wrong_span`` (referring expressions only: the expression covers an object's head noun
but is not its expression), ``absent_phrase`` (the phrase names something not in the image), ``unlabelled_phrase``
(the truth says nothing about this phrase). Predictions on ``ignore`` spans are not counted.
Recall counts every truth object of every truth image, including images the build dropped or lost.
"""
from __future__ import annotations

import json
import math
import re
from collections import Counter
from pathlib import Path
from typing import Any, Iterable

from grit_pipeline import flickr30k

DEFAULT_IOU = 0.5
DEFAULT_REF_CHAR_IOU = 0.5
_WORD = re.compile(r"\w+")


def load_truth(truth_dir: str | Path, split: str | None = None) -> dict[str, dict]:
    """All truth lines under ``truth_dir`` (``*.jsonl``; a single ``.jsonl`` file works too), by key.

    A Flickr30k Entities folder (``Sentences/`` + ``Annotations/``) is read as truth too
    (``grit_pipeline.flickr30k``), all of it or the images of ``split`` (``<split>.txt``)."""
    path = Path(truth_dir)
    if path.is_dir() and flickr30k.is_flickr30k_folder(path):
        truth = flickr30k.load_truth(path, split)
        for record in truth.values():
            _check_truth(record)
        return truth
    if split is not None:
        raise ValueError(f"--split names a Flickr30k Entities image list, but {path} is not a Flickr30k Entities folder")
    files = [path] if path.is_file() else sorted(path.glob("*.jsonl"))
    if not files:
        raise FileNotFoundError(f"no truth files (*.jsonl) in {path}")
    truth: dict[str, dict] = {}
    for file in files:
        for number, line in enumerate(file.read_text(encoding="utf-8").splitlines(), 1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
                if not isinstance(record, dict):
                    raise ValueError("a truth line is a JSON object")
                key = str(record["key"])
                record.setdefault("objects", [])
                record.setdefault("absent", [])
                record.setdefault("ignore", [])
                _check_truth(record)
            except RecursionError:
                raise ValueError(f"{file}:{number}: bad truth line: nested too deeply") from None
            except (ValueError, KeyError, TypeError) as error:
                raise ValueError(f"{file}:{number}: bad truth line: {error}") from None
            if key in truth:
                raise ValueError(f"{file}:{number}: key {key!r} appears twice in the truth")
            truth[key] = record
    return truth


def _numbers(value, count: int, kind: type) -> bool:
    return (isinstance(value, list) and len(value) == count
            and all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in value)
            and all(isinstance(v, int) for v in value if kind is int))


def _check_truth(record: dict) -> None:
    """Raise ValueError unless the truth record has the types the matching reads."""
    if not isinstance(record.get("caption"), str):
        raise ValueError("caption must be text")
    for name in ("objects", "absent", "ignore"):
        if not isinstance(record[name], list):
            raise ValueError(f"{name} must be a list")
    for name in ("absent", "ignore"):
        if not all(_numbers(span, 2, int) for span in record[name]):
            raise ValueError(f"{name} holds spans [s, e] (integers)")
    for obj in record["objects"]:
        if not isinstance(obj, dict) or not _numbers(obj.get("box"), 4, float) or not _numbers(obj.get("noun_chunk"), 2, int):
            raise ValueError("objects need noun_chunk [s, e] (integers) and box [x1, y1, x2, y2] (finite numbers)")
        for name in ("head", "ref_exp"):
            if obj.get(name) is not None and not _numbers(obj[name], 2, int):
                raise ValueError(f"an object's {name} must be [s, e] (integers)")


def load_build(output_dir: str | Path) -> tuple[dict[str, dict], dict[str, dict]]:
    """(GRIT rows by key, reject rows by key) of a build in the documented output layout."""
    import pyarrow.parquet as pq

    out = Path(output_dir)
    if not out.is_dir():
        raise FileNotFoundError(f"build directory not found: {out}")
    rows: dict[str, dict] = {}
    rejects: dict[str, dict] = {}
    # (a build of grit's previous layout kept NNNNN_rejects.parquet beside the rows)
    for file in sorted([*out.glob("*.parquet"), *out.glob("_rejects/*.parquet")]):
        if file.name.endswith("_rejects.parquet") or file.parent.name == "_rejects":
            wanted = ["key", "status", "reason"]
            names = pq.read_schema(file).names
            table = pq.read_table(file, columns=[c for c in wanted if c in names])
            for row in table.to_pylist():
                rejects[str(row["key"])] = row
        else:
            names = pq.read_schema(file).names
            columns = [c for c in ("key", "caption", "noun_chunks", "ref_exps", "status") if c in names]
            for row in pq.read_table(file, columns=columns).to_pylist():
                rows[str(row["key"])] = row
    if not rows and not rejects:
        raise FileNotFoundError(f"no GRIT parquet files (NNNNN.parquet / _rejects/NNNNN.parquet) in {out}")
    return rows, rejects


def truth_head(obj: dict, caption: str) -> tuple[int, int]:
    """The head noun of a truth object: ``head`` if given, else the last word of its noun chunk."""
    if obj.get("head"):
        return int(obj["head"][0]), int(obj["head"][1])
    return last_word(caption, obj["noun_chunk"])


def last_word(caption: str, span: Iterable[int]) -> tuple[int, int]:
    s, e = (int(v) for v in span)
    words = list(_WORD.finditer(caption, s, e))
    if not words:
        return s, e
    return words[-1].start(), words[-1].end()


def _covers(span: tuple[int, int], head: tuple[int, int]) -> bool:
    return span[0] <= head[0] and head[1] <= span[1]


def _char_iou(a: tuple[int, int], b: tuple[int, int]) -> float:
    inter = max(0, min(a[1], b[1]) - max(a[0], b[0]))
    union = (a[1] - a[0]) + (b[1] - b[0]) - inter
    return inter / union if union > 0 else 0.0


def box_iou(a: Iterable[float], b: Iterable[float]) -> float:
    ax1, ay1, ax2, ay2 = a
    bx1, by1, bx2, by2 = b
    iw, ih = min(ax2, bx2) - max(ax1, bx1), min(ay2, by2) - max(ay1, by1)
    if iw <= 0 or ih <= 0:
        return 0.0
    inter = iw * ih
    union = (ax2 - ax1) * (ay2 - ay1) + (bx2 - bx1) * (by2 - by1) - inter
    return inter / union if union > 0 else 0.0


# What one prediction is, in the greedy matching order (highest score first).
TRUE_POSITIVE, IGNORED = "true_positive", "ignored"
FALSE_POSITIVE_KINDS = ("fp_wrong_box", "fp_duplicate", "fp_absent_phrase", "fp_unlabelled_phrase", "fp_wrong_span")


# How a wrong expression differs from the truth's (``wrong_span`` predictions, by the object whose head it covers):
# too_short: inside the true expression (the parser attached one of its modifiers elsewhere, or saw a list);
# too_long: contains it (the parser attached more to the phrase, or missed a coordination that stops it);
# shifted: neither.
SPAN_ERROR_KINDS = ("too_short", "too_long", "shifted")


def span_error_kind(span: tuple[int, int], truth_span: tuple[int, int]) -> str:
    """``too_short``, ``too_long`` or ``shifted``: how ``span`` differs from ``truth_span``."""
    if truth_span[0] <= span[0] and span[1] <= truth_span[1]:
        return "too_short"
    if span[0] <= truth_span[0] and truth_span[1] <= span[1]:
        return "too_long"
    return "shifted"


def match_outcomes(truth: dict, predictions: list[list[float]], level: str, iou: float = DEFAULT_IOU,
                   ref_char_iou: float = DEFAULT_REF_CHAR_IOU,
                   span_errors: Counter | None = None) -> list[tuple[float, str]]:
    """``(score, outcome)`` of each prediction of one image, highest score first (ties in input order).

    ``outcome`` is ``true_positive``, ``ignored`` or one of ``FALSE_POSITIVE_KINDS``. The matching is greedy
    in this order, so the outcomes of the predictions scoring above any threshold are exactly what matching
    only those would give: a threshold sweep needs one matching pass (``grit_pipeline.calibrate``).
    ``predictions``: GRIT span items ``[s, e, x1, y1, x2, y2, score]``; ``level``: "noun_chunks" or "ref_exps".
    ``span_errors``: when given, counts each ``wrong_span`` prediction by ``span_error_kind``.
    """
    caption = truth["caption"]
    objects = truth["objects"]
    heads = [truth_head(o, caption) for o in objects]
    refs = [tuple(o.get("ref_exp") or o["noun_chunk"]) for o in objects]

    def span_matches(span: tuple[int, int], k: int) -> bool:
        if not _covers(span, heads[k]):
            return False
        return level == "noun_chunks" or _char_iou(span, refs[k]) >= ref_char_iou

    absent_heads = [last_word(caption, s) for s in truth["absent"]]
    ignore_heads = [last_word(caption, s) for s in truth["ignore"]]
    matched = [False] * len(objects)
    outcomes = []
    for item in sorted(predictions, key=lambda p: -p[6]):
        span, box = (int(item[0]), int(item[1])), item[2:6]
        named = [k for k in range(len(objects)) if span_matches(span, k)]
        fits = [(box_iou(box, objects[k]["box"]), k) for k in named]
        free = [(v, k) for v, k in fits if v >= iou and not matched[k]]
        if free:
            matched[max(free)[1]] = True
            outcome = TRUE_POSITIVE
        elif any(v >= iou for v, _ in fits):
            outcome = "fp_duplicate"
        elif named:
            outcome = "fp_wrong_box"
        elif any(_covers(span, h) for h in heads):
            outcome = "fp_wrong_span"       # ref_exps only: about an object, but not its expression
            if span_errors is not None:
                closest = max((k for k in range(len(objects)) if _covers(span, heads[k])),
                              key=lambda k: _char_iou(span, refs[k]))
                span_errors[span_error_kind(span, refs[closest])] += 1
        elif any(_covers(span, h) for h in absent_heads):
            outcome = "fp_absent_phrase"
        elif any(_covers(span, h) for h in ignore_heads):
            outcome = IGNORED
        else:
            outcome = "fp_unlabelled_phrase"
        outcomes.append((float(item[6]), outcome))
    return outcomes


def match_image(truth: dict, predictions: list[list[float]], level: str, iou: float = DEFAULT_IOU,
                ref_char_iou: float = DEFAULT_REF_CHAR_IOU) -> dict[str, int]:
    """Counts for one image (``match_outcomes`` tallied). ``predictions``: GRIT span items
    ``[s, e, x1, y1, x2, y2, score]``; ``level``: "noun_chunks" or "ref_exps"."""
    counts = Counter(truth_objects=len(truth["objects"]))
    span_errors: Counter = Counter()
    for _, outcome in match_outcomes(truth, predictions, level, iou, ref_char_iou, span_errors):
        if outcome == IGNORED:
            counts["ignored_predictions"] += 1
            continue
        counts["predictions"] += 1
        counts["true_positives" if outcome == TRUE_POSITIVE else outcome] += 1
    counts["found_objects"] = counts["true_positives"]  # one true positive per truth object
    counts.update({f"wrong_span_{kind}": n for kind, n in span_errors.items()})
    return counts


def _summary(counts: Counter) -> dict[str, Any]:
    preds, tp = counts["predictions"], counts["true_positives"]
    truth_objects = counts["truth_objects"]
    return {
        "precision": round(tp / preds, 4) if preds else None,
        "recall": round(counts["found_objects"] / truth_objects, 4) if truth_objects else None,
        "true_positives": tp,
        "predictions": preds,
        "truth_objects": truth_objects,
        "false_positives": {k[3:]: counts[k] for k in ("fp_wrong_box", "fp_duplicate", "fp_absent_phrase",
                                                       "fp_unlabelled_phrase", "fp_wrong_span")},
        "ignored_predictions": counts["ignored_predictions"],
        "wrong_span_kinds": {kind: counts[f"wrong_span_{kind}"] for kind in SPAN_ERROR_KINDS},
    }


def evaluate_grounding(output_dir: str | Path, truth_dir: str | Path, iou: float = DEFAULT_IOU,
                       ref_char_iou: float = DEFAULT_REF_CHAR_IOU, min_score: float | None = None,
                       split: str | None = None) -> dict[str, Any]:
    """Precision/recall of a GRIT build against truth, for noun chunks and referring expressions, plus
    which truth images the build kept, dropped (by status and reason) or lost. ``min_score``: only count
    predictions scoring above it (default: everything the build kept). ``truth_dir``: truth lines, or a
    Flickr30k Entities folder (``split``: only the images of its ``<split>.txt``)."""
    truth = load_truth(truth_dir, split)
    rows, rejects = load_build(output_dir)
    levels = {"noun_chunks": Counter(), "ref_exps": Counter()}
    images = Counter(truth=len(truth))
    by_status, by_reason = Counter(), Counter()
    for key, record in truth.items():
        row = rows.get(key)
        if row is not None and row.get("caption") is not None and row["caption"] != record["caption"]:
            images["caption_mismatch"] += 1   # offsets would not line up: leave the image out of the scores
            continue
        if row is not None:
            images["kept"] += 1
        elif key in rejects:
            images["dropped"] += 1
            by_status[str(rejects[key].get("status"))] += 1
            by_reason[str(rejects[key].get("reason"))] += 1
        else:
            images["missing"] += 1
        for level, counts in levels.items():
            predictions = list((row or {}).get(level) or [])
            if min_score is not None:
                predictions = [p for p in predictions if p[6] > min_score]
            counts.update(match_image(record, predictions, level, iou, ref_char_iou))
        images["all_objects_found"] += int(
            match_image(record, list((row or {}).get("noun_chunks") or []), "noun_chunks", iou)["found_objects"]
            == len(record["objects"]))
    extra_keys = (set(rows) | set(rejects)) - set(truth)
    return {
        "output": str(output_dir), "truth": str(truth_dir), "iou_threshold": iou, "ref_char_iou": ref_char_iou,
        "min_score": min_score,
        "span_rule": {"noun_chunks": "predicted span covers the truth head noun",
                      "ref_exps": f"covers the head noun and character IoU with the truth ref_exp >= {ref_char_iou}"},
        "noun_chunks": _summary(levels["noun_chunks"]),
        "ref_exps": _summary(levels["ref_exps"]),
        "images": {
            "truth": images["truth"], "kept": images["kept"], "dropped": images["dropped"],
            "missing_from_build": images["missing"], "caption_mismatch": images["caption_mismatch"],
            "all_objects_found": images["all_objects_found"],
            "dropped_by_status": dict(by_status.most_common()),
            "dropped_by_reason": dict(by_reason.most_common(20)),
            "build_keys_without_truth": len(extra_keys),
        },
    }
