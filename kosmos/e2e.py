"""``make e2e LEVEL=N``: the whole loop at small scale on a curriculum world, as a benchmark (not a CI test).

synthetic shards (``grit synth --level N``) -> GRIT build with the demo detector (``grit run``) ->
``kosmos train`` (tiny preset, CPU, a time budget, held-out REC on a validation world every few hundred steps,
best model kept) -> ``kosmos predict rec`` (best model) + ``kosmos score rec`` on held-out synthetic images of
another seed, converted to MDETR RefCOCO format. Prints the learning curve (location-token loss and accuracy,
validation REC by step), the share of predictions that decode to a box, REC accuracy and the accuracy of
always answering the training set's mean box, as one JSON object (also written to OUT/e2e.json). Rerunning
resumes every stage.

Settings (environment): E2E_LEVEL (3), E2E_DIR (e2e_out/levelN), E2E_TRAIN_IMAGES (4000 / 16000 / 12000 for levels 1 / 2 / 3),
E2E_HELDOUT_IMAGES (200), E2E_VAL_IMAGES (100), E2E_MINUTES (training budget: 10 / 15 / 20 for levels 1 / 2 / 3),
E2E_STEPS (100000: the budget ends training), E2E_BATCH (16), E2E_THREADS (1), E2E_GROUNDING_PROB (1.0),
E2E_EVAL_EVERY (500), E2E_INIT (a checkpoint's model dir to start from, e.g. the level N-1 run's best/),
E2E_LR (preset default), E2E_TRAIN_ARGS (more `kosmos train` flags), E2E_SEED (0: the training world's seed; the
held-out world's is E2E_SEED + 1, the validation world's E2E_SEED + 2).
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

from kosmos.presets import get_preset
from kosmos.train import DEFAULT_LOCATION_LOSS_WEIGHT, DEFAULT_LOCATION_SIGMA, read_log


def _env(name: str, default):
    value = os.environ.get(name, default)
    try:
        return type(default)(value)
    except ValueError:
        raise SystemExit(f"[e2e] {name} must be a {type(default).__name__}, got {value!r}") from None


PROGRESS_EVERY_S = 30.0  # how often a long command's progress (its log's last line) is shown


def _run(argv: list[str], log: Path) -> float:
    """Run a command (its output appended to ``log``, its last line shown every PROGRESS_EVERY_S); returns
    seconds; raises on failure."""
    started = time.perf_counter()
    print(f"[e2e] $ {' '.join(argv)}", file=sys.stderr, flush=True)
    env = {**os.environ, "NO_ALBUMENTATIONS_UPDATE": "1", "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    with open(log, "a") as handle:
        process = subprocess.Popen(argv, stdout=handle, stderr=subprocess.STDOUT, env=env)
        while (code := _wait(process, PROGRESS_EVERY_S)) is None:
            minutes = (time.perf_counter() - started) / 60
            print(f"[e2e]   {minutes:.1f} min: {_last_line(log)[:160]}", file=sys.stderr, flush=True)
    if code != 0:
        raise SystemExit(f"[e2e] command failed ({code}); see {log}")
    return round(time.perf_counter() - started, 1)


def _wait(process: subprocess.Popen, seconds: float) -> int | None:
    try:
        return process.wait(timeout=seconds)
    except subprocess.TimeoutExpired:
        return None


def _last_line(log: Path) -> str:
    with open(log, "rb") as handle:
        handle.seek(max(0, log.stat().st_size - 4096))
        lines = [line.strip() for line in handle.read().decode("utf-8", "replace").splitlines() if line.strip()]
    return lines[-1] if lines else "(no output yet)"


def training_boxes(grit_dir: Path, min_score: float = 0.65):
    """The boxes the model was trained on (the serializer's selection over the build's records)."""
    from grit_pipeline.serialize import select_entities

    from kosmos.sources.grounded import iter_records
    from kosmos.shards import expand_urls

    for record in iter_records(expand_urls(str(grit_dir))):
        for entity in select_entities(record, min_score=min_score):
            yield from entity.boxes


# Per-level defaults, measured (docs/companion.md): level 2 from level 1's model (E2E_INIT) learns to pick the named
# object in 15 minutes when it sees 16,000 images (on 4,000 it memorises them); level 3 reads richer captions.
TRAIN_MINUTES = {1: 10.0, 2: 15.0, 3: 20.0}
TRAIN_IMAGES = {1: 4000, 2: 16000, 3: 12000}


def check_world_seed(out: Path, seed: int, built: Path) -> None:
    """Record the worlds' seed in ``out``; refuse, in one line, a rerun there with another seed, since the worlds
    already built (``built`` exists) would be reused. Worlds built before seeds were recorded count as seed 0."""
    marker = out / "world_seed.txt"
    recorded = marker.read_text().strip() if marker.exists() else ("0" if built.exists() else None)
    if recorded is not None and recorded != str(seed):
        raise SystemExit(f"{out} holds the worlds of seed {recorded}, not {seed}; give another directory")
    marker.write_text(f"{seed}\n")


def main() -> int:
    level = _env("E2E_LEVEL", 3)
    if level not in TRAIN_MINUTES:
        raise SystemExit(f"[e2e] LEVEL must be 1, 2 or 3, got {level}")
    out = Path(_env("E2E_DIR", f"e2e_out/level{level}")).resolve()
    train_images, heldout_images = _env("E2E_TRAIN_IMAGES", TRAIN_IMAGES[level]), _env("E2E_HELDOUT_IMAGES", 200)
    val_images, minutes = _env("E2E_VAL_IMAGES", 100), _env("E2E_MINUTES", TRAIN_MINUTES[level])
    steps, batch, threads = _env("E2E_STEPS", 100_000), _env("E2E_BATCH", 16), _env("E2E_THREADS", 1)
    grounding_prob, eval_every = _env("E2E_GROUNDING_PROB", 1.0), _env("E2E_EVAL_EVERY", 500)
    init, lr, extra = _env("E2E_INIT", ""), _env("E2E_LR", ""), _env("E2E_TRAIN_ARGS", "").split()
    seed = _env("E2E_SEED", 0)
    out.mkdir(parents=True, exist_ok=True)
    check_world_seed(out, seed, out / "synth" / "truth")
    log = out / "e2e.log"
    print(f"[e2e] level {level} in {out}; every command's output goes to {log} (tail -f it to follow)",
          file=sys.stderr, flush=True)
    grit = [sys.executable, "-m", "grit_pipeline"]
    kosmos = [sys.executable, "-m", "kosmos.cli"]
    timings = {}
    level_flag = ["--level", str(level)]

    if not (out / "synth" / "truth").is_dir():
        timings["synth_s"] = _run(grit + ["synth", "--output", str(out / "synth"), "--images", str(train_images),
                                          "--seed", str(seed), "--shard-size", "250"] + level_flag, log)
    timings["grit_run_s"] = _run(grit + ["run", "--input", str(out / "synth"), "--output", str(out / "grit"),
                                         "--engine", "local", "--detector", "demo", "--no-progress"], log)
    # held-out test world (seed + 1, scored once at the end) and validation world (seed + 2, picks the best model)
    for name, offset, images in (("heldout", 1, heldout_images), ("val", 2, val_images)):
        if not (out / name / "truth").is_dir():
            timings[f"{name}_synth_s"] = _run(grit + ["synth", "--output", str(out / name), "--images", str(images),
                                                      "--seed", str(seed + offset), "--shard-size", "250"]
                                              + level_flag, log)
        if not (out / f"refcoco_{name}" / "finetune_refcoco_val.json").exists():
            _run(kosmos + ["synth-refcoco", "--synth", str(out / name), "--output", str(out / f"refcoco_{name}")],
                 log)
    refcoco = out / "refcoco_heldout" / "finetune_refcoco_val.json"

    train_argv = kosmos + [
        "train", "--data", str(out / "grit"), "--output", str(out / "run"), "--preset", "tiny",
        "--steps", str(steps), "--batch-size", str(batch), "--threads", str(threads), "--loader-workers", "1",
        "--image-mode", "square", "--grounding-prob", str(grounding_prob), "--log-every", "50",
        "--checkpoint-every", "500", "--max-minutes", str(minutes), "--eval-every", str(eval_every),
        "--eval-data", str(out / "refcoco_val")] + extra
    if init:
        # a curriculum start, not a fine-tune of a release model: the from-scratch recipe
        train_argv += ["--init", init, "--lr", lr or str(get_preset("tiny").lr), "--warmup-steps", "20", "--location-loss-weight",
                       str(DEFAULT_LOCATION_LOSS_WEIGHT), "--location-sigma", str(DEFAULT_LOCATION_SIGMA)]
    elif lr:
        train_argv += ["--lr", lr]
    run_dir = out / "run"
    if (run_dir / "checkpoints" / "latest").exists():
        train_argv.append("--resume")
    elif run_dir.exists():  # stopped before its first checkpoint: nothing to resume, start over
        train_argv.append("--overwrite")
    if not (run_dir / "done").exists():
        timings["train_s"] = _run(train_argv, log)
        (run_dir / "done").write_text("")

    predictions = out / "rec_predictions.jsonl"
    model = run_dir / "best" if (run_dir / "best").is_dir() else run_dir
    timings["predict_s"] = _run(kosmos + ["predict", "rec", "--model", str(model), "--images",
                                          str(refcoco.parent / "images"), "--annotations", str(refcoco),
                                          "--output", str(predictions), "--threads", str(threads)], log)
    score = subprocess.run(kosmos + ["score", "rec", "--predictions", str(predictions), "--annotations",
                                     str(refcoco)], capture_output=True, text=True, check=True)
    rec = json.loads(score.stdout.strip().splitlines()[-1])

    from kosmos.evaluate.metrics.grounding import mean_box_accuracy

    annotations = json.loads(refcoco.read_text())
    baseline = mean_box_accuracy(training_boxes(out / "grit"), annotations)
    entries = read_log(run_dir)
    evals = read_log(run_dir, "eval_log.jsonl")
    decoded = rec["total"] - rec["no_box"] - rec["missing_predictions"]
    report = {
        "level": level,
        "world_seed": seed,
        "learning_curve": [{"step": e["step"], "loc_loss": e["loc_loss"], "loc_acc": e.get("loc_acc"),
                            "loss": e["loss"]} for e in entries],
        "validation_rec_curve": [{"step": e["step"], "rec": e["eval_rec"]} for e in evals],
        "best_model": str(model), "init": init or None, "train_minutes_budget": minutes,
        "steps_done": entries[-1]["step"] if entries else 0,
        "train_images": train_images, "heldout_expressions": rec["total"], "batch_size": batch,
        "share_decoding_to_a_box": round(100.0 * decoded / rec["total"], 2) if rec["total"] else 0.0,
        "rec_accuracy": round(rec["accuracy_pct"], 2),
        "mean_box_baseline_accuracy": round(baseline["accuracy_pct"], 2),
        "mean_box": [round(v, 4) for v in baseline["mean_box"]],
        "tokens_per_s_last": entries[-1]["tokens_per_s"] if entries else None,
        "timings_s": timings,
        "skipped_samples": entries[-1]["skipped"] if entries else {},
    }
    (out / "e2e.json").write_text(json.dumps(report, indent=2))
    curve = report["learning_curve"]
    print("step  loc_loss  loc_acc   (every logged step in e2e.json)", file=sys.stderr)
    rows = curve[:: max(1, len(curve) // 10)]  # about ten rows, and the last step
    for e in rows + [e for e in curve[-1:] if e not in rows]:
        print(f"{e['step']:5d}  {e['loc_loss']}  {e['loc_acc']}", file=sys.stderr)
    summary = {k: v for k, v in report.items() if k not in ("learning_curve", "validation_rec_curve")}
    print(json.dumps(summary, indent=1))
    print(f"[e2e] full report with the learning curves: {out / 'e2e.json'}; log: {log}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
