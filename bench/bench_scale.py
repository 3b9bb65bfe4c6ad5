"""Scale: what grows with the size of the job. Three parts, each with its raw measurements and its target.

``driver_per_million`` (a): the Ray engine's driver process, peak RSS and CPU seconds per million samples.
  Two runs of ``run_pipeline(PipelineConfig(detector="noop", engine="ray", progress=False))`` on light
  synthetic input (SMALL and LARGE samples of a 32x32 JPEG and a short caption, in shards of SHARD_SAMPLES),
  each in a fresh process that starts a local Ray (all cores), then reads its peak RSS and
  ``getrusage(RUSAGE_SELF)`` utime + stime just before and just after the run: the driver process only (Ray's
  workers are other processes). The peak is the kernel's VmHWM, the process's own high-water mark:
  ``ru_maxrss`` (reported beside) is at least the parent's RSS at the spawn on Linux, which survives the
  exec. The figure is the slope between the two runs, (large - small) / (samples
  large - samples small), per million samples and projected to the paper's 91M (Kosmos-2: GrIT from 91M
  images), so the fixed costs (imports, Ray, actors) cancel. Target: <= 50 MB per million samples.

``resume_on_slow_storage`` (b): a finished build of BUILD_SHARDS shards (written once with the local
  filesystem, every file a real build has (``pipeline.layout``), markers as the sink writes them; cached under
  CACHE_DIR), read through ``slow30://``, this file's fsspec filesystem: the local one plus LATENCY_S (30 ms)
  per request, every request counted (a listing is one request per LIST_PAGE names, as S3 and GCS list 1,000
  keys a page; reading an opened file is free). Measured, wall seconds and requests:
  - ``plan``: deciding which shards are done, as a resumed ``grit run`` does: ``plan.plan_shards`` where the
    package has it (over all BUILD_SHARDS), else the per-shard ``sink.is_done`` loop (first over SUBSET shards).
  - ``stats``: ``grit stats DIR --json`` in this process (``commands.stats.run``, stdout captured), first
    over a SUBSET-shard copy of the build.
  A SUBSET measurement is projected linearly to BUILD_SHARDS (``projected_full``); where that projection is
  under FULL_RUN_LIMIT_S the whole build is measured too and that figure counts (``projected: false``).
  ``list_input``: listing the input (BUILD_SHARDS shard names) through the same filesystem, apart.
  Targets: <= 60 s each.

``worker_shard_memory`` (c): a worker's peak RSS (VmHWM, as above) reading one input shard of WORKER_LARGE
  samples vs one of WORKER_SMALL samples (the first WORKER_SMALL of the same; random 30-50 KB image members,
  which ingest does not decode), each in a fresh process, consumed CHUNK_ROWS samples at a time (summing the
  image bytes): ``InputSource.read_chunks(shard, CHUNK_ROWS)`` where the package has it, else
  ``InputSource.read(shard)`` sliced the same way. Also the RSS after imports. Target: ratio <= 1.3.

MB are 2**20 bytes, as in the other benches. Parts: GRIT_BENCH_SCALE_PARTS=driver,resume,worker (default
all). Every process measured imports ``grit_pipeline`` from where this process imported it (PYTHONPATH is
passed on), so ``PYTHONPATH=/tmp/grit_before python bench/bench_scale.py`` measures an older checkout.
"""
from __future__ import annotations


import argparse
import contextlib
import functools
import hashlib
import io
import json
import math
import os
import random
import shutil
import subprocess
import sys
import tarfile
import tempfile
import threading
import time
from pathlib import Path

from grit_pipeline.pipeline import layout

HERE = Path(__file__).resolve().parent

SMALL = int(os.environ.get("GRIT_BENCH_SCALE_SMALL", "10000"))
LARGE = int(os.environ.get("GRIT_BENCH_SCALE_LARGE", "50000"))
SHARD_SAMPLES = int(os.environ.get("GRIT_BENCH_SCALE_SHARD", "2500"))
BUILD_SHARDS = int(os.environ.get("GRIT_BENCH_SCALE_BUILD_SHARDS", "10000"))
SUBSET = int(os.environ.get("GRIT_BENCH_SCALE_SUBSET", "300"))
FULL_RUN_LIMIT_S = float(os.environ.get("GRIT_BENCH_SCALE_FULL_LIMIT_S", "180"))
WORKER_LARGE, WORKER_SMALL = 10_000, 1_000
CACHE_DIR = Path(os.environ.get("GRIT_BENCH_SCALE_CACHE", "/tmp/grit_bench_scale"))
PARTS = tuple(p for p in os.environ.get("GRIT_BENCH_SCALE_PARTS", "driver,resume,worker").split(",") if p)

