"""The Ray Data engine: same output as the local engine, stage-by-stage on Ray, kill -9 of the driver.

One local Ray session is shared by the module (starting Ray costs seconds); data stays tiny.
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys

import pytest

from grit_pipeline.pipeline import run_pipeline, run_stage
from tests.build_files import done_names, temp_files
from tests.fixtures_shards import healthy_samples, write_broken_world, write_shard
from tests.test_pipeline import NOOP_FLAGS, REPO, all_rows, local_config, snapshot

pytestmark = pytest.mark.ray


@pytest.fixture(scope="module")
def ray_session():
    import ray

    ray.init(address="local", num_cpus=3, include_dashboard=False, configure_logging=False, log_to_driver=False)
    yield
    ray.shutdown()


def make_worlds(root, clean_shards: int, samples_per_shard: int):
    """root/broken (the broken world) and root/clean, each with its local-engine build (the reference)."""
    write_broken_world(root / "broken")
    for shard in range(clean_shards):
        write_shard(root / "clean", f"{shard:05d}", healthy_samples(shard, samples_per_shard))
    local = {}
    for name in ("broken", "clean"):
        local[name] = root / f"{name}_local"
        run_pipeline(local_config(root / name, local[name]))
    return root, local


@pytest.fixture(scope="module")
def worlds(tmp_path_factory):
    return make_worlds(tmp_path_factory.mktemp("ray_worlds"), clean_shards=3, samples_per_shard=5)


def ray_config(input_dir, output_dir, **changes):
    values = dict(engine="ray", text_batch_size=4, ground_batch_size=2, object_store_limit_mb=64)
    return local_config(input_dir, output_dir, **{**values, **changes})


def test_ray_engine_gives_the_local_engines_output(ray_session, worlds, tmp_path):
    root, local = worlds
    output = tmp_path / "ray"
    summary = run_pipeline(ray_config(root / "broken", output))
    assert sorted(summary.shards_written) == ["00000", "00001", "00002", "00003", "00004"]  # 00004 is empty
    assert snapshot(output) == snapshot(local["broken"])
    grit, rejects = all_rows(output)
    keys = [r["key"] for r in grit + rejects]
    assert len(keys) == len(set(keys)) == 25


@pytest.mark.slow
def test_ray_stage_by_stage_equals_fused(ray_session, worlds, tmp_path):
    root, local = worlds
    output = tmp_path / "staged"
    for stage in ("noun_chunks", "ground", "expand", "write"):
        run_stage(stage, ray_config(root / "clean", output))
    assert snapshot(output) == snapshot(local["clean"])


@pytest.mark.slow
def test_fsspec_output_url_on_ray_and_memory_refused(ray_session, worlds, tmp_path):
    """Workers write through fsspec (file:// here, s3:// on a cluster); memory:// exists in one process
    only, so the Ray engine refuses it in one clear sentence instead of losing the workers' writes."""
    root, local = worlds
    output = tmp_path / "grit"
    run_pipeline(ray_config(root / "clean", f"file://{output}"))
    assert snapshot(output) == snapshot(local["clean"])
    assert not (output / "_parts").exists()
    with pytest.raises(ValueError, match="memory:// lives inside one process"):
        run_pipeline(ray_config(root / "clean", "memory://grit-ray-out"))


@pytest.mark.slow
def test_kill_9_of_the_ray_driver_then_rerun(worlds, tmp_path):
    """`grit run` on Ray: the driver SIGKILLs itself once the first shard is committed (the workers may
    have staged parts of the others); the rerun discards those parts, redoes the unfinished shards and the
    result equals an uninterrupted run."""
    root, local = worlds
    output = tmp_path / "grit"
    args = [sys.executable, "-m", "grit_pipeline", "run", "--input", str(root / "clean"), "--output", str(output),
            "--engine", "ray", "--num-cpus", "2", "--text-batch-size", "4", "--ground-batch-size", "2", "--no-progress",
            *NOOP_FLAGS]
    env = {**os.environ, "NO_ALBUMENTATIONS_UPDATE": "1", "HF_HUB_OFFLINE": "1", "RAY_USAGE_STATS_ENABLED": "0"}
    env.pop("RAY_ADDRESS", None)  # a local in-process Ray, whatever else runs on this machine
    killed = subprocess.run(args, cwd=REPO, env={**env, "GRIT_FAULT_INJECTION": "1", "GRIT_FAULT_KILL_DRIVER_AFTER_COMMITS": "1"},
                            capture_output=True, text=True, timeout=300)
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-3000:]
    assert done_names(output)
    rerun = subprocess.run(args, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    assert snapshot(output) == snapshot(local["clean"])
    assert not (output / "_parts").exists() and not temp_files(output)


@pytest.mark.slow
def test_default_config_runs_with_the_demo_detector(ray_session, worlds, tmp_path):
    """`grit run --input DIR --output DIR` with nothing else: Ray engine, demo detector."""
    from grit_pipeline import status as S
    from grit_pipeline.pipeline import PipelineConfig

    root, _ = worlds
    output = tmp_path / "grit"
    summary = run_pipeline(PipelineConfig(input=str(root / "clean"), output=str(output), progress=False))
    assert sorted(summary.shards_written) == ["00000", "00001", "00002"]
    grit, rejects = all_rows(output)
    assert len({r["key"] for r in grit + rejects}) == 15
    assert all(r["status"] in (S.GROUNDED, S.NO_BOX) for r in grit + rejects)
