"""The two engines on one machine: images/s end to end, CPU seconds per image of every process, Ray's start-up.

The same synthetic input (``grit synth``: IMAGES images in shards of SHARD_SIZE) goes through ``grit run``
with ``--engine local``, ``--engine ray`` and no ``--engine`` (the default rule), each with the ``noop``
and the ``demo`` detector, each a fresh ``grit run`` process into a fresh output folder, in one bench run
(the machine may be shared: compare the engines within one run; ``load_avg`` is recorded around each run;
each run is made REPEATS times, all runs of a detector alternating, and the fastest counts; ``wall_s_all``
lists them all).

* ``images_per_s``: input images / wall seconds of the ``grit run`` process (start to exit: imports, Ray
  start-up and shutdown included).
* ``cpu_s_per_image``: CPU seconds (user + system) of the ``grit run`` process and of every process it
  started, directly or not (Ray's GCS server, raylet, dashboard and runtime-env agents, idle and busy
  workers, actors), divided by the images. How: each run goes through a small wrapper process
  (``--measure``) that makes itself the child subreaper (``prctl(PR_SET_CHILD_SUBREAPER)``, so a descendant
  whose parent exits is re-parented to it, never to init) and samples every SAMPLE_S seconds the CPU times of
  all its descendants (``psutil``, zombies included), until the last one has exited; each process counts with
  the last value seen. ``getrusage(RUSAGE_CHILDREN)`` cannot be used: Ray's processes reap their children
  without adding their times (it counted 6.7 s where sampling sees 28 s). At most the last SAMPLE_S of a
  process reaped by another is missed. ``cpu_s_by_process`` splits the total by process name.
* ``tiny``: the same runs on a tiny input (TINY_IMAGES images in two shards: Ray starts as many actors as
  for the big one). ``ray_startup_s``: Ray's fixed cost, the tiny run's wall seconds with ``--engine ray``
  minus with ``--engine local`` (both pay the same imports and model loads; the difference is starting Ray
  and its worker processes, stopping it, and the start-ups no longer overlapping on a busy machine).
  ``data_path``: the rate and CPU per image once started, (big run - tiny run) per image.
* ``engine``: the engine the run used, read from its stderr (``engine: NAME (...)``).
* ``default_picked_faster``: whether the default chose the engine whose own runs were faster;
  ``default_vs_faster_images_per_s`` compares the default's runs with those runs (the same engine twice when
  it picked right, so the ratio shows the run-to-run spread).
"""
from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# 16,384 images: enough work (about a minute per run on 2 cores) that per-image figures are the data path's and
# not Ray's fixed start-up (at 2,048 images the fixed cost alone makes Ray's CPU per image 1.6-1.8x the local
# engine's); GRIT_BENCH_ENGINES_IMAGES=2048 for a quicker look.
IMAGES = int(os.environ.get("GRIT_BENCH_ENGINES_IMAGES", "16384"))
SHARD_SIZE = int(os.environ.get("GRIT_BENCH_ENGINES_SHARD_SIZE", "256"))
TINY_IMAGES = 32
REPEATS = int(os.environ.get("GRIT_BENCH_ENGINES_REPEATS", "2"))  # of each run: the fastest counts
SAMPLE_S = 0.05  # CPU-time sampling interval of the process tree
DETECTORS = ("noop", "demo")
ENGINES = ("local", "ray", "default")
ENGINE_LINE = re.compile(r"engine: (\w+)")


def _env() -> dict[str, str]:
    env = dict(os.environ, NO_ALBUMENTATIONS_UPDATE="1", HF_HUB_OFFLINE="1", TOKENIZERS_PARALLELISM="false",
               RAY_USAGE_STATS_ENABLED="0", PYTHONPATH=str(ROOT))
    env.pop("RAY_ADDRESS", None)  # a local Ray of its own, never a cluster this machine may know
    return env


