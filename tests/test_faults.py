"""Faults of a GPU fleet are faults, not bad input (docs/robustness.md, "Fault model").

Each fault is injected through the plugin mechanism a user's detector uses
(``--detector grit_pipeline.fault_injection:FaultyDetector``), so it runs in Ray's workers as it does here:
a device lost after N images, out of memory above k images per call, a call that hangs, a process that dies
mid-shard, and storage whose writes fail transiently. For each, on the local engine and on Ray: nothing is
committed as a reject because of the fault, the run stops in one line or finishes by retrying, and the
build after a rerun equals a fault-free build (rows, rejects, tar members).
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from grit_pipeline import status as S
from grit_pipeline.pipeline import run_pipeline
from grit_pipeline.pipeline.preflight import WorkerError
from tests.build_files import build_files
from tests.test_pipeline import REPO, all_rows, clean_build, clean_world, local_config  # noqa: F401

FAULTY = "grit_pipeline.fault_injection:FaultyDetector"


def content(output: Path) -> dict[str, bytes]:
    """What a build holds for its users: rows, rejects and tar members (markers and stats record the run)."""
    return {name: p.read_bytes() for name, p in build_files(output).items()
            if name.endswith((".parquet", ".tar")) and not p.name.startswith("_")}


def faulty_config(world, output, state_dir, fault, **changes):
    options = {"score": "hash", "fault": fault, "state_dir": str(state_dir)}
    options.update(changes.pop("options", {}))
    return local_config(world, output, detector=FAULTY, detector_options=options, **changes)


def no_fault_rejects(output: Path) -> None:
    _, rejects = all_rows(output)
    assert not [r for r in rejects if r["status"] in (S.DETECTOR_ERROR, S.STAGE_ERROR)], rejects


# --- kill points --------------------------------------------------------------------------------------------

WRITE_TWO_FILES = ("from grit_pipeline.pipeline.storage import Folder; import sys; folder = Folder(sys.argv[1]); "
                   "folder.write_bytes('a', b'1'); folder.write_bytes('b', b'2')")


@pytest.mark.parametrize("switch", ["1", None])
def test_a_kill_point_kills_the_process_only_under_the_switch(tmp_path, switch):
    """``GRIT_FAULT_KILL_AT_RENAME=2``: the second atomic write dies with its temp file complete and not
    renamed; without ``GRIT_FAULT_INJECTION=1`` the variable does nothing."""
    env = {k: v for k, v in os.environ.items() if k != "GRIT_FAULT_INJECTION"}
    env.update({"GRIT_FAULT_KILL_AT_RENAME": "2", **({"GRIT_FAULT_INJECTION": switch} if switch else {})})
    done = subprocess.run([sys.executable, "-c", WRITE_TWO_FILES, str(tmp_path)], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=120)
    names = sorted(p.name.split(".tmp-")[0] + (".tmp" if ".tmp-" in p.name else "") for p in tmp_path.iterdir())
    if switch:
        assert done.returncode == -signal.SIGKILL, done.stderr[-2000:]
        assert names == ["a", "b.tmp"]
    else:
        assert done.returncode == 0, done.stderr[-2000:]
        assert names == ["a", "b"]


# --- local engine --------------------------------------------------------------------------------------------

@pytest.mark.parametrize("fault, changes", [
    ("device_lost", {}),
    ("hang", {"detector_timeout_s": 3.0}),
    ("error", {}),
])
def test_local_a_fault_of_the_machine_stops_the_run_and_a_rerun_finishes_it(clean_world, clean_build, tmp_path,
                                                                              fault, changes):
    output = tmp_path / "grit"
    config = faulty_config(clean_world, output, tmp_path / "state", fault, options={"after": 6}, **changes)
    with pytest.raises(WorkerError) as stopped:
        run_pipeline(config)
    line = str(stopped.value)
    assert "\n" not in line and line.startswith("shard 00001 stopped by a fault of the machine"), line
    assert "Rerun the same command to finish the build" in line
    assert sorted(p.name for p in output.glob("_done/*.done")) == ["00000.done"]  # shard 00001: nothing committed
    no_fault_rejects(output)
    summary = run_pipeline(config)  # the rerun (the fault was in the first process only)
    assert summary.shards_skipped == ["00000"] and summary.shards_written == ["00001", "00002"]
    assert content(output) == content(clean_build)
    no_fault_rejects(output)


def test_local_out_of_memory_halves_the_batch_and_counts_it(clean_world, clean_build, tmp_path):
    output = tmp_path / "grit"
    run_pipeline(faulty_config(clean_world, output, tmp_path / "state", "oom", options={"above": 2}))
    assert content(output) == content(clean_build)
    splits = [json.loads((output / "_stats" / f"{s}.json").read_text())["faults"].get("oom_splits", 0)
              for s in ("00000", "00001", "00002")]
    assert all(n >= 1 for n in splits), splits
    assert json.loads((output / "_stats.json").read_text())["faults"]["oom_splits"] == sum(splits)


def test_local_a_process_that_dies_mid_shard_leaves_nothing_and_a_rerun_finishes(clean_world, clean_build,
                                                                                    tmp_path):
    output = tmp_path / "grit"
    args = [sys.executable, "-m", "grit_pipeline", "run", "--input", str(clean_world), "--output", str(output),
            "--engine", "local", "--detector", FAULTY, "--detector-option", "score=hash",
            "--detector-option", "fault=exit", "--detector-option", "after=6",
            "--detector-option", f"state_dir={tmp_path / 'state'}"]
    died = subprocess.run(args, cwd=REPO, capture_output=True, text=True, timeout=300)
    assert died.returncode == 3, died.stderr[-2000:]
    assert sorted(p.name for p in output.glob("_done/*.done")) == ["00000.done"]
    rerun = subprocess.run(args, cwd=REPO, capture_output=True, text=True, timeout=300)
    assert rerun.returncode == 0, rerun.stderr[-2000:]
    assert content(output) == content(clean_build)


def test_local_storage_writes_that_fail_transiently_are_retried(clean_world, clean_build, tmp_path, monkeypatch):
    monkeypatch.setenv("GRIT_FAULT_INJECTION", "1")
    monkeypatch.setenv("GRIT_FLAKY_FAIL_EVERY", "3")
    from grit_pipeline.fault_injection import FlakyFileSystem, register

    register()  # (this process imported the module before the switch was set)
    before = FlakyFileSystem.failures
    output = tmp_path / "grit"
    run_pipeline(local_config(clean_world, f"flaky://{output}", storage_backoff_s=0.001))
    assert FlakyFileSystem.failures > before  # writes did fail, and were retried
    assert content(output) == content(clean_build)


def test_storage_that_keeps_failing_fails_the_shard_cleanly(clean_world, tmp_path, monkeypatch):
    monkeypatch.setenv("GRIT_FAULT_INJECTION", "1")
    monkeypatch.setenv("GRIT_FLAKY_FAIL_EVERY", "1")  # every write fails
    from grit_pipeline.fault_injection import register
    from grit_pipeline.faults import StorageError

    register()

    output = tmp_path / "grit"
    with pytest.raises(StorageError, match="failed 2 times, last: OSError: 503 SlowDown"):
        run_pipeline(local_config(clean_world, f"flaky://{output}", storage_retries=2, storage_backoff_s=0.001))
    assert not list(output.glob("_done/*.done"))


# --- Ray ---------------------------------------------------------------------------------------------------------

def ray_config(world, output, state_dir, fault, **changes):
    return faulty_config(world, output, state_dir, fault, engine="ray", num_cpus=2, **changes)


@pytest.mark.ray
def test_ray_out_of_memory_and_flaky_storage_finish_in_one_run(clean_world, clean_build, tmp_path, monkeypatch):
    monkeypatch.setenv("GRIT_FAULT_INJECTION", "1")  # reaches the workers of the run's local Ray
    monkeypatch.setenv("GRIT_FLAKY_FAIL_EVERY", "4")
    from grit_pipeline.fault_injection import register

    register()
    output = tmp_path / "grit"
    summary = run_pipeline(ray_config(clean_world, f"flaky://{output}", tmp_path / "state", "oom",
                                      options={"above": 2}, storage_backoff_s=0.001))
    assert summary.actors_replaced == 0 and len(summary.shards_written) == 3
    assert content(output) == content(clean_build)
    assert json.loads((output / "_stats.json").read_text())["faults"]["oom_splits"] >= 3


@pytest.mark.ray
def test_ray_streaming_plan_restarts_the_gpu_actor_and_finishes(clean_world, clean_build, tmp_path, monkeypatch):
    """The plan used with GPUs (Ray Data actor pools), run here on CPUs: the grounding actor that meets a
    lost device ends its process; Ray Data restarts it and retries the batch."""
    import ray

    from grit_pipeline.pipeline import engine_ray

    plan = engine_ray.plan_operators
    monkeypatch.setattr(engine_ray, "plan_operators", lambda classes, gpus: plan(classes, gpus=True))
    ray.init(address="local", num_cpus=4, include_dashboard=False, configure_logging=False, log_to_driver=False)
    try:
        output = tmp_path / "grit"
        summary = run_pipeline(faulty_config(clean_world, output, tmp_path / "state", "device_lost",
                                             options={"after": 6}, engine="ray", text_batch_size=2))
    finally:
        ray.shutdown()
    assert len(summary.shards_written) == 3
    assert content(output) == content(clean_build)
    no_fault_rejects(output)


# The tests below share one local Ray (a run joins a Ray this process runs already): its start and stop
# cost more than a run here. Tests that start their own Ray come before them in this file.
@pytest.fixture(scope="module")
def shared_ray():
    import ray

    ray.shutdown()
    ray.init(address="local", num_cpus=2, include_dashboard=False, configure_logging=False, log_to_driver=True)
    yield
    ray.shutdown()


@pytest.mark.ray
@pytest.mark.parametrize("fault, changes", [
    ("device_lost", {}),
    ("hang", {"detector_timeout_s": 4.0}),
    ("exit", {}),
])
def test_ray_the_shard_goes_to_a_replacement_actor_and_the_run_finishes(shared_ray, clean_world, clean_build,
                                                                          tmp_path, fault, changes, capsys):
    output = tmp_path / "grit"
    # after 2 images: the faulty actor (the first built) fails on its first shard, whichever it gets
    summary = run_pipeline(ray_config(clean_world, output, tmp_path / "state", fault, options={"after": 2},
                                      progress=True, **changes))
    assert summary.actors_replaced == 1 and len(summary.shards_written) == 3
    assert "the shard goes to another actor" in capsys.readouterr().err
    assert content(output) == content(clean_build)
    no_fault_rejects(output)
    assert not (output / "_parts").exists()


@pytest.mark.ray
def test_ray_a_device_lost_mid_shard_keeps_the_parts_already_staged_once(shared_ray, clean_world, clean_build,
                                                                           tmp_path):
    """Shards of several parts (--chunk-rows 2): the faulty actor stages a shard's first part, then loses its
    device; the replacement redoes the shard, its copy of that part is refused, and every key lands once."""
    output = tmp_path / "grit"
    summary = run_pipeline(ray_config(clean_world, output, tmp_path / "state", "device_lost", options={"after": 3},
                                      chunk_rows=2))
    assert summary.actors_replaced == 1 and summary.duplicate_parts >= 1
    assert content(output) == content(clean_build)
    no_fault_rejects(output)


@pytest.mark.ray
def test_ray_replacements_are_bounded_then_the_run_stops_in_one_line(shared_ray, clean_world, clean_build, tmp_path):
    """Every actor's device fails (no state dir: every process carries the fault): after
    --max-actor-replacements the run stops; a rerun with a healthy detector finishes the build."""
    output = tmp_path / "grit"
    config = ray_config(clean_world, output, "", "device_lost", options={"after": 0}, max_actor_replacements=1)
    with pytest.raises(WorkerError) as stopped:
        run_pipeline(config)
    line = str(stopped.value)
    assert "\n" not in line and "--max-actor-replacements 1 are used up" in line and "CUDA error" in line, line
    assert not list(output.glob("_done/*.done"))
    no_fault_rejects(output)
    healthy = config.replace(detector_options={"score": "hash", "fault": "device_lost", "after": "0",
                                               "times": "0", "state_dir": str(tmp_path / "state")})
    run_pipeline(healthy.replace(overwrite=True))
    assert content(output) == content(clean_build)


def test_a_read_cut_by_the_network_is_a_storage_fault_not_a_broken_shard(tmp_path, monkeypatch):
    """A connection reset while streaming an input tar stops the shard (``StorageError``: retried, never
    rejects); the same tar cut short on disk is a broken input (``shard_error`` rows), as before."""
    import io

    from grit_pipeline.faults import StorageError
    from grit_pipeline.pipeline import storage
    from grit_pipeline.pipeline.ingest import InputShard, read_input_shard
    from tests.fixtures_shards import healthy_samples, write_shard

    write_shard(tmp_path, "00000", healthy_samples(0, 6))
    shard = InputShard("00000", str(tmp_path), True, True)
    size = (tmp_path / "00000.tar").stat().st_size

    class ResetAfter(io.BytesIO):
        def read(self, n=-1):
            if self.tell() > size // 2:
                raise ConnectionResetError(104, "Connection reset by peer")
            return super().read(n)

    opened = storage.Folder.open

    def open_resetting(self, name, mode="rb"):
        return ResetAfter(Path(self.path(name)).read_bytes()) if name.endswith(".tar") else opened(self, name, mode)

    monkeypatch.setattr(storage.Folder, "open", open_resetting)
    with pytest.raises(StorageError, match="reading 00000.tar .* ConnectionResetError"):
        read_input_shard(shard)
    monkeypatch.setattr(storage.Folder, "open", opened)
    (tmp_path / "00000.tar").write_bytes((tmp_path / "00000.tar").read_bytes()[: size // 2])
    statuses = [s["status"] for s in read_input_shard(shard)]
    assert S.SHARD_ERROR in statuses and len(statuses) == 6
