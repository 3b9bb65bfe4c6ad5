"""Calibrate the box threshold (and the NMS IoU) of any detector on labelled data, from one grounding pass.

``score_samples`` runs the pipeline's own stages once (ingest, ``NounChunkStage``, ``GroundStage``) on
labelled input shards with NMS switched off (IoU 1.0) and no threshold, so every scored (chunk, box) pair
the detector reports is kept (``SCORES_FILE``). ``sweep`` then replays the pipeline's post-processing
offline for any number of thresholds and NMS IoUs: ``grounding.nms_survivors``, ``assemble.assemble_record``
(a chunk's box goes to its expansion), and ``evaluate.match_outcomes``, the matching of
``grit evaluate-grounding``. The matching is greedy in descending score order, so one matching pass per
NMS IoU gives the outcome of every pair, and the counts at a threshold ``t`` are those of the pairs scoring
above ``t``: the sweep never reruns the detector nor rematches, and its figures at a threshold equal what
``grit run --box-threshold t`` followed by ``grit evaluate-grounding`` gives (tested at 0.65).

Recommendation: the threshold with the highest recall whose precision reaches ``target_precision``, or the
one whose kept boxes per grounded image come closest to a reference run (GrIT-20M: 1.52, paper Table 1).
"""
from __future__ import annotations

import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np

from grit_pipeline.evaluate import (DEFAULT_IOU, DEFAULT_REF_CHAR_IOU, FALSE_POSITIVE_KINDS, IGNORED, TRUE_POSITIVE,
                                    load_truth, match_outcomes)

LEVELS = ("noun_chunks", "ref_exps")
SCORES_FILE = "scores.parquet"
RESULT_FILE = "calibration.json"
PLOT_FILE = "pr_curve.png"
NO_NMS = 1.0  # torchvision's NMS removes boxes with IoU > this: at 1.0 every box stays
# Thresholds swept by default: 0.00 .. 0.99 in steps of 0.01 (0.65, the paper's, is one of them).
DEFAULT_THRESHOLDS = tuple(round(i / 100, 2) for i in range(100))
# GrIT-20M as released (paper, Table 1): 137,349,210 boxes on 90,614,680 images.
GRIT_BOXES_PER_IMAGE = round(137_349_210 / 90_614_680, 3)
_OUTCOMES = (TRUE_POSITIVE, IGNORED, *FALSE_POSITIVE_KINDS)


# ---- one grounding pass ------------------------------------------------------------------------
def score_samples(config, keys: set[str] | None = None, limit: int | None = None,
                  progress: bool = False) -> list[dict[str, Any]]:
    """Run noun chunks and grounding once over ``config.input`` (img2dataset shards) with NMS off.

    ``config``: a ``PipelineConfig`` (detector, model, options, device, spaCy model, batch sizes); its
    ``nms_iou`` and ``box_threshold`` are not used. ``keys``: only these samples (the labelled ones).
    Returns one row per sample: key, caption, status/reason (set for samples the pipeline would reject
    before the threshold), width, height, the spans of noun chunks and expressions, and ``detections``
    (``[phrase_index, x1, y1, x2, y2, score]``, every storable box the detector reported).
    """
    from grit_pipeline.pipeline.shards import InputSource
    from grit_pipeline.pipeline.stages import GroundStage, NounChunkStage

    config = config.replace(nms_iou=NO_NMS)
    source = InputSource(config)
    stages = [NounChunkStage(config), GroundStage(config)]
    rows: list[dict[str, Any]] = []
    started = time.perf_counter()
    for shard in source.shards():
        samples = source.read(shard)
        if keys is not None:
            samples = [s for s in samples if s["key"] in keys]
        if limit is not None:
            samples = samples[:max(0, limit - len(rows))]
        for stage in stages:
            size = stage.batch_size()
            for start in range(0, len(samples), size):
                stage(samples[start:start + size])
        rows.extend({name: sample.get(name) for name in
                     ("key", "caption", "status", "reason", "width", "height", "noun_chunk_spans", "ref_exp_spans",
                      "detections")} for sample in samples)
        if progress:
            print(f"[calibrate] shard {shard}: {len(rows)} samples scored in {time.perf_counter() - started:.0f} s",
                  file=sys.stderr, flush=True)
        if limit is not None and len(rows) >= limit:
            break
    return rows