def _measure(command: list[str], stderr_path: str) -> dict:
    """In the wrapper process: run ``command`` and sample the CPU times of it and all its descendants."""
    import ctypes

    import psutil

    PR_SET_CHILD_SUBREAPER = 36
    if ctypes.CDLL(None, use_errno=True).prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_CHILD_SUBREAPER) failed")
    me = psutil.Process()
    cpu: dict[tuple[int, float], float] = {}   # (pid, create time) -> last seen user + system seconds
    names: dict[tuple[int, float], str] = {}

    def sample() -> int:
        alive = 0
        for process in me.children(recursive=True):
            try:
                with process.oneshot():
                    times, ident = process.cpu_times(), (process.pid, process.create_time())
                    names[ident] = _process_name(process)
                    alive += process.status() != psutil.STATUS_ZOMBIE
            except psutil.Error:
                continue
            cpu[ident] = times.user + times.system
        return alive

    started = time.perf_counter()
    with open(stderr_path, "wb") as err:
        run = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=err, cwd=ROOT)
        while run.poll() is None:
            sample()
            time.sleep(SAMPLE_S)
    wall = time.perf_counter() - started
    # Ray's processes exit shortly after the driver; they are re-parented here: sample them until gone.
    deadline, leftovers = time.monotonic() + 60, 0
    while sample():
        if time.monotonic() > deadline:
            leftovers = len(me.children(recursive=True))
            break
        time.sleep(SAMPLE_S)
        try:
            while os.waitpid(-1, os.WNOHANG)[0]:
                pass
        except ChildProcessError:
            pass
    by_name: dict[str, float] = {}
    for ident, seconds in cpu.items():
        name = names[ident]
        by_name[name] = round(by_name.get(name, 0.0) + seconds, 2)
    return {"returncode": run.returncode, "wall_s": wall, "cpu_s": sum(cpu.values()),
            "cpu_s_by_process": dict(sorted(by_name.items(), key=lambda kv: -kv[1])),
            "processes": len(cpu), "leftover_processes": leftovers}


def _process_name(process) -> str:
    """``raylet``, ``ray::IDLE``, ``ray::ReadNounChunk...``; Python processes by script or module
    (``grit_pipeline``: the driver, ``dashboard.py``, ``log_monitor.py``, ...)."""
    name = process.name()
    if name.startswith("python"):
        for arg in process.cmdline()[1:]:
            if arg.endswith(".py") or arg in ("grit_pipeline", "bench.bench_engines"):
                return os.path.basename(arg)
    return name


def run_grit(input_dir: Path, output_dir: Path, detector: str, engine: str) -> dict:
    """One measured ``grit run`` (engine "default": no --engine flag)."""
    command = [sys.executable, "-m", "grit_pipeline", "run", "--input", str(input_dir), "--output", str(output_dir),
               "--detector", detector]
    if engine != "default":
        command += ["--engine", engine]
    stderr_path = str(output_dir) + ".stderr"
    load_before = os.getloadavg()[0]
    out = subprocess.run([sys.executable, "-m", "bench.bench_engines", "--measure", stderr_path, "--", *command],
                         cwd=ROOT, env=_env(), capture_output=True, text=True, timeout=1800)
    if out.returncode != 0:
        raise RuntimeError(f"measure wrapper failed:\n{out.stderr[-3000:]}")
    result = json.loads(out.stdout.strip().splitlines()[-1])
    stderr = Path(stderr_path).read_text(errors="replace")
    if result["returncode"] != 0:
        raise RuntimeError(f"grit run ({engine}, {detector}) failed:\n{stderr[-3000:]}")
    chosen = ENGINE_LINE.findall(stderr)
    run_info = json.loads((output_dir / "_run.json").read_text())
    samples = run_info["last_run"]["samples"]
    return {"engine": chosen[-1] if chosen else (engine if engine != "default" else "ray"),
            "samples": samples, "wall_s": round(result["wall_s"], 2),
            "images_per_s": round(samples / result["wall_s"], 1),
            "cpu_s_per_image": round(result["cpu_s"] / samples, 4), "cpu_s": round(result["cpu_s"], 1),
            "load_avg_1m": [round(load_before, 2), round(os.getloadavg()[0], 2)],
            "stage_startup_s": run_info["last_run"].get("startup_s", {}),
            "cpu_s_by_process": result["cpu_s_by_process"], "leftover_processes": result["leftover_processes"]}


