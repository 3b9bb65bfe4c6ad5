"""The Ray engine's driver: peak RSS and CPU seconds per 1,000 samples, workers writing vs the driver writing.

``after``: the engine as it is (workers write parts, a worker commits each shard; the driver receives one
small row per part). ``before``: the former data path, kept here (``collect_on_driver``, patched in for
``engine_ray.run_plan``): the driver receives every finished sample, image bytes included, and writes the
shards. Both on the same synthetic input at 256 px and at 2048 px images (SHARDS shards of
SHARD_IMAGES noisy JPEGs each; noop detector, so images are decoded but no model runs).

Each measurement is a fresh child process (``python -m bench.bench_driver --child ...``) that starts a
local Ray (4 logical CPUs), runs the pipeline once on a tiny warm-up input (one-time imports and Ray Data
set-up), then measures only around ``run_pipeline``: ``rss_growth_mb`` is the driver's peak RSS during the
run (sampled every 20 ms) minus its RSS just before; ``peak_rss_mb`` the peak itself;
``cpu_s_per_1000`` the driver process's CPU seconds (all its threads) per 1,000 samples. The Ray workers
are not the driver and are not counted.
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

ROOT = Path(__file__).resolve().parents[1]
SHARDS = int(os.environ.get("GRIT_BENCH_DRIVER_SHARDS", "4"))
SHARD_IMAGES = int(os.environ.get("GRIT_BENCH_DRIVER_SHARD_IMAGES", "32"))
SIZES = (256, 2048)
MODES = ("before", "after")


def noisy_jpeg(seed: int, size: int) -> bytes:
    """A photo-like JPEG (smooth colours plus grain): about as large per pixel as real photos."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:size, 0:size].astype(np.float32) / size
    base = np.stack([x * 255, y * 255, (1 - x) * 200 + 30], axis=-1)
    pixels = np.clip(base + rng.normal(0, 12, (size, size, 3)), 0, 255).astype(np.uint8)
    out = io.BytesIO()
    Image.fromarray(pixels).save(out, format="JPEG", quality=85)
    return out.getvalue()


