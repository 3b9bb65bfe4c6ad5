"""``make e2e``: the whole loop at small scale, as a benchmark (not a CI test).

synthetic shards (``grit synth``) -> GRIT build with the demo detector (``grit run``) -> ``kosmos train``
(tiny preset, CPU) -> ``kosmos predict rec`` + ``kosmos score rec`` on held-out synthetic images converted
to MDETR RefCOCO format. Prints the learning curve (loss on location tokens by step), the share of
predictions that decode to a box, REC accuracy and the accuracy of always answering the training set's mean
box, as one JSON object (also written to OUT/e2e.json). Rerunning resumes every stage.

Settings (environment): E2E_DIR (e2e_out), E2E_TRAIN_IMAGES (4000), E2E_HELDOUT_IMAGES (100),
E2E_STEPS (2500), E2E_BATCH (16), E2E_THREADS (1), E2E_GROUNDING_PROB (1.0).
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path


def _env(name: str, default):
    return type(default)(os.environ.get(name, default))


def _run(argv: list[str], log: Path) -> float:
    """Run a command (its output appended to ``log``); returns seconds; raises on failure."""
    started = time.perf_counter()
    print(f"[e2e] $ {' '.join(argv)}", file=sys.stderr, flush=True)
    env = {**os.environ, "NO_ALBUMENTATIONS_UPDATE": "1", "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    with open(log, "a") as handle:
        code = subprocess.call(argv, stdout=handle, stderr=subprocess.STDOUT, env=env)
    if code != 0:
        raise SystemExit(f"[e2e] command failed ({code}); see {log}")
    return round(time.perf_counter() - started, 1)


def training_boxes(grit_dir: Path, min_score: float = 0.65):
    """The boxes the model was trained on (the serializer's selection over the build's records)."""
    from grit_pipeline.serialize import select_entities

    from kosmos.data import expand_urls, iter_records

    for record in iter_records(expand_urls(str(grit_dir))):
        for entity in select_entities(record, min_score=min_score):
            yield from entity.boxes


def main() -> int:
    out = Path(_env("E2E_DIR", "e2e_out")).resolve()
    train_images, heldout_images = _env("E2E_TRAIN_IMAGES", 4000), _env("E2E_HELDOUT_IMAGES", 100)
    steps, batch, threads = _env("E2E_STEPS", 2500), _env("E2E_BATCH", 16), _env("E2E_THREADS", 1)
    grounding_prob = _env("E2E_GROUNDING_PROB", 1.0)
    out.mkdir(parents=True, exist_ok=True)
    log = out / "e2e.log"
    grit = [sys.executable, "-m", "grit_pipeline"]
    kosmos = [sys.executable, "-m", "kosmos.cli"]
    timings = {}

    if not (out / "synth" / "truth").is_dir():
        timings["synth_s"] = _run(grit + ["synth", "--output", str(out / "synth"), "--images", str(train_images),
                                          "--seed", "0", "--shard-size", "250"], log)
    timings["grit_run_s"] = _run(grit + ["run", "--input", str(out / "synth"), "--output", str(out / "grit"),
                                         "--engine", "local", "--detector", "demo", "--no-progress"], log)
    if not (out / "heldout" / "truth").is_dir():
        timings["heldout_synth_s"] = _run(grit + ["synth", "--output", str(out / "heldout"), "--images",
                                                  str(heldout_images), "--seed", "1", "--shard-size", "250"], log)
    refcoco = out / "refcoco" / "finetune_refcoco_val.json"
    if not refcoco.exists():
        _run(kosmos + ["synth-refcoco", "--synth", str(out / "heldout"), "--output", str(out / "refcoco")], log)

    train_argv = kosmos + [
        "train", "--data", str(out / "grit"), "--output", str(out / "run"), "--preset", "tiny",
        "--steps", str(steps), "--batch-size", str(batch), "--threads", str(threads), "--loader-workers", "1",
        "--image-mode", "square", "--grounding-prob", str(grounding_prob), "--log-every", "50",
        "--checkpoint-every", "500"]
    if (out / "run" / "checkpoints" / "latest").exists():
        train_argv.append("--resume")
    timings["train_s"] = _run(train_argv, log)

    predictions = out / "rec_predictions.jsonl"
    timings["predict_s"] = _run(kosmos + ["predict", "rec", "--model", str(out / "run"), "--images",
                                          str(out / "refcoco" / "images"), "--annotations", str(refcoco),
                                          "--output", str(predictions), "--threads", str(threads)], log)
    score = subprocess.run(kosmos + ["score", "rec", "--predictions", str(predictions), "--annotations",
                                     str(refcoco)], capture_output=True, text=True, check=True)
    rec = json.loads(score.stdout.strip().splitlines()[-1])

    from kosmos.metrics import mean_box_accuracy
    from kosmos.train import read_log

    annotations = json.loads(refcoco.read_text())
    baseline = mean_box_accuracy(training_boxes(out / "grit"), annotations)
    entries = read_log(out / "run")
    decoded = rec["total"] - rec["no_box"] - rec["missing_predictions"]
    report = {
        "learning_curve": [{"step": e["step"], "loc_loss": e["loc_loss"], "loss": e["loss"]} for e in entries],
        "train_images": train_images, "heldout_expressions": rec["total"], "steps": steps, "batch_size": batch,
        "share_decoding_to_a_box": round(100.0 * decoded / rec["total"], 2) if rec["total"] else 0.0,
        "rec_accuracy": round(rec["accuracy"], 2),
        "mean_box_baseline_accuracy": round(baseline["accuracy"], 2),
        "mean_box": [round(v, 4) for v in baseline["mean_box"]],
        "tokens_per_s_last": entries[-1]["tokens_per_s"] if entries else None,
        "timings_s": timings,
        "skipped_samples": entries[-1]["skipped"] if entries else {},
    }
    (out / "e2e.json").write_text(json.dumps(report, indent=2))
    print("step  loc_loss", file=sys.stderr)
    for e in report["learning_curve"]:
        print(f"{e['step']:5d}  {e['loc_loss']}", file=sys.stderr)
    print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