def interleaved(jobs: dict[str, tuple], detector: str) -> dict[str, dict]:
    """Each job ``name -> (input, output, engine)`` REPEATS times, the jobs alternating; per job the run
    with the least wall time (``wall_s_all``: every run's)."""
    runs: dict[str, list[dict]] = {name: [] for name in jobs}
    for repeat in range(REPEATS):
        for name, (input_dir, output_dir, engine) in jobs.items():
            out = output_dir.with_name(f"{output_dir.name}-{repeat}")
            runs[name].append(run_grit(input_dir, out, detector, engine))
            shutil.rmtree(out, ignore_errors=True)
    return {name: min(results, key=lambda r: r["wall_s"]) | {"wall_s_all": [r["wall_s"] for r in results]}
            for name, results in runs.items()}


def synth(folder: Path, images: int, shard_size: int) -> None:
    subprocess.run([sys.executable, "-m", "grit_pipeline", "synth", "--output", str(folder), "--images", str(images),
                    "--shard-size", str(shard_size), "--seed", "0"], cwd=ROOT, env=_env(), check=True,
                   capture_output=True)


def _ratio(a: float, b: float) -> float | None:
    return round(a / b, 2) if b else None


def _data_path(big: dict, tiny: dict) -> dict:
    """The rate and CPU per image once started: the big run minus the tiny one (same engine and detector)."""
    images = big["samples"] - tiny["samples"]
    seconds = big["wall_s"] - tiny["wall_s"]
    return {"images_per_s": round(images / seconds, 1) if seconds > 0 else None,
            "cpu_s_per_image": round((big["cpu_s"] - tiny["cpu_s"]) / images, 4)}


def run() -> dict:
    work = Path(tempfile.mkdtemp(prefix="grit-bench-engines-"))
    results: dict = {"images": IMAGES, "shard_size": SHARD_SIZE, "tiny_images": TINY_IMAGES,
                     "cpu_count": os.cpu_count(), "load_avg_at_start": [round(x, 2) for x in os.getloadavg()]}
    try:
        synth(work / "in", IMAGES, SHARD_SIZE)
        # Two shards: Ray starts as many actors as for the big input (one per core).
        synth(work / "tiny", TINY_IMAGES, TINY_IMAGES // 2)
        for detector in DETECTORS:
            jobs = {f"tiny-{engine}": (work / "tiny", work / f"tiny-{detector}-{engine}", engine)
                    for engine in ("local", "ray")}
            jobs |= {engine: (work / "in", work / f"out-{detector}-{engine}", engine) for engine in ENGINES}
            runs = interleaved(jobs, detector)
            tiny = {engine: runs.pop(f"tiny-{engine}") for engine in ("local", "ray")}
            local, ray = runs["local"], runs["ray"]
            data_path = {engine: _data_path(runs[engine], tiny[engine]) for engine in ("local", "ray")}
            faster = max(local["images_per_s"], ray["images_per_s"])
            results[detector] = {
                **runs,
                "tiny": tiny,
                "ray_startup_s": round(tiny["ray"]["wall_s"] - tiny["local"]["wall_s"], 2),
                "data_path": data_path,
                "ray_vs_local_images_per_s": _ratio(ray["images_per_s"], local["images_per_s"]),
                "ray_vs_local_cpu_per_image": _ratio(ray["cpu_s_per_image"], local["cpu_s_per_image"]),
                "data_path_ray_vs_local_images_per_s": _ratio(data_path["ray"]["images_per_s"] or 0,
                                                              data_path["local"]["images_per_s"] or 0),
                "data_path_ray_vs_local_cpu_per_image": _ratio(data_path["ray"]["cpu_s_per_image"],
                                                               data_path["local"]["cpu_s_per_image"]),
                "default_vs_faster_images_per_s": _ratio(runs["default"]["images_per_s"], faster),
                "default_picked_faster": runs["default"]["engine"] == (
                    "ray" if ray["images_per_s"] > local["images_per_s"] else "local"),
            }
        results["load_avg_at_end"] = [round(x, 2) for x in os.getloadavg()]
        return results
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    if len(sys.argv) > 3 and sys.argv[1] == "--measure" and sys.argv[3] == "--":
        print(json.dumps(_measure(sys.argv[4:], sys.argv[2])))
    else:
        print(json.dumps(run(), indent=2))