LATENCY_S = 0.03
LIST_PAGE = 1000
PROTOCOL = "slow30"
PAPER_SAMPLES = 91_000_000
TARGET_DRIVER_MB_PER_MILLION = 50.0
TARGET_PLAN_S = 60.0
TARGET_STATS_S = 60.0
TARGET_WORKER_RSS_RATIO = 1.3
MB = 2 ** 20

CAPTIONS = ("a red dog on the grass", "two cats near a blue car", "a man riding a horse",
            "a bowl of fruit on a table", "a small boat on the lake", "a girl with a yellow kite",
            "an old house under a tree", "a train at the station")


def _log(message: str) -> None:
    print(f"[bench scale] {message}", file=sys.stderr, flush=True)


def _package_root() -> Path:
    """The folder the ``grit_pipeline`` this process imports lives in (passed on to every child)."""
    import grit_pipeline

    return Path(grit_pipeline.__file__).resolve().parents[1]


def _env() -> dict[str, str]:
    env = dict(os.environ, NO_ALBUMENTATIONS_UPDATE="1", HF_HUB_OFFLINE="1", TOKENIZERS_PARALLELISM="false",
               RAY_USAGE_STATS_ENABLED="0", PYTHONPATH=str(_package_root()))
    env.pop("RAY_ADDRESS", None)  # a local Ray of its own
    return env


