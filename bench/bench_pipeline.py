"""End-to-end pipeline on 2 cores: images/s with the demo and the noop detector, stage shares, peak memory.

Each run is a real `grit run` (Ray Data engine, local Ray started in-process, ``--num-cpus 2``) in a
subprocess; a sampler thread sums the memory of that process and all its descendants (driver, raylet,
GCS, Ray workers and actors) every SAMPLE_S seconds:

* ``peak_rss_mb``: the sum of resident set sizes (counts shared pages, e.g. the object store, once per
  process that maps them: an upper bound);
* ``peak_pss_mb``: the sum of proportional set sizes (shared pages split between their users: what the
  processes really cost the machine).

Input: one synthetic shard (``grit synth``) of SHARD_IMAGES images, copied under new keys to make 8 shards
of the same size. Memory is compared for 1 vs 8 shards with the noop detector (the pipeline's own memory;
a detector adds its model once per actor, whatever the number of shards). Stage costs come from the
build's ``_stats.json`` (seconds spent inside each stage, summed over samples); ``marginal_images_per_s``
is (images of the 8-shard run - images of the 1-shard run) / (difference of their wall times), i.e. the
rate once Ray is up and the models are loaded; ``marginal_stage_ms_per_image`` is the same difference for
each stage's seconds (the warm per-image cost: what the GPU-hours estimate in docs/cluster.md uses).
"""
from __future__ import annotations

import io
import json
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import threading
import time
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parents[1]
SHARD_IMAGES = int(os.environ.get("GRIT_BENCH_SHARD_IMAGES", "64"))
SHARDS = 8
NUM_CPUS = 2
SAMPLE_S = 0.5


def _grit(*args: str) -> list[str]:
    return [sys.executable, "-m", "grit_pipeline", *args]


def _env() -> dict[str, str]:
    env = dict(os.environ, NO_ALBUMENTATIONS_UPDATE="1", HF_HUB_OFFLINE="1", TOKENIZERS_PARALLELISM="false",
               RAY_USAGE_STATS_ENABLED="0")
    env.pop("RAY_ADDRESS", None)  # always a local Ray of its own
    return env


