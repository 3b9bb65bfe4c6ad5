"""Demo detector on held-out synthetic images: grounding precision/recall at IoU 0.5 with the 0.65 filter.

An in-process path, independent of the Ray pipeline: ``grit synth`` shards -> read the tars ->
``text.caption_spans`` -> demo detector -> ``grounding.filter_detections`` (via ``ground_batch``) ->
``assemble.assemble_record`` -> NNNNN.parquet / NNNNN_rejects.parquet in the documented output layout ->
``evaluate.evaluate_grounding``. Also times synthesis and the detector.

Environment: BENCH_DEMO_IMAGES (default 1000), BENCH_DEMO_SEED (default 2026, never used in training),
BENCH_DEMO_DIR (keep the build there instead of a temporary directory).
"""
from __future__ import annotations

import io
import json
import os
import tarfile
import tempfile
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

HELD_OUT_SEED = 2026


def read_img2dataset_tar(path: Path) -> list[dict]:
    """Samples of one img2dataset webdataset shard: key, jpg bytes, caption, url."""
    samples: dict[str, dict] = {}
    with tarfile.open(path) as tar:
        for member in tar.getmembers():
            key, _, ext = member.name.rpartition(".")
            samples.setdefault(key, {"key": key})[ext] = tar.extractfile(member).read()
    out = []
    for key in sorted(samples):
        s = samples[key]
        meta = json.loads(s["json"])
        out.append({"key": key, "jpg": s.get("jpg"), "caption": s["txt"].decode("utf-8"), "url": meta.get("url")})
    return out


def build_grit(shards: Path, output: Path, detector, box_threshold: float = 0.65, nms_iou: float = 0.6,
               batch_size: int = 64) -> dict:
    """Ground every sample of ``shards`` and write GRIT rows + rejects per shard; returns timings."""
    from grit_pipeline import status
    from grit_pipeline.assemble import assemble_record
    from grit_pipeline.grounding import ground_batch
    from grit_pipeline.record import GRIT_SCHEMA
    from grit_pipeline.serialize import grounded_text
    from grit_pipeline.text import caption_spans, load_nlp

    nlp = load_nlp()
    output.mkdir(parents=True, exist_ok=True)
    timings = {"text_s": 0.0, "ground_s": 0.0}
    grit_schema = GRIT_SCHEMA.append(pa.field("grounded_text", pa.string())).append(
        pa.field("status", pa.string())).append(pa.field("source_shard", pa.string()))
    reject_schema = pa.schema([("key", pa.string()), ("status", pa.string()), ("reason", pa.string()),
                               ("stage", pa.string()), ("caption", pa.string()), ("url", pa.string()),
                               ("source_shard", pa.string())])
    for tar_path in sorted(shards.glob("*.tar")):
        samples = read_img2dataset_tar(tar_path)
        started = time.perf_counter()
        spans = caption_spans([s["caption"] for s in samples], nlp=nlp)
        timings["text_s"] += time.perf_counter() - started
        rows, rejects = [], []
        for start in range(0, len(samples), batch_size):
            batch = samples[start:start + batch_size]
            batch_spans = spans[start:start + batch_size]
            phrases = [[s["caption"][a:b] for a, b in sp.noun_chunks] if sp.error is None else []
                       for s, sp in zip(batch, batch_spans)]
            started = time.perf_counter()
            results = ground_batch([s["jpg"] for s in batch], phrases, detector, box_threshold=box_threshold,
                                   nms_iou=nms_iou)
            timings["ground_s"] += time.perf_counter() - started
            for sample, sp, result in zip(batch, batch_spans, results):
                if sp.error is not None:
                    rejects.append({"key": sample["key"], "status": status.BAD_CAPTION, "reason": sp.error,
                                    "stage": "text", "caption": sample["caption"], "url": sample["url"],
                                    "source_shard": tar_path.name})
                elif result.status == status.GROUNDED:
                    record = assemble_record(sample["key"], sample["caption"], result.width, result.height, sp,
                                             result.kept, url=sample["url"])
                    row = record.to_dict()
                    row.update(grounded_text=grounded_text(row, min_score=box_threshold), status=result.status,
                               source_shard=tar_path.name)
                    rows.append(row)
                else:
                    rejects.append({"key": sample["key"], "status": result.status, "reason": result.reason,
                                    "stage": "ground", "caption": sample["caption"], "url": sample["url"],
                                    "source_shard": tar_path.name})
        name = tar_path.stem
        pq.write_table(pa.Table.from_pylist(rows, grit_schema), output / f"{name}.parquet")
        pq.write_table(pa.Table.from_pylist(rejects, reject_schema), output / f"{name}_rejects.parquet")
    return timings


def run() -> dict:
    from grit_pipeline.detectors.base import get_detector
    from grit_pipeline.evaluate import evaluate_grounding
    from grit_pipeline.synth import write_synthetic_world

    images = int(os.environ.get("BENCH_DEMO_IMAGES", "1000"))
    seed = int(os.environ.get("BENCH_DEMO_SEED", str(HELD_OUT_SEED)))
    keep = os.environ.get("BENCH_DEMO_DIR")
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(keep) if keep else Path(tmp)
        synth = write_synthetic_world(root / "shards", images, seed=seed, shard_size=500)
        detector = get_detector("demo")
        timings = build_grit(root / "shards", root / "grit", detector)
        result = evaluate_grounding(root / "grit", root / "shards" / "truth")
    return {
        "images": images, "seed": seed, "box_threshold": 0.65, "nms_iou": 0.6,
        "synth_images_per_minute": synth["images_per_minute"],
        "ground_images_per_s": round(images / timings["ground_s"], 1) if timings["ground_s"] else None,
        "text_captions_per_s": round(images / timings["text_s"], 1) if timings["text_s"] else None,
        "noun_chunk_precision": result["noun_chunks"]["precision"],
        "noun_chunk_recall": result["noun_chunks"]["recall"],
        "ref_exp_precision": result["ref_exps"]["precision"],
        "ref_exp_recall": result["ref_exps"]["recall"],
        "evaluation": result,
    }


if __name__ == "__main__":
    print(json.dumps(run(), indent=2))