def _child(*args: str, timeout: float = 1200) -> dict:
    """``python bench_scale.py --child ARGS`` in a fresh process; its last stdout line is JSON."""
    out = subprocess.run([sys.executable, str(HERE / "bench_scale.py"), "--child", *args], cwd=_package_root(),
                         env=_env(), capture_output=True, text=True, timeout=timeout)
    if out.returncode != 0:
        raise RuntimeError(f"bench scale child {args[0]} failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def _rusage() -> tuple[float, float, float]:
    """(peak RSS, ``ru_maxrss``, both in MB; CPU seconds user + system) of this process so far.

    The peak is the kernel's high-water mark of this process's own memory since it started (VmHWM). Linux's
    ``ru_maxrss`` is at least the parent's RSS when it spawned this process (it survives the exec), so a
    child started by a big parent reports the parent's size: it is given beside, not used."""
    import resource

    usage = resource.getrusage(resource.RUSAGE_SELF)
    maxrss = usage.ru_maxrss * 1024 / MB
    peak = maxrss
    with contextlib.suppress(OSError, ValueError, StopIteration):
        with open("/proc/self/status") as status:
            peak = int(next(line for line in status if line.startswith("VmHWM:")).split()[1]) * 1024 / MB
    return peak, maxrss, usage.ru_utime + usage.ru_stime


def _rss_mb() -> float:
    import psutil

    return psutil.Process().memory_info().rss / MB


# --- synthetic img2dataset input ----------------------------------------------------------------------------

def tiny_jpeg(size: int = 32) -> bytes:
    from PIL import Image

    out = io.BytesIO()
    Image.new("RGB", (size, size), (180, 90, 40)).save(out, format="JPEG", quality=80)
    return out.getvalue()


def _add(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    tar.addfile(info, io.BytesIO(data))


def write_input_shard(folder: Path, shard: int, samples: int, image, size: int = 32) -> int:
    """One img2dataset shard: NNNNN.tar (KEY.jpg, KEY.txt, KEY.json), NNNNN.parquet, NNNNN_stats.json.
    ``image(i)`` gives sample i's image bytes. Returns the image bytes written."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    name, rows, total = f"{shard:05d}", [], 0
    with tarfile.open(folder / f"{name}.tar", "w") as tar:
        for i in range(samples):
            key = f"{shard:05d}{i:05d}"
            caption = CAPTIONS[i % len(CAPTIONS)]
            meta = {"key": key, "caption": caption, "url": f"http://example.invalid/{key}.jpg", "status": "success",
                    "error_message": None, "width": size, "height": size, "original_width": size * 4,
                    "original_height": size * 4}
            rows.append(meta)
            data = image(i)
            total += len(data)
            _add(tar, f"{key}.jpg", data)
            _add(tar, f"{key}.txt", caption.encode())
            _add(tar, f"{key}.json", json.dumps(meta).encode())
    pq.write_table(pa.Table.from_pylist(rows), folder / f"{name}.parquet")
    stats = {"count": samples, "successes": samples, "failed_to_download": 0, "failed_to_resize": 0,
             "status_dict": {"success": samples}}
    (folder / f"{name}_stats.json").write_text(json.dumps(stats))
    return total


def write_light_input(folder: Path, samples: int, shard_samples: int = SHARD_SAMPLES) -> int:
    """``samples`` light samples (one 32x32 JPEG reused, short captions) in shards of ``shard_samples``."""
    folder.mkdir(parents=True, exist_ok=True)
    jpeg = tiny_jpeg()
    shards = math.ceil(samples / shard_samples)
    for shard in range(shards):
        write_input_shard(folder, shard, min(shard_samples, samples - shard * shard_samples), lambda i: jpeg)
    return shards


# --- (a) the driver per million samples ---------------------------------------------------------------------

def child_driver(input_dir: str, output_dir: str) -> dict:
    """In a fresh process: imports and Ray first, then ``run_pipeline`` between two ``getrusage`` readings."""
    import ray

    import grit_pipeline
    from grit_pipeline.pipeline import PipelineConfig, run_pipeline
    from grit_pipeline.pipeline.engine_ray import init_ray, stop_ray

    config = PipelineConfig(input=input_dir, output=output_dir, detector="noop", engine="ray", progress=False)
    init_ray(config)
    # Which grit_pipeline Ray's workers import (the driver's sys.path goes to them): the one measured.
    worker_package = ray.get(ray.remote(num_cpus=0)(lambda: __import__("grit_pipeline").__file__).remote())
    rss_before = _rss_mb()
    peak_before, _, cpu_before = _rusage()
    started = time.perf_counter()
    summary = run_pipeline(config)
    wall = time.perf_counter() - started
    peak_after, maxrss, cpu_after = _rusage()
    rss_after = _rss_mb()
    stop_ray()
    return {"samples": summary.samples, "shards": len(summary.shards_written), "wall_s": round(wall, 2),
            "rss_before_mb": round(rss_before, 1), "peak_rss_before_mb": round(peak_before, 1),
            "peak_rss_mb": round(peak_after, 1), "ru_maxrss_mb": round(maxrss, 1), "rss_after_mb": round(rss_after, 1),
            "growth_mb": round(peak_after - rss_before, 1),
            "cpu_s_before": round(cpu_before, 2), "cpu_s_run": round(cpu_after - cpu_before, 2),
            "cpu_s_total": round(cpu_after, 2), "counts": summary.counts,
            "driver_package": grit_pipeline.__file__, "worker_package": worker_package}


def _per_million(small: dict, large: dict, name: str) -> float:
    return (large[name] - small[name]) / (large["samples"] - small["samples"]) * 1e6


def part_driver() -> dict:
    if LARGE <= SMALL:
        raise ValueError(f"GRIT_BENCH_SCALE_LARGE ({LARGE}) must be larger than GRIT_BENCH_SCALE_SMALL ({SMALL})")
    runs = {}
    work = Path(tempfile.mkdtemp(prefix="grit-bench-scale-"))
    try:
        for label, samples in (("small", SMALL), ("large", LARGE)):
            started = time.perf_counter()
            input_dir = work / f"in-{samples}"
            write_light_input(input_dir, samples)
            generated = time.perf_counter() - started
            _log(f"driver: {samples:,} samples written in {generated:.1f} s; running the Ray engine")
            run = _child("driver", str(input_dir), str(work / f"out-{samples}"))
            run["input_write_s"] = round(generated, 1)
            if run["samples"] != samples:
                raise RuntimeError(f"the {label} run finished {run['samples']} samples of {samples}")
            runs[label] = run
            shutil.rmtree(input_dir, ignore_errors=True)
            shutil.rmtree(work / f"out-{samples}", ignore_errors=True)
            _log(f"driver: {label}: {json.dumps(run)}")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    small, large = runs["small"], runs["large"]
    mb = _per_million(small, large, "peak_rss_mb")
    growth = _per_million(small, large, "growth_mb")
    cpu = _per_million(small, large, "cpu_s_run")
    millions = PAPER_SAMPLES / 1e6
    return {
        "sizes": [SMALL, LARGE], "shard_samples": SHARD_SAMPLES, "small": small, "large": large,
        "peak_rss_mb_per_million": round(mb, 2),
        "peak_rss_projected_91m_mb": round(mb * millions, 1),
        "growth_mb_per_million": round(growth, 2),  # the same from (peak - RSS just before the run)
        "target_mb_per_million": TARGET_DRIVER_MB_PER_MILLION,
        "meets_target": mb <= TARGET_DRIVER_MB_PER_MILLION,
        "cpu_s_per_million": round(cpu, 1),
        "cpu_projected_91m_h": round(cpu * millions / 3600, 2),
        "cpu_ms_per_sample_large_run": round(large["cpu_s_run"] / large["samples"] * 1000, 4),
    }


# --- (b) a resume and `grit stats` on slow storage ---------------------------------------------------------

def _slow_filesystem_class():
    """fsspec's LocalFileSystem plus LATENCY_S per request (bench only: registered as ``slow30``)."""
    from fsspec.implementations.local import LocalFileSystem

    state = threading.local()  # a request calling another (exists -> info) is one request

    def request(name: str):
        base = getattr(LocalFileSystem, name)

        @functools.wraps(base)
        def method(self, *args, **kwargs):
            if getattr(state, "inside", False):
                return base(self, *args, **kwargs)
            state.inside = True
            pages = 1
            try:
                result = base(self, *args, **kwargs)
                if name == "ls" and isinstance(result, list):
                    pages = max(1, math.ceil(len(result) / LIST_PAGE))
                return result
            finally:
                state.inside = False
                SlowFileSystem.count(pages)
                time.sleep(LATENCY_S * pages)
        return method

    class SlowFileSystem(LocalFileSystem):
        protocol = (PROTOCOL,)
        requests = 0
        _lock = threading.Lock()

        @classmethod
        def count(cls, n: int = 1) -> None:
            with cls._lock:
                cls.requests += n

    for name in ("ls", "info", "exists", "lexists", "isfile", "isdir", "size", "_open", "cat_file", "pipe_file",
                 "put_file", "get_file", "cp_file", "mv", "rm", "rm_file", "makedirs", "mkdir", "rmdir", "touch",
                 "created", "modified"):
        setattr(SlowFileSystem, name, request(name))
    return SlowFileSystem


@functools.lru_cache(maxsize=None)
def slow_filesystem():
    import fsspec

    cls = _slow_filesystem_class()
    fsspec.register_implementation(PROTOCOL, cls, clobber=True)
    return cls


def slow_url(path: Path) -> str:
    return f"{PROTOCOL}://{path}"


def _build_rows(shard: str):
    """A couple of GRIT rows, a reject and the stats of one finished shard (the writers' schemas)."""
    from grit_pipeline import status as S

    grounded = []
    for i in range(2):
        key = f"{shard}{i:05d}"
        caption = CAPTIONS[i]
        box = [2.0, 5.0, 0.1, 0.2, 0.6, 0.9, 0.8]
        grounded.append({"key": key, "id": int(key), "url": f"http://example.invalid/{key}.jpg", "caption": caption,
                         "width": 32, "height": 32, "noun_chunks": [box], "ref_exps": [box],
                         "grounded_text": f"<grounding>{caption}", "status": S.GROUNDED, "source_shard": shard,
                         "dropped_boxes": []})
    reject = {"key": f"{shard}{2:05d}", "status": S.DOWNLOAD_ERROR,
              "reason": "img2dataset status failed_to_download: HTTP Error 404", "stage": "ingest",
              "caption": CAPTIONS[2], "url": f"http://example.invalid/{shard}{2:05d}.jpg", "source_shard": shard,
              "dropped_boxes": None}
    counts = {name: 0 for name in S.ALL}
    counts[S.GROUNDED], counts[S.DOWNLOAD_ERROR] = 2, 1
    edges = [round(i / 20, 10) for i in range(21)]
    histogram = [0] * 20
    histogram[16] = 2
    stats = {"shard": shard, "input": "", "samples": 3, "counts": counts, "images": 2, "boxes": 2, "spans": 2,
             "span_words": 6, "score_histogram": {"edges": edges, "counts": histogram},
             "timings_s": {"ingest": 0.001, "noun_chunks": 0.004, "ground": 0.002, "expand": 0.001}}
    return grounded, [reject], stats


def _resume_config():
    from grit_pipeline.pipeline import PipelineConfig

    root = CACHE_DIR / f"input-{BUILD_SHARDS}"
    return PipelineConfig(input=slow_url(root), output="", detector="noop", progress=False)


def ensure_input(root: Path) -> Path:
    """BUILD_SHARDS input shard names (each the same one-sample shard): what the source lists."""
    ready = root / "READY"
    if ready.exists():
        return root
    root.mkdir(parents=True, exist_ok=True)
    template = root / "_template"
    template.mkdir(exist_ok=True)
    jpeg = tiny_jpeg()
    write_input_shard(template, 0, 1, lambda i: jpeg)
    files = {suffix: (template / f"00000{suffix}").read_bytes() for suffix in (".tar", ".parquet", "_stats.json")}
    for n in range(BUILD_SHARDS):
        for suffix, data in files.items():
            (root / f"{n:05d}{suffix}").write_bytes(data)
    shutil.rmtree(template)
    ready.write_text("ok")
    return root


def ensure_build(params: dict) -> tuple[Path, Path]:
    """The finished build of BUILD_SHARDS shards and its first SUBSET shards' copy, generated once per
    parameters and writer schemas (cached under CACHE_DIR)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from grit_pipeline.pipeline.writers import DEFAULT_WRITERS, grit_parquet, rejects

    names = [w.filename("00000") for w in DEFAULT_WRITERS]
    fingerprint = json.dumps({"params": params, "grit": str(grit_parquet.SCHEMA), "rejects": str(rejects.SCHEMA),
                              "files": names, "shards": BUILD_SHARDS}, sort_keys=True, default=str)
    root = CACHE_DIR / f"build-{hashlib.sha1(fingerprint.encode()).hexdigest()[:12]}"
    full, subset = root / "full", root / f"first{SUBSET}"
    if (root / "READY").exists() and (subset / "READY").exists():
        return full, subset
    shutil.rmtree(root, ignore_errors=True)
    full.mkdir(parents=True)
    started = time.perf_counter()
    samples = 0
    for n in range(BUILD_SHARDS):
        shard = f"{n:05d}"
        grounded, rejected, stats = _build_rows(shard)
        stats["input"] = f"{params.get('input', '')}/{shard}"
        files = {}
        buffer = io.BytesIO()
        pq.write_table(pa.Table.from_pylist(grounded, schema=grit_parquet.SCHEMA), buffer, compression="zstd")
        files[layout.pairs_name(shard)] = buffer.getvalue()
        buffer = io.BytesIO()
        with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as tar:
            for row in grounded:
                _add(tar, f"{row['key']}.jpg", b"\xff\xd8\xff\xd9")
                _add(tar, f"{row['key']}.json", json.dumps(row, sort_keys=True).encode())
        files[layout.tar_name(shard)] = buffer.getvalue()
        buffer = io.BytesIO()
        pq.write_table(pa.Table.from_pylist(rejected, schema=rejects.SCHEMA), buffer, compression="zstd")
        files[layout.rejects_name(shard)] = buffer.getvalue()
        files[layout.stats_name(shard)] = json.dumps(stats, indent=1, sort_keys=True).encode()
        for name, data in files.items():
            (full / name).parent.mkdir(exist_ok=True)
            (full / name).write_bytes(data)
        # The marker exactly as shards._Sink._mark_done writes it: the sink's files in its order, their sizes.
        sizes = {name: len(files[name]) for name in (w.filename(shard) for w in DEFAULT_WRITERS)}
        marker = {"shard": shard, "samples": stats["samples"], "params": params, "files": sizes}
        (full / layout.DONE_DIR).mkdir(exist_ok=True)
        (full / layout.done_name(shard)).write_bytes(json.dumps(marker, sort_keys=True).encode("utf-8"))
        samples += stats["samples"]
    run_info = {"mode": "fused", "params": params, "engine": "ray", "ray_address": None, "finished": True,
                "last_run": {"output": "", "shards_total": BUILD_SHARDS, "shards_written": BUILD_SHARDS,
                             "shards_skipped": 0, "samples": samples}, "versions": {}, "command": ["bench_scale"]}
    (full / "_run.json").write_text(json.dumps(run_info, indent=1, sort_keys=True))
    subset.mkdir()
    for path in sorted(p for p in full.rglob("*") if p.is_file()):
        name = path.relative_to(full)
        if (path.parent == full and path.name.startswith("_")) or int(path.name[:5]) < SUBSET:
            (subset / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(path, subset / name)
    (subset / "READY").write_text("ok")
    (root / "READY").write_text("ok")
    _log(f"resume: build of {BUILD_SHARDS:,} shards written in {time.perf_counter() - started:.1f} s ({root})")
    return full, subset


def _measured(fn) -> tuple[float, int, object]:
    """(wall seconds, slow requests, result) of ``fn()``."""
    cls = slow_filesystem()
    before = cls.requests
    started = time.perf_counter()
    result = fn()
    return time.perf_counter() - started, cls.requests - before, result


def _figure(subset: dict | None, full: dict | None, target: float) -> dict:
    """The subset measurement and its linear projection, and the full one where made (which then counts)."""
    out: dict = {"subset": subset}
    if subset is not None:
        scale = BUILD_SHARDS / subset["shards"]
        out["projected_full"] = {"seconds": round(subset["seconds"] * scale, 1),
                                 "requests": round(subset["requests"] * scale)}
    if full is not None:
        out["full"] = full
        seconds, requests, is_projected = full["seconds"], full["requests"], False
    else:
        seconds, requests, is_projected = out["projected_full"]["seconds"], out["projected_full"]["requests"], True
    out.update({"shards": BUILD_SHARDS, "seconds": seconds, "requests": requests, "projected": is_projected,
                "target_s": target, "meets_target": seconds <= target})
    return out


def part_resume() -> dict:
    from grit_pipeline.pipeline.shards import BuildSink, InputSource

    slow_filesystem()
    config = _resume_config()
    input_root = ensure_input(CACHE_DIR / f"input-{BUILD_SHARDS}")
    params = config.params_through("write")
    full_dir, subset_dir = ensure_build(params)
    config = config.replace(output=slow_url(full_dir))
    source = InputSource(config)
    list_s, list_requests, shards = _measured(source.shards)
    if len(shards) != BUILD_SHARDS:
        raise RuntimeError(f"{input_root} lists {len(shards)} shards, not {BUILD_SHARDS}")
    expected = {shard: {**source.params(shard), **params} for shard in shards}
    sink = BuildSink(config)
    try:
        from grit_pipeline.pipeline.plan import plan_shards
    except ImportError:
        plan_shards, how = None, "sink.is_done per shard (no grit_pipeline.pipeline.plan)"
    else:
        how = "plan.plan_shards"

    def plan(selected: list[str]) -> dict:
        if plan_shards is not None:
            seconds, requests, (done, todo) = _measured(
                lambda: plan_shards(sink, selected, {s: expected[s] for s in selected}, overwrite=False, progress=None))
            done, todo = len(done), len(todo)
        else:
            seconds, requests, flags = _measured(lambda: [sink.is_done(s, expected[s]) for s in selected])
            done, todo = sum(flags), len(flags) - sum(flags)
        if done != len(selected):
            raise RuntimeError(f"plan: {done} of {len(selected)} shards done; the synthetic build should be all done")
        return {"shards": len(selected), "seconds": round(seconds, 2), "requests": requests, "done": done,
                "todo": todo}

    plan_subset = plan_full = None
    if plan_shards is None:  # ~6 requests a shard, one after the other: the first SUBSET, projected
        _log(f"resume: plan over the first {SUBSET} shards ({how})")
        plan_subset = plan(shards[:SUBSET])
    if plan_subset is None or plan_subset["seconds"] * BUILD_SHARDS / SUBSET <= FULL_RUN_LIMIT_S:
        _log(f"resume: plan over all {BUILD_SHARDS:,} shards ({how})")
        plan_full = plan(shards)

    def stats(folder: Path, shards_in: int) -> dict:
        from grit_pipeline.commands import stats as stats_command

        out = io.StringIO()
        args = argparse.Namespace(output=slow_url(folder), json=True, top=10)
        with contextlib.redirect_stdout(out):
            seconds, requests, code = _measured(lambda: stats_command.run(args))
        totals = json.loads(out.getvalue()) if code == 0 else {}
        if code != 0 or totals.get("shards") != shards_in:
            raise RuntimeError(f"grit stats {folder}: exit {code}, shards {totals.get('shards')} (of {shards_in})")
        return {"shards": shards_in, "seconds": round(seconds, 2), "requests": requests,
                "samples": totals["samples"], "warnings": len(totals.get("warnings", []))}

    _log(f"resume: grit stats over a {SUBSET}-shard copy")
    stats_subset = stats(subset_dir, SUBSET)
    stats_full = None
    if stats_subset["seconds"] * BUILD_SHARDS / SUBSET <= FULL_RUN_LIMIT_S:
        _log(f"resume: grit stats over all {BUILD_SHARDS:,} shards")
        stats_full = stats(full_dir, BUILD_SHARDS)
    return {"latency_s": LATENCY_S, "list_page": LIST_PAGE, "build": str(full_dir), "plan_method": how,
            "list_input": {"seconds": round(list_s, 2), "requests": list_requests, "shards": len(shards)},
            "plan": _figure(plan_subset, plan_full, TARGET_PLAN_S),
            "stats": _figure(stats_subset, stats_full, TARGET_STATS_S)}


# --- (c) a worker's memory per input shard -----------------------------------------------------------------

def child_worker(input_dir: str, shard: str) -> dict:
    """In a fresh process: read one input shard the way a worker does, chunk by chunk; peak RSS."""
    from grit_pipeline.pipeline import PipelineConfig
    from grit_pipeline.pipeline.shards import InputSource

    CHUNK_ROWS = getattr(PipelineConfig, "chunk_rows", 256)  # (256: the code before --chunk-rows)
    source = InputSource(PipelineConfig(input=input_dir, output=input_dir + "-out"))
    baseline_rss = _rss_mb()
    baseline_peak, _, _ = _rusage()
    if hasattr(source, "read_chunks"):
        how, chunks = "chunks", source.read_chunks(shard, CHUNK_ROWS)
    else:
        samples = source.read(shard)  # the whole shard, as the worker holds it
        how, chunks = "read", (samples[i:i + CHUNK_ROWS] for i in range(0, len(samples), CHUNK_ROWS))
    count = image_bytes = parts = 0
    for chunk in chunks:
        count += len(chunk)
        image_bytes += sum(len(s.get("image_bytes") or b"") for s in chunk)
        parts += 1
        del chunk
    peak, maxrss, _ = _rusage()
    return {"api": how, "chunk_rows": CHUNK_ROWS, "samples": count, "chunks": parts,
            "image_mb": round(image_bytes / MB, 1), "baseline_rss_mb": round(baseline_rss, 1),
            "baseline_peak_rss_mb": round(baseline_peak, 1), "peak_rss_mb": round(peak, 1),
            "ru_maxrss_mb": round(maxrss, 1),
            "growth_mb": round(peak - baseline_rss, 1)}


def child_commit(input_dir: str, shard: str) -> dict:
    """In a fresh process: stage one input shard as the Ray engine's parts (every sample grounded, so the
    tar takes every image), then commit it; peak RSS after staging and after the commit."""
    import shutil

    from grit_pipeline.pipeline import PipelineConfig
    from grit_pipeline.pipeline.parts import commit_shard, write_parts
    from grit_pipeline.pipeline.shards import BuildSink, InputSource

    output = input_dir + "-build"
    shutil.rmtree(output, ignore_errors=True)
    config = PipelineConfig(input=input_dir, output=output)
    source, sink = InputSource(config), BuildSink(config)
    baseline_rss = _rss_mb()
    names = []
    for chunk in source.read_chunks(shard, 256):
        for sample in chunk:  # a grounded record: one chunk, one box
            sample.update(status="grounded", caption="a dog on the grass", width=512, height=512,
                          noun_chunks=[[0.0, 5.0, 0.1, 0.1, 0.5, 0.5, 0.9]], ref_exps=[[0.0, 5.0, 0.1, 0.1, 0.5, 0.5, 0.9]],
                          grounded_text="<grounding><phrase> a dog</phrase> on the grass")
        names += [info["part"] for info in write_parts(output, chunk)]
        del chunk
    staged_peak, _, _ = _rusage()
    result = commit_shard(sink, source, shard, names, config.params_through("write"), input_dir)
    peak, maxrss, _ = _rusage()
    return {"samples": result["samples"], "parts": len(names), "baseline_rss_mb": round(baseline_rss, 1),
            "peak_rss_after_staging_mb": round(staged_peak, 1), "peak_rss_mb": round(peak, 1),
            "build_tar_mb": round(os.path.getsize(os.path.join(output, layout.tar_name(shard))) / MB, 1)}


def part_worker() -> dict:
    rng = random.Random(41)
    images = [rng.randbytes(rng.randint(30_000, 50_000)) for _ in range(97)]
    runs, commits = {}, {}
    with tempfile.TemporaryDirectory(prefix="grit-bench-scale-worker-") as tmp:
        started = time.perf_counter()
        for samples in (WORKER_LARGE, WORKER_SMALL):
            folder = Path(tmp) / f"in-{samples}"
            folder.mkdir()
            write_input_shard(folder, 0, samples, lambda i: images[i % len(images)], size=512)
        _log(f"worker: input shards written in {time.perf_counter() - started:.1f} s")
        for samples in (WORKER_SMALL, WORKER_LARGE):
            folder = Path(tmp) / f"in-{samples}"
            runs[samples] = _child("worker", str(folder), "00000", timeout=600)
            runs[samples]["tar_mb"] = round((folder / "00000.tar").stat().st_size / MB, 1)
            if runs[samples]["samples"] != samples:
                raise RuntimeError(f"worker read {runs[samples]['samples']} samples of {samples}")
            _log(f"worker: {samples:,} samples: {json.dumps(runs[samples])}")
            if hasattr(__import__("grit_pipeline.pipeline.parts", fromlist=["merged_parts"]), "merged_parts"):
                commits[samples] = _child("commit", str(folder), "00000", timeout=600)
                _log(f"worker: commit of {samples:,} samples: {json.dumps(commits[samples])}")
    small, large = runs[WORKER_SMALL], runs[WORKER_LARGE]
    ratio = large["peak_rss_mb"] / small["peak_rss_mb"]
    out = {"api": large["api"], f"shard_{WORKER_SMALL}": small, f"shard_{WORKER_LARGE}": large,
           "peak_rss_ratio": round(ratio, 2), "target_ratio": TARGET_WORKER_RSS_RATIO,
           "meets_target": ratio <= TARGET_WORKER_RSS_RATIO}
    if commits:  # the Ray engine's commit of the same shards: parts merged a row group at a time
        commit_ratio = commits[WORKER_LARGE]["peak_rss_mb"] / commits[WORKER_SMALL]["peak_rss_mb"]
        out["commit"] = {f"shard_{WORKER_SMALL}": commits[WORKER_SMALL], f"shard_{WORKER_LARGE}": commits[WORKER_LARGE],
                         "peak_rss_ratio": round(commit_ratio, 2), "meets_target": commit_ratio <= TARGET_WORKER_RSS_RATIO}
    return out


# --- entry --------------------------------------------------------------------------------------------------

def run() -> dict:
    import grit_pipeline

    results: dict = {"grit_pipeline": grit_pipeline.__file__, "cpus": os.cpu_count(),
                     "load_avg_1m_at_start": os.getloadavg()[0]}
    try:
        import grit_pipeline.pipeline.plan  # noqa: F401
        results["has_plan_shards"] = True
    except ImportError:
        results["has_plan_shards"] = False
    from grit_pipeline.pipeline.shards import InputSource

    results["has_input_chunks"] = hasattr(InputSource, "read_chunks")
    for name, part, key in (("driver", part_driver, "driver_per_million"),
                            ("resume", part_resume, "resume_on_slow_storage"),
                            ("worker", part_worker, "worker_shard_memory")):
        if name in PARTS:
            started = time.perf_counter()
            results[key] = part()
            results[key]["part_wall_s"] = round(time.perf_counter() - started, 1)
            _log(f"{name}: {results[key]['part_wall_s']} s")
    results["load_avg_1m_at_end"] = os.getloadavg()[0]
    return results


if __name__ == "__main__":
    if len(sys.argv) >= 3 and sys.argv[1] == "--child":
        if sys.path and Path(sys.path[0]).resolve() == HERE:
            sys.path.pop(0)  # the bench folder: nothing here may shadow an import
        handlers = {"driver": child_driver, "worker": child_worker, "commit": child_commit}
        print(json.dumps(handlers[sys.argv[2]](*sys.argv[3:])))
    else:
        print(json.dumps(run(), indent=2))