def copy_shard(source: Path, name: str, folder: Path) -> None:
    """Copy img2dataset shard ``source`` (NNNNN.tar + .parquet) to ``folder/name`` with keys renamed
    to start with ``name`` (keys stay unique across the copies)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    old = source.name

    def rename(key: str) -> str:
        return name + key[len(old):] if key.startswith(old) else f"{name}{key}"

    table = pq.read_table(source.with_suffix(".parquet"))
    keys = [rename(k) for k in table.column("key").to_pylist()]
    table = table.set_column(table.schema.get_field_index("key"), "key", pa.array(keys, pa.string()))
    pq.write_table(table, folder / f"{name}.parquet")
    with tarfile.open(source.with_suffix(".tar")) as src, tarfile.open(folder / f"{name}.tar", "w") as dst:
        for member in src.getmembers():
            key, ext = member.name.split(".", 1)
            data = src.extractfile(member).read()
            if ext == "json":
                meta = json.loads(data)
                meta["key"] = rename(meta["key"])
                data = json.dumps(meta).encode()
            info = tarfile.TarInfo(f"{rename(key)}.{ext}")
            info.size = len(data)
            dst.addfile(info, io.BytesIO(data))


class TreeMemory:
    """Samples the summed RSS/PSS of a process and its descendants in a thread; keeps the peaks."""

    def __init__(self, pid: int):
        self.root = psutil.Process(pid)
        self.peak_rss = self.peak_pss = 0
        self.peak_processes = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()

    def _loop(self):
        while not self._stop.is_set():
            try:
                processes = [self.root, *self.root.children(recursive=True)]
            except psutil.NoSuchProcess:
                return
            rss = pss = 0
            for process in processes:
                try:
                    info = process.memory_full_info()
                except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
                    continue
                rss += info.rss
                pss += getattr(info, "pss", info.rss)
            self.peak_rss, self.peak_pss = max(self.peak_rss, rss), max(self.peak_pss, pss)
            self.peak_processes = max(self.peak_processes, len(processes))
            self._stop.wait(SAMPLE_S)


def run_pipeline(input_dir: Path, output_dir: Path, detector: str) -> dict:
    """One `grit run` with memory sampling; returns wall time, images, stage seconds and peaks."""
    command = _grit("run", "--input", str(input_dir), "--output", str(output_dir), "--detector", detector,
                    "--engine", "ray", "--num-cpus", str(NUM_CPUS), "--no-progress", "--overwrite")
    started = time.perf_counter()
    with open(output_dir.parent / f"{output_dir.name}.log", "w") as log:
        process = subprocess.Popen(command, cwd=ROOT, env=_env(), stdout=log, stderr=subprocess.STDOUT)
        with TreeMemory(process.pid) as memory:
            code = process.wait()
    wall = time.perf_counter() - started
    if code != 0:
        log_text = (output_dir.parent / f"{output_dir.name}.log").read_text()[-3000:]
        raise RuntimeError(f"grit run failed ({code}):\n{log_text}")
    totals = json.loads((output_dir / "_stats.json").read_text())
    images = int(totals["samples"])
    timings = {k: float(v) for k, v in (totals.get("timings_s") or {}).items()}
    text_s = timings.get("noun_chunks", 0.0) + timings.get("expand", 0.0)
    ground_s = timings.get("ground", 0.0)
    stage_total = sum(timings.values()) or 1.0
    return {
        "detector": detector,
        "shards": int(totals.get("shards", 0)),
        "images": images,
        "grounded": int(totals["counts"].get("grounded", 0)),
        "wall_s": round(wall, 2),
        "images_per_s": round(images / wall, 2),
        "stage_s": {k: round(v, 3) for k, v in sorted(timings.items())},
        "text_share": round(text_s / stage_total, 3),
        "ground_share": round(ground_s / stage_total, 3),
        "text_ms_per_image": round(1000 * text_s / max(images, 1), 2),
        "ground_ms_per_image": round(1000 * ground_s / max(images, 1), 2),
        "peak_rss_mb": round(memory.peak_rss / 2**20, 1),
        "peak_pss_mb": round(memory.peak_pss / 2**20, 1),
        "peak_processes": memory.peak_processes,
    }


def run() -> dict:
    work = Path(tempfile.mkdtemp(prefix="grit-bench-pipeline-"))
    try:
        base = work / "base"
        subprocess.run(_grit("synth", "--output", str(base), "--images", str(SHARD_IMAGES),
                             "--shard-size", str(SHARD_IMAGES), "--seed", "3"),
                       cwd=ROOT, env=_env(), check=True, capture_output=True)
        one, eight = work / "one_shard", work / "eight_shards"
        one.mkdir()
        eight.mkdir()
        copy_shard(base / "00000", "00000", one)
        for index in range(SHARDS):
            copy_shard(base / "00000", f"{index:05d}", eight)

        noop_1 = run_pipeline(one, work / "out_noop_1", "noop")
        noop_8 = run_pipeline(eight, work / "out_noop_8", "noop")
        demo_1 = run_pipeline(one, work / "out_demo_1", "demo")
        demo_8 = run_pipeline(eight, work / "out_demo_8", "demo")

        def marginal(small, big):
            extra_s = big["wall_s"] - small["wall_s"]
            return round((big["images"] - small["images"]) / extra_s, 2) if extra_s > 0 else None

        def marginal_stage_ms(small, big):
            # Per-image stage cost once the workers are warm: model loads and first imports in each Ray
            # worker land in both runs and cancel out.
            extra = big["images"] - small["images"]
            return {stage: round(1000 * (big["stage_s"][stage] - small["stage_s"].get(stage, 0.0)) / extra, 2)
                    for stage in big["stage_s"]}

        return {
            "cpus": NUM_CPUS,
            "machine_load_1min": round(os.getloadavg()[0], 2),  # other processes sharing the 2 cores
            "shard_images": SHARD_IMAGES,
            "noop": {"1_shard": noop_1, "8_shards": noop_8, "marginal_images_per_s": marginal(noop_1, noop_8),
                     "marginal_stage_ms_per_image": marginal_stage_ms(noop_1, noop_8)},
            "demo": {"1_shard": demo_1, "8_shards": demo_8, "marginal_images_per_s": marginal(demo_1, demo_8),
                     "marginal_stage_ms_per_image": marginal_stage_ms(demo_1, demo_8)},
            "peak_pss_ratio_8_vs_1_shards": {
                "noop": round(noop_8["peak_pss_mb"] / noop_1["peak_pss_mb"], 3),
                "demo": round(demo_8["peak_pss_mb"] / demo_1["peak_pss_mb"], 3),
            },
        }
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    print(json.dumps(run(), indent=2))