def save_scores(rows: list[dict[str, Any]], path: str | Path) -> Path:
    """Write scored rows to parquet (atomically)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    schema = pa.schema([("key", pa.string()), ("caption", pa.string()), ("status", pa.string()),
                        ("reason", pa.string()), ("width", pa.int64()), ("height", pa.int64()),
                        ("noun_chunk_spans", pa.list_(pa.list_(pa.int64()))),
                        ("ref_exp_spans", pa.list_(pa.list_(pa.int64()))),
                        ("detections", pa.list_(pa.list_(pa.float64())))])
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    pq.write_table(pa.Table.from_pylist(rows, schema), tmp)
    tmp.replace(path)
    return path


def load_scores(path: str | Path) -> list[dict[str, Any]]:
    """Scored rows saved by ``save_scores`` (a calibration folder or the parquet file itself)."""
    import pyarrow.parquet as pq

    path = Path(path)
    if path.is_dir():
        path = path / SCORES_FILE
    if not path.is_file():
        raise FileNotFoundError(f"no saved scores at {path} (run grit calibrate without --scores-from first)")
    return pq.read_table(path).to_pylist()


# ---- the offline sweep ------------------------------------------------------------------------
@dataclass
class Curve:
    """Everything a threshold needs for one NMS IoU: per level, the scores of all predictions in descending
    order with the running count of each outcome; the kept boxes' scores and each image's best score."""

    nms_iou: float
    truth_objects: int
    neg_scores: dict[str, np.ndarray]            # -score, ascending
    running: dict[str, dict[str, np.ndarray]]    # level -> outcome -> counts of the first n predictions
    neg_box_scores: np.ndarray                   # -score of every NMS survivor, ascending
    neg_image_best: np.ndarray                   # -best score of each image with a survivor, ascending
    samples: int

    def at(self, threshold: float) -> dict[str, Any]:
        """Precision, recall, counts and boxes per image of the pairs scoring above ``threshold``."""
        row: dict[str, Any] = {"threshold": threshold, "nms_iou": self.nms_iou}
        for level in LEVELS:
            n = int(np.searchsorted(self.neg_scores[level], -threshold, side="left"))
            counts = {k: int(v[n]) for k, v in self.running[level].items()}
            predictions = n - counts[IGNORED]
            tp = counts[TRUE_POSITIVE]
            row[level] = {
                "precision": round(tp / predictions, 4) if predictions else None,
                "recall": round(tp / self.truth_objects, 4) if self.truth_objects else None,
                "true_positives": tp, "predictions": predictions, "truth_objects": self.truth_objects,
                "false_positives": {k[3:]: counts[k] for k in FALSE_POSITIVE_KINDS},
                "ignored_predictions": counts[IGNORED],
            }
        boxes = int(np.searchsorted(self.neg_box_scores, -threshold, side="left"))
        grounded = int(np.searchsorted(self.neg_image_best, -threshold, side="left"))
        row.update(boxes=boxes, grounded_images=grounded,
                   boxes_per_image=round(boxes / grounded, 4) if grounded else None,
                   grounded_share=round(grounded / self.samples, 4) if self.samples else None)
        return row


def build_curve(rows: Sequence[dict[str, Any]], truth: dict[str, dict], nms_iou: float,
                iou: float = DEFAULT_IOU, ref_char_iou: float = DEFAULT_REF_CHAR_IOU) -> Curve:
    """One matching pass over the scored rows at one NMS IoU (the pipeline's post-processing, replayed)."""
    from grit_pipeline.assemble import assemble_record
    from grit_pipeline.grounding import check_thresholds, nms_survivors
    from grit_pipeline.pipeline.sample import unpack_detections
    from grit_pipeline.record import RecordError
    from grit_pipeline.text import CaptionSpans

    check_thresholds(0.0, nms_iou)
    by_key = {str(r["key"]): r for r in rows}
    outcomes: dict[str, list[tuple[float, str]]] = {level: [] for level in LEVELS}
    box_scores: list[float] = []
    image_best: list[float] = []
    truth_objects = 0
    for key, record in truth.items():
        row = by_key.get(key)
        if row is not None and row.get("caption") is not None and row["caption"] != record["caption"]:
            continue  # offsets would not line up: left out, as grit evaluate-grounding does
        truth_objects += len(record["objects"])
        if row is None or row.get("status") or not row.get("detections"):
            continue
        survivors = nms_survivors(unpack_detections(row["detections"]), nms_iou)
        if not survivors:
            continue
        spans = CaptionSpans([tuple(s) for s in row["noun_chunk_spans"]], [tuple(s) for s in row["ref_exp_spans"]])
        try:
            built = assemble_record(key, row["caption"], row["width"], row["height"], spans, survivors)
        except (RecordError, IndexError, TypeError, ValueError):
            continue  # the pipeline rejects such an image (detector_error): no predictions
        box_scores.extend(d.score for d in survivors)
        image_best.append(survivors[0].score)
        for level in LEVELS:
            outcomes[level].extend(match_outcomes(record, getattr(built, level), level, iou, ref_char_iou))
    neg_scores, running = {}, {}
    for level in LEVELS:
        # a stable sort keeps each image's greedy order among equal scores; ties are kept or dropped together
        ordered = sorted(outcomes[level], key=lambda item: -item[0])
        neg_scores[level] = np.array([-s for s, _ in ordered], dtype=np.float64)
        names = np.array([o for _, o in ordered], dtype=object)
        running[level] = {o: np.concatenate([[0], np.cumsum(names == o)]) for o in _OUTCOMES}
    scored = sum(1 for r in rows if str(r["key"]) in truth)
    return Curve(nms_iou, truth_objects, neg_scores, running, np.sort(-np.array(box_scores, dtype=np.float64)),
                 np.sort(-np.array(image_best, dtype=np.float64)), scored)


def recommend(table: list[dict[str, Any]], level: str = "noun_chunks", target_precision: float | None = None,
              reference_boxes_per_image: float | None = None) -> dict[str, Any] | None:
    """The recommended (threshold, NMS IoU): highest recall at ``level`` with precision >= target (then
    higher precision, then higher threshold), or boxes per grounded image closest to the reference."""
    def summary(row: dict[str, Any], by: str) -> dict[str, Any]:
        return {"by": by, "level": level, "threshold": row["threshold"], "nms_iou": row["nms_iou"],
                "precision": row[level]["precision"], "recall": row[level]["recall"],
                "boxes_per_image": row["boxes_per_image"]}

    if target_precision is not None:
        reaching = [r for r in table if r[level]["precision"] is not None and r[level]["precision"] >= target_precision]
        if not reaching:
            best = max((r for r in table if r[level]["precision"] is not None),
                       key=lambda r: r[level]["precision"], default=None)
            return {"by": "target_precision", "target": target_precision, "level": level, "threshold": None,
                    "note": f"no threshold reaches precision {target_precision}" + (
                        f" (best {best[level]['precision']} at {best['threshold']}, NMS IoU {best['nms_iou']})"
                        if best else "")}
        row = max(reaching, key=lambda r: (r[level]["recall"], r[level]["precision"], r["threshold"]))
        return {**summary(row, "target_precision"), "target": target_precision}
    if reference_boxes_per_image is not None:
        usable = [r for r in table if r["boxes_per_image"] is not None]
        if not usable:
            return None
        row = min(usable, key=lambda r: (abs(r["boxes_per_image"] - reference_boxes_per_image),
                                         -(r[level]["precision"] or 0.0)))
        return {**summary(row, "reference_boxes_per_image"), "target": reference_boxes_per_image}
    return None


def sweep(rows: Sequence[dict[str, Any]], truth: dict[str, dict], thresholds: Iterable[float] = DEFAULT_THRESHOLDS,
          nms_ious: Iterable[float] = (0.6,), iou: float = DEFAULT_IOU, ref_char_iou: float = DEFAULT_REF_CHAR_IOU,
          level: str = "noun_chunks", target_precision: float | None = None,
          reference_boxes_per_image: float | None = None) -> dict[str, Any]:
    """The calibration table (one row per NMS IoU and threshold) and the recommendation."""
    if level not in LEVELS:
        raise ValueError(f"level must be one of {LEVELS}, got {level!r}")
    thresholds = sorted({float(t) for t in thresholds})
    for t in thresholds:
        if not 0.0 <= t <= 1.0:
            raise ValueError(f"thresholds must be in [0, 1], got {t}")
    table = []
    for nms_iou in nms_ious:
        curve = build_curve(rows, truth, float(nms_iou), iou, ref_char_iou)
        table.extend(curve.at(t) for t in thresholds)
    statuses: dict[str, int] = {}
    for r in rows:
        statuses[r.get("status") or "scored"] = statuses.get(r.get("status") or "scored", 0) + 1
    return {
        "samples": len(rows), "truth_images": len(truth), "samples_by_status": statuses,
        "iou_threshold": iou, "ref_char_iou": ref_char_iou, "nms_ious": [float(v) for v in nms_ious],
        "thresholds": thresholds, "table": table,
        "recommendation": recommend(table, level, target_precision, reference_boxes_per_image),
    }


def reference_boxes_per_image(path: str | Path) -> float:
    """Kept boxes per grounded image of a reference run: a GRIT build or GrIT-20M parquet files (any
    ``*.parquet`` with a ``noun_chunks`` column; rows with a ``status`` other than grounded are skipped)."""
    import pyarrow.parquet as pq

    files = [f for f in sorted(Path(path).glob("*.parquet")) if not f.name.endswith("_rejects.parquet")]
    images = boxes = 0
    for file in files:
        names = pq.read_schema(file).names
        if "noun_chunks" not in names:
            continue
        table = pq.read_table(file, columns=[c for c in ("noun_chunks", "status") if c in names]).to_pylist()
        for row in table:
            if row.get("status") not in (None, "grounded") or not row["noun_chunks"]:
                continue
            images += 1
            boxes += len(row["noun_chunks"])
    if not images:
        raise ValueError(f"reference {path}: no parquet rows with noun_chunks boxes")
    return boxes / images


# ---- the plot -----------------------------------------------------------------------------------
def plot_curves(result: dict[str, Any], path: str | Path, default_threshold: float = 0.65) -> Path:
    """Precision/recall curves (noun chunks solid, expressions dashed; one colour per NMS IoU) with the
    default threshold and the recommendation marked, beside precision, recall and boxes per image against
    the threshold. PNG (matplotlib, Agg)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    path = Path(path)
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.4))
    colours = ["#4363d8", "#e6194b", "#3cb44b", "#f58231", "#911eb4", "#42d4f4"]
    for i, nms_iou in enumerate(result["nms_ious"]):
        rows = [r for r in result["table"] if r["nms_iou"] == nms_iou]
        colour = colours[i % len(colours)]
        for level, style, name in (("noun_chunks", "-", "noun chunks"), ("ref_exps", "--", "expressions")):
            points = [(r[level]["recall"], r[level]["precision"]) for r in rows if r[level]["precision"] is not None]
            if points:
                left.plot([p[0] for p in points], [p[1] for p in points], style, color=colour,
                          label=f"{name}, NMS IoU {nms_iou:g}")
            at_default = [r for r in rows if r["threshold"] == default_threshold and r[level]["precision"] is not None]
            if at_default:
                left.plot(at_default[0][level]["recall"], at_default[0][level]["precision"], "o", color=colour,
                          markerfacecolor="white")
        if i == 0:
            ts = [r["threshold"] for r in rows]
            right.plot(ts, [r["noun_chunks"]["precision"] for r in rows], "-", color="#4363d8", label="precision (noun chunks)")
            right.plot(ts, [r["noun_chunks"]["recall"] for r in rows], "-", color="#e6194b", label="recall (noun chunks)")
            twin = right.twinx()
            twin.plot(ts, [r["boxes_per_image"] for r in rows], ":", color="#555555", label="boxes per grounded image")
            twin.set_ylabel("boxes per grounded image")
            twin.legend(fontsize=8, loc="lower left")
    rec = result.get("recommendation") or {}
    if rec.get("threshold") is not None:
        left.plot(rec["recall"], rec["precision"], "*", color="black", markersize=13,
                  label=f"recommended: {rec['threshold']:g} (NMS {rec['nms_iou']:g})")
        right.axvline(rec["threshold"], color="black", linestyle="--", linewidth=1)
    right.axvline(default_threshold, color="#999999", linestyle="-.", linewidth=1)
    left.set_xlabel("recall")
    left.set_ylabel("precision")
    left.set_xlim(0, 1.02)
    left.set_ylim(0, 1.02)
    left.set_title(f"Precision / recall over the box threshold (circles: {default_threshold:g})", fontsize=10)
    left.legend(fontsize=8, loc="lower left")
    right.set_xlabel("box threshold (keep score > threshold)")
    right.set_ylim(0, 1.02)
    right.set_title(f"NMS IoU {result['nms_ious'][0]:g} (dash-dot: {default_threshold:g})", fontsize=10)
    right.legend(fontsize=8, loc="upper right")
    fig.tight_layout()
    tmp = path.with_name(path.name + ".tmp.png")
    fig.savefig(tmp, dpi=100)
    plt.close(fig)
    tmp.replace(path)
    return path


def write_result(result: dict[str, Any], out: str | Path) -> Path:
    """``OUT/calibration.json`` (atomically)."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    tmp = out / (RESULT_FILE + ".tmp")
    tmp.write_text(json.dumps(result, indent=1), encoding="utf-8")
    return tmp.replace(out / RESULT_FILE)

