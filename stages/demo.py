"""`make demo`: the whole pipeline on the embedded default, end to end, on this machine.

1. `grit synth`: a few hundred synthetic images in img2dataset layout, with ground truth beside them
   (5% carry a real-download defect, so the rejects show too);
2. `grit run`: the fused pipeline on a local in-process Ray with the bundled demo detector;
3. `grit stats` and `grit evaluate-grounding` against the truth;
4. `grit gallery` and `grit report`, whose paths are printed at the end.

Environment overrides: GRIT_DEMO_IMAGES (default 300), GRIT_DEMO_DIR (default demo_out),
GRIT_DEMO_ENGINE (ray | local, default ray).
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


def _say(message: str) -> None:
    print(f"[demo] {message}", file=sys.stderr, flush=True)


def main() -> int:
    from grit_pipeline.evaluate import evaluate_grounding
    from grit_pipeline.pipeline import PipelineConfig, run_pipeline
    from grit_pipeline.pipeline.stats import collect_totals, drop_reasons, format_totals
    from grit_pipeline.synth.writer import write_synthetic_world
    from grit_pipeline.views.gallery import write_gallery
    from grit_pipeline.views.report import write_report

    images = int(os.environ.get("GRIT_DEMO_IMAGES", "300"))
    root = Path(os.environ.get("GRIT_DEMO_DIR", "demo_out"))
    engine = os.environ.get("GRIT_DEMO_ENGINE", "ray")
    shards, build = root / "shards", root / "grit"
    started = time.monotonic()

    # A fresh world and build every time: the demo shows a whole run, not a resume.
    for folder in (shards, build):
        shutil.rmtree(folder, ignore_errors=True)
    _say(f"1/4 synthesising {images} images into {shards}")
    write_synthetic_world(shards, images=images, seed=DEMO_SEED, shard_size=SHARD_SIZE, defect_rate=DEFECT_RATE)

    _say(f"2/4 running the pipeline ({engine} engine, demo detector) into {build}")
    summary = run_pipeline(PipelineConfig(input=str(shards), output=str(build), detector="demo", engine=engine))

    _say("3/4 totals and quality against the synthetic truth")
    print(format_totals(collect_totals(str(build)), drop_reasons(str(build))))
    quality = evaluate_grounding(build, shards / "truth")
    print(json.dumps({level: quality[level] for level in ("noun_chunks", "ref_exps") if level in quality}, indent=1))

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
