"""`make demo`: the whole pipeline on the embedded default, end to end, on this machine.

1. `grit synth`: a few hundred synthetic images in img2dataset layout, with ground truth beside them
   (5% carry a real-download defect, so the rejects show too);
2. `grit run`: the fused pipeline on a local in-process Ray with the bundled demo detector;
3. `grit stats` and `grit evaluate-grounding` against the truth;
4. `grit gallery` and `grit report`, whose paths are printed at the end.

Environment overrides: GRIT_DEMO_IMAGES (default 300), GRIT_DEMO_DIR (default demo_out/demo),
GRIT_DEMO_ENGINE (auto | ray | local, default auto: the faster engine for the job, as `grit run` picks it).

The demo writes only under its own folder, and starts afresh by emptying only that folder, and only when a
marker file shows the demo made it. The Makefile's INPUT defaults to the demo's shards (read, never written);
its OUTPUT (demo_out/grit) is outside the demo's folder.
"""
from __future__ import annotations

import json
import os
import shutil
import sys
import time
from pathlib import Path

DEMO_SEED = 7  # not a seed the demo detector was trained on
SHARD_SIZE = 100
DEFECT_RATE = 0.05  # some failed downloads, broken JPEGs, empty/abstract captions: every reject path shows
DEFAULT_DIR = "demo_out/demo"
MARKER = "_grit_demo"  # in the demo's folder: the demo made it, so the demo may empty it


def _say(message: str) -> None:
    print(f"[demo] {message}", file=sys.stderr, flush=True)


def demo_folders(environ=os.environ) -> tuple[Path, Path, Path]:
    """The demo's folder (GRIT_DEMO_DIR), and in it the synthetic input shards and the GRIT build."""
    root = Path(environ.get("GRIT_DEMO_DIR") or DEFAULT_DIR)
    return root, root / "shards", root / "grit"


def reset_demo_folder(root: Path) -> None:
    """Empty the demo's own folder for a fresh run (create it the first time). A folder that exists, holds
    files and has no demo marker is refused (ValueError): the demo deletes only what it wrote."""
    if root.exists() and any(root.iterdir()) and not (root / MARKER).exists():
        raise ValueError(f"{root} holds files the demo did not write; set GRIT_DEMO_DIR to a new folder")
    for child in root.iterdir() if root.exists() else ():
        if child.name != MARKER:
            shutil.rmtree(child) if child.is_dir() and not child.is_symlink() else child.unlink()
    root.mkdir(parents=True, exist_ok=True)
    (root / MARKER).write_text("written by `make demo` (stages/demo.py), which empties this folder on each run\n")


def main() -> int:
    from grit_pipeline.evaluate import evaluate_grounding
    from grit_pipeline.pipeline import PipelineConfig, run_pipeline
    from grit_pipeline.pipeline.stats import collect_totals, drop_reasons, format_totals
    from grit_pipeline.synth.writer import write_synthetic_world
    from grit_pipeline.views.gallery import write_gallery
    from grit_pipeline.views.report import write_report

    images = int(os.environ.get("GRIT_DEMO_IMAGES", "300"))
    root, shards, build = demo_folders()
    engine = os.environ.get("GRIT_DEMO_ENGINE", "auto")
    started = time.monotonic()

    # A fresh world and build every time: the demo shows a whole run, not a resume.
    try:
        reset_demo_folder(root)
    except ValueError as error:
        print(f"[demo] error: {error}", file=sys.stderr)
        return 2
    _say(f"1/4 synthesising {images} images into {shards}")
    write_synthetic_world(shards, images=images, seed=DEMO_SEED, shard_size=SHARD_SIZE, defect_rate=DEFECT_RATE)

    _say(f"2/4 running the pipeline ({engine} engine, demo detector) into {build}")
    summary = run_pipeline(PipelineConfig(input=str(shards), output=str(build), detector="demo", engine=engine))

    _say("3/4 totals and quality against the synthetic truth")
    print(format_totals(collect_totals(str(build)), drop_reasons(str(build))))
    quality = evaluate_grounding(build, shards / "truth")
    print(json.dumps({level: quality[level] for level in ("noun_chunks", "ref_exps") if level in quality}, indent=1))
    kinds = quality["ref_exps"]["wrong_span_kinds"]
    print(f"precision / recall at IoU 0.5: noun chunks {quality['noun_chunks']['precision']} / "
          f"{quality['noun_chunks']['recall']}, referring expressions {quality['ref_exps']['precision']} / "
          f"{quality['ref_exps']['recall']} (wrong expressions: {kinds['too_short']} too short, "
          f"{kinds['too_long']} too long, {kinds['shifted']} shifted)")

    _say("4/4 gallery and report")
    gallery = write_gallery(build, sample=48)
    report = write_report(build, truth=shards / "truth")

    print()
    print(f"demo finished in {time.monotonic() - started:.0f} s: {summary.samples} samples, "
          f"statuses {dict(sorted(summary.counts.items()))}")
    print(f"  input shards (img2dataset layout): {shards}")
    print(f"  GRIT parquet + webdataset tars:    {build}")
    print(f"  gallery:                           {gallery}")
    print(f"  report:                            {report}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
