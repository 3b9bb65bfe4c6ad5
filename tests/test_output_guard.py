"""The output folder: never the input, one run at a time (stale locks taken over), and `grit stats` /
`grit report` saying when a build mixes parameters, repeats keys across shards or has a damaged stats file."""
from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time

import pytest

from grit_pipeline.pipeline import PipelineConfig, layout, run_pipeline
from grit_pipeline.pipeline.guard import LOCK_NAME, STALE_AFTER_S, OutputGuardError, output_lock
from tests.build_files import build_files
from tests.fixtures_shards import healthy_samples, write_shard


def _config(input_dir, output_dir, **changes):
    return PipelineConfig(input=str(input_dir), output=str(output_dir), engine="local", detector="noop",
                          detector_options={"score": "hash"}, progress=False, **changes)


def _main(capsys, *args):
    from grit_pipeline.cli import main

    code = main(list(args))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


@pytest.mark.parametrize("output", ["same", "parent"])
def test_an_output_that_is_or_contains_the_input_is_refused(tmp_path, capsys, output):
    shards = tmp_path / "data" / "shards"
    write_shard(shards, "00000", healthy_samples(0, 1))
    before = sorted((p.name, p.stat().st_size) for p in shards.iterdir())
    target = shards if output == "same" else tmp_path / "data"
    code, _, err = _main(capsys, "run", "--input", str(shards), "--output", str(target), "--engine", "local",
                         "--no-progress")
    assert code != 0 and ("is the input folder" in err or "contains the input folder" in err)
    assert "Traceback" not in err and sorted((p.name, p.stat().st_size) for p in shards.iterdir()) == before


def test_a_second_run_on_a_locked_output_refuses_with_the_holder(tmp_path):
    with output_lock(str(tmp_path / "out")):
        lock = json.loads((tmp_path / "out" / LOCK_NAME).read_text())
        assert lock["host"] == socket.gethostname() and lock["pid"] == os.getpid()
        with pytest.raises(OutputGuardError, match=rf"in use by another grit run \(host .*, pid {os.getpid()}, started "):
            with output_lock(str(tmp_path / "out")):
                pass
    assert not (tmp_path / "out" / LOCK_NAME).exists()  # released


def test_stale_locks_are_taken_over(tmp_path, capsys):
    out = tmp_path / "out"
    out.mkdir()
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    stale = [{"host": socket.gethostname(), "pid": int(dead.stdout), "started": time.time()},  # process gone
             {"host": "elsewhere.invalid", "pid": 1, "started": 0}]                             # not refreshed
    for lock in stale:
        (out / LOCK_NAME).write_text(json.dumps(lock))
        old = time.time() - STALE_AFTER_S - 60
        os.utime(out / LOCK_NAME, (old, old))
        with output_lock(str(out)):
            assert json.loads((out / LOCK_NAME).read_text())["pid"] == os.getpid()
        assert "taking over a stale lock" in capsys.readouterr().err
    fresh = {"host": "elsewhere.invalid", "pid": 1, "started": time.time()}
    (out / LOCK_NAME).write_text(json.dumps(fresh))
    with pytest.raises(OutputGuardError, match="host elsewhere.invalid, pid 1"):
        with output_lock(str(out)):
            pass


def test_stats_and_report_name_mixed_parameters_duplicate_keys_and_damaged_stats(tmp_path, capsys):
    shards = tmp_path / "in"
    write_shard(shards, "00000", healthy_samples(0, 2))
    write_shard(shards, "00001", healthy_samples(0, 2))  # the same keys as 00000
    write_shard(shards, "00002", healthy_samples(2, 2))
    output = tmp_path / "grit"
    run_pipeline(_config(shards, output, shards=("00000", "00002")))
    # a build that mixes thresholds (grit run refuses to make one; files copied by hand can)
    run_pipeline(_config(shards, tmp_path / "other", shards=("00001",), box_threshold=0.5))
    copied = [name for name in build_files(tmp_path / "other") if name.rpartition("/")[2].startswith("00001")]
    assert len(copied) == 5   # pairs, tar, rejects, stats and marker
    for name in copied:
        (output / name).write_bytes((tmp_path / "other" / name).read_bytes())
    (output / layout.stats_name("00002")).write_text('{"samples": 2, "counts": {"grounded": "many"')  # damaged
    code, out, err = _main(capsys, "stats", str(output))
    assert code == 0 and "Traceback" not in err
    assert "different box_threshold: 0.5 (1 shard), 0.65 (1 shard)" in out.replace("0.65 (2 shards)", "0.65 (1 shard)")
    assert "2 key(s) appear in more than one shard" in out and "'000000000' in 00000, 00001" in out
    assert f"unreadable shard stats file {layout.stats_name('00002')}" in out
    totals = json.loads(_main(capsys, "stats", str(output), "--json")[1])
    assert totals["shards"] == 2 and totals["samples"] == 4 and len(totals["warnings"]) == 3

    from grit_pipeline.views.dataset import Dataset
    from grit_pipeline.views.report import collect

    warnings = collect(Dataset.open(output)).warnings
    assert any("box_threshold" in w for w in warnings) and any("more than one shard" in w for w in warnings)