def write_input(folder: Path, size: int, shards: int = SHARDS, shard_images: int = SHARD_IMAGES) -> int:
    """img2dataset shards of ``shard_images`` images of size x size pixels; returns the input bytes."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    folder.mkdir(parents=True, exist_ok=True)
    images = [noisy_jpeg(i, size) for i in range(4)]  # four distinct images, reused (encoding is slow)
    total = 0
    for shard in range(shards):
        rows = []
        with tarfile.open(folder / f"{shard:05d}.tar", "w") as tar:
            for i in range(shard_images):
                key = f"{shard:05d}{i:04d}"
                meta = {"key": key, "caption": "a red dog on the grass next to a blue car", "status": "success",
                        "url": f"http://example.invalid/{key}.jpg", "error_message": None, "width": size,
                        "height": size, "original_width": size, "original_height": size}
                rows.append(meta)
                image = images[i % len(images)]
                total += len(image)
                for ext, data in (("jpg", image), ("txt", meta["caption"].encode()), ("json", json.dumps(meta).encode())):
                    info = tarfile.TarInfo(f"{key}.{ext}")
                    info.size = len(data)
                    tar.addfile(info, io.BytesIO(data))
        pq.write_table(pa.Table.from_pylist(rows), folder / f"{shard:05d}.parquet")
    return total


def collect_on_driver(config, job, operators, todo: list[str], cpus: float, memory: float, num_gpus: float) -> None:
    """The former data path, in place of ``engine_ray.run_plan``: the operators through Ray Data with the
    last one not writing, every finished sample to the driver, which commits each shard once it holds all
    of it (``ShardJob.write``, as the local engine does)."""
    from grit_pipeline.pipeline.ray_data_streaming import build_dataset
    from grit_pipeline.pipeline.ray_operators import Operator
    from grit_pipeline.pipeline.sample import table_to_rows

    readers = [Operator(op.stages, op.reads, writes=False, gpu=op.gpu) for op in operators]
    buffers: dict[str, list[dict]] = {}
    dataset = build_dataset(config, job, readers, todo, num_gpus)
    for table in dataset.iter_batches(batch_format="pyarrow", batch_size=None, prefetch_batches=1):
        for row in table_to_rows(table):
            buffer = buffers.setdefault(row["source_shard"], [])
            buffer.append(row)
            if len(buffer) == row["shard_total"]:
                job.write(row["source_shard"], buffers.pop(row["source_shard"]))
    for shard in todo:
        if shard not in job.summary.shards_written:
            job.write(shard, job.source.read(shard))


def child(mode: str, input_dir: str, output_dir: str) -> dict:
    """In a fresh process: start Ray, then run the pipeline and measure this (driver) process only."""
    import psutil

    from grit_pipeline.pipeline import PipelineConfig, run_pipeline
    from grit_pipeline.pipeline import engine_ray
    from grit_pipeline.pipeline.engine_ray import init_ray

    if mode == "before":
        engine_ray.run_plan = collect_on_driver
    config = PipelineConfig(input=input_dir, output=output_dir, detector="noop", num_cpus=2, progress=False,
                            text_batch_size=16, ground_batch_size=8)
    init_ray(config)
    # Warm-up: a tiny run first, so one-time costs (imports, Ray Data's executor, actor classes) are paid
    # before the baseline and the growth measured below is the data path's own.
    warm = Path(output_dir).with_name(Path(output_dir).name + "-warmup")
    write_input(warm / "in", size=64, shards=1, shard_images=4)
    run_pipeline(config.replace(input=str(warm / "in"), output=str(warm / "out")))
    me = psutil.Process()
    baseline = me.memory_info().rss
    peak = [baseline]
    stop = threading.Event()

    def sample():
        while not stop.is_set():
            peak[0] = max(peak[0], me.memory_info().rss)
            stop.wait(0.02)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    cpu, wall = time.process_time(), time.perf_counter()
    summary = run_pipeline(config)
    cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
    stop.set()
    sampler.join()
    peak[0] = max(peak[0], me.memory_info().rss)
    samples = summary.samples
    return {"samples": samples, "peak_rss_mb": round(peak[0] / 2**20, 1),
            "rss_growth_mb": round((peak[0] - baseline) / 2**20, 1),
            "cpu_s_per_1000": round(cpu / samples * 1000, 2), "wall_s": round(wall, 1),
            "cpu_share_of_wall": round(cpu / wall, 3)}  # Ray Data's scheduling loop costs per second, not per sample


def run() -> dict:
    env = dict(os.environ, NO_ALBUMENTATIONS_UPDATE="1", HF_HUB_OFFLINE="1", TOKENIZERS_PARALLELISM="false",
               RAY_USAGE_STATS_ENABLED="0", PYTHONPATH=str(ROOT))
    env.pop("RAY_ADDRESS", None)
    results: dict = {"shards": SHARDS, "images_per_shard": SHARD_IMAGES, "load_avg_1m_at_start": os.getloadavg()[0]}
    work = Path(tempfile.mkdtemp(prefix="grit-bench-driver-"))
    try:
        for size in SIZES:
            input_dir = work / f"in{size}"
            results[f"input_mb_{size}px"] = round(write_input(input_dir, size) / 2**20, 1)
            for mode in MODES:
                out = subprocess.run([sys.executable, "-m", "bench.bench_driver", "--child", mode, str(input_dir),
                                      str(work / f"out-{mode}-{size}")], cwd=ROOT, env=env, capture_output=True,
                                     text=True, timeout=900)
                if out.returncode != 0:
                    raise RuntimeError(f"driver bench child ({mode}, {size} px) failed:\n{out.stderr[-3000:]}")
                results[f"{mode}_{size}px"] = json.loads(out.stdout.strip().splitlines()[-1])
        results["load_avg_1m_at_end"] = os.getloadavg()[0]
        for mode in MODES:
            small, large = results[f"{mode}_256px"], results[f"{mode}_2048px"]
            results[f"{mode}_ratio_2048_vs_256"] = {
                name: round(large[name] / small[name], 2) if small[name] else None
                for name in ("peak_rss_mb", "cpu_s_per_1000")}
        before, after = results["before_2048px"], results["after_2048px"]
        results["rss_growth_before_vs_after_2048px"] = (
            round(before["rss_growth_mb"] / after["rss_growth_mb"], 1) if after["rss_growth_mb"] > 0 else None)
        return results
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    if len(sys.argv) == 5 and sys.argv[1] == "--child":
        print(json.dumps(child(*sys.argv[2:])))
    else:
        print(json.dumps(run(), indent=2))
