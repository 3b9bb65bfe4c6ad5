"""What stopping a local Ray costs at the end of a run: ``engine_ray.stop_ray()`` (``ray.shutdown()``).

Each of RUNS fresh child processes starts a local Ray the way ``grit run`` does without a cluster
(``engine_ray.init_ray``, 2 logical CPUs), runs one task (so a worker exists), then times ``stop_ray()`` and
counts the processes Ray started (and theirs) still alive when it returns. Ray stops its processes one
after the other, giving each up to a second to exit; it has no public call to kill them all at once.
Keys: ``shutdown_s`` (per run), ``median_s``, ``processes``, ``alive_at_return``, load.
"""
from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RUNS = int(os.environ.get("GRIT_BENCH_RAY_SHUTDOWN_RUNS", "3"))


def child() -> dict:
    import psutil
    import ray

    from grit_pipeline.pipeline.config import PipelineConfig
    from grit_pipeline.pipeline.engine_ray import init_ray, stop_ray

    init_ray(PipelineConfig(input="in", output="out", detector="noop", num_cpus=2, progress=False))
    ray.get(ray.remote(lambda: 1).remote())
    from ray._private.worker import _global_node  # (only to list the processes; stop_ray does not use it)

    tops = [psutil.Process(info.process.pid) for infos in _global_node.all_processes.values() for info in infos]
    processes = tops + [child for top in tops for child in top.children(recursive=True)]
    started = time.perf_counter()
    stop_ray()
    took = time.perf_counter() - started

    def alive(process) -> bool:
        try:
            return process.status() != psutil.STATUS_ZOMBIE
        except psutil.Error:
            return False

    return {"shutdown_s": round(took, 3), "processes": len(processes),
            "alive_at_return": sum(alive(p) for p in processes)}


def run() -> dict:
    env = dict(os.environ, RAY_USAGE_STATS_ENABLED="0", PYTHONPATH=str(ROOT))
    env.pop("RAY_ADDRESS", None)
    results: dict = {"load_avg_1m_at_start": os.getloadavg()[0], "cpus": os.cpu_count(), "runs": []}
    for _ in range(RUNS):
        out = subprocess.run([sys.executable, "-m", "bench.bench_ray_shutdown", "--child"], cwd=ROOT, env=env,
                             capture_output=True, text=True, timeout=300)
        if out.returncode != 0:
            raise RuntimeError(f"ray shutdown bench child failed:\n{out.stderr[-3000:]}")
        results["runs"].append(json.loads(out.stdout.strip().splitlines()[-1]))
    results["median_s"] = statistics.median(r["shutdown_s"] for r in results["runs"])
    results["alive_at_return"] = max(r["alive_at_return"] for r in results["runs"])
    results["load_avg_1m_at_end"] = os.getloadavg()[0]
    return results


if __name__ == "__main__":
    print(json.dumps(child() if sys.argv[1:] == ["--child"] else run(), indent=None if sys.argv[1:] else 2))
