"""``make mixture-study``: what the training mixture does to learning, on CPU (a benchmark, not a test).

Two ``make e2e LEVEL=1`` runs, one after the other (each with the machine to itself; STUDY_SIDE_BY_SIDE=1 runs them
at the same time instead, under the same load), tiny preset, the same minutes each: GRIT only, and
GRIT + image-caption pairs + text + interleaved documents (``kosmos train --mix``, the paper's default
proportions), both from the synthetic world (``kosmos synth-mixture``). Reports each run's held-out REC (test world)
and its loss on a held-out text corpus of the world (``kosmos text-loss``), as one JSON object.
Settings (environment): STUDY_DIR (e2e_out/mixture_study), STUDY_MINUTES (10), STUDY_SIDE_BY_SIDE (0), STUDY_SEED (0:
the worlds' seed, ``make e2e``'s; every seed draws other images, captions, documents and held-out expressions), plus
any E2E_* setting.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from kosmos.e2e import check_world_seed


def main() -> int:
    out = Path(os.environ.get("STUDY_DIR", "e2e_out/mixture_study")).resolve()
    minutes = os.environ.get("STUDY_MINUTES", "10")
    seed = os.environ.get("STUDY_SEED", "0")
    if not seed.isdigit():
        raise SystemExit(f"[study] STUDY_SEED must be a whole number, got {seed!r}")
    out.mkdir(parents=True, exist_ok=True)
    world = out / "world"
    check_world_seed(out, int(seed), world)  # a rerun reuses the worlds it finds
    kosmos = [sys.executable, "-m", "kosmos.cli"]
    if not (world / "obelics" / "docs.parquet").exists():
        subprocess.run(kosmos + ["synth-mixture", "--output", str(world), "--images", "4000", "--level", "1",
                                 "--text-documents", "4000", "--documents", "1000", "--seed", seed], check=True,
                       stdout=subprocess.DEVNULL)
    mix = (f"--mix captions={world / 'captions'} text={world / 'text'} "
           f"interleaved={world / 'mmc4' / 'docs.jsonl'},{world / 'obelics' / 'docs.parquet'} "
           f"--images-from {world / 'mmc4' / 'images'}")
    runs = {"grit_only": "", "mixture": mix}
    procs = {}
    side_by_side = os.environ.get("STUDY_SIDE_BY_SIDE") == "1"
    for name, args in runs.items():
        env = {**os.environ, "E2E_LEVEL": "1", "E2E_DIR": str(out / name), "E2E_MINUTES": minutes, "E2E_SEED": seed,
               "E2E_TRAIN_ARGS": (os.environ.get("E2E_TRAIN_ARGS", "") + " " + args).strip()}
        print(f"[study] {name}: log {out / name / 'e2e.log'}", file=sys.stderr, flush=True)
        (out / name).mkdir(parents=True, exist_ok=True)
        procs[name] = subprocess.Popen([sys.executable, "-m", "kosmos.e2e"], env=env,
                                       stdout=open(out / name / "study_stdout.json", "w"))
        if not side_by_side:
            procs[name].wait()
    results = {}
    for name, proc in procs.items():
        if proc.wait() != 0:
            raise SystemExit(f"[study] {name} failed; see {out / name / 'e2e.log'}")
        e2e = json.loads((out / name / "e2e.json").read_text())
        model = out / name / "run" / "best"
        loss = subprocess.run(kosmos + ["text-loss", "--model", str(model), "--data", str(world / "text_heldout"),
                                        "--threads", "1"], check=True, capture_output=True, text=True)
        results[name] = {"heldout_rec": e2e.get("rec_accuracy"), "heldout_text_loss": json.loads(loss.stdout),
                         "steps_done": e2e.get("steps_done"),
                         "validation_rec_curve": e2e.get("validation_rec_curve"),
                         "mean_box_baseline_accuracy": e2e.get("mean_box_baseline_accuracy")}
    g, m = results["grit_only"], results["mixture"]
    results["world_seed"] = int(seed)
    results["rec_ratio"] = round(m["heldout_rec"] / g["heldout_rec"], 3) if g["heldout_rec"] else None
    results["text_loss_ratio"] = round(m["heldout_text_loss"]["text_loss"] / g["heldout_text_loss"]["text_loss"], 3)
    (out / "study.json").write_text(json.dumps(results, indent=2))
    print(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
