"""Worker-side writing without Ray: parts, the driver's ledger, the exactly-once commit, `.done` sizes,
stage start-up timing. Local folders, file:// and memory:// (an object-store-like filesystem) alike."""
from __future__ import annotations

import json

import fsspec
import pytest

from grit_pipeline.pipeline import layout
from grit_pipeline.pipeline.parts import PartLedger, commit_shard, parts_folder, remove_stale_parts, write_parts
from grit_pipeline.pipeline.sample import pack_detections, unpack_detections
from grit_pipeline.pipeline.shards import BuildSink, InputSource
from grit_pipeline.pipeline.stages import FUSED
from tests.test_pipeline import clean_build, clean_world, local_config, snapshot  # noqa: F401 - fixtures

SHARDS = ("00000", "00001", "00002")


def finished_samples(world, config):
    """Every shard's samples through the stages, in this process (what the Ray workers hand to the writer)."""
    source = InputSource(config)
    source.shards()
    stages = [cls(config) for cls in FUSED]
    out = {}
    for shard in SHARDS:
        samples = source.read(shard)
        for stage in stages:
            stage(samples)
        out[shard] = samples
    return source, out


@pytest.fixture(scope="module")
def staged(clean_world):
    config = local_config(clean_world, "unused")
    return finished_samples(clean_world, config)


@pytest.mark.parametrize("scheme", ["path", "file", "memory"])
def test_parts_committed_by_a_worker_equal_the_local_build(staged, clean_build, tmp_path, scheme):
    source, samples = staged
    if scheme == "memory":
        url = f"memory://parts-test-{tmp_path.name}"
    else:
        url = f"file://{tmp_path / 'out'}" if scheme == "file" else str(tmp_path / "out")
    config = local_config("unused", url)
    sink = BuildSink(config)
    ledger = PartLedger()
    params = config.params_through("write")
    for shard, rows in samples.items():
        # Batches in a scrambled order, one of them written twice (a retried attempt), mixed shards per batch.
        rows = [dict(r) for r in reversed(rows)]
        batches = [rows[:2], rows[2:], rows[:2]]
        for batch in batches:
            for info in write_parts(url, [dict(r) for r in batch]):
                ledger.add(info)
        assert ledger.complete(shard) and len(ledger.rejected) == 1
        ledger.rejected.clear()
        assert len(parts_folder(url, shard).names()) == 3  # the duplicate is staged, never merged
        result = commit_shard(sink, source, shard, ledger.shards[shard].parts, params, source.describe(shard))
        assert result["samples"] == 5 and not parts_folder(url, shard).exists()
        # A retried commit (its first attempt finished) changes nothing.
        assert commit_shard(sink, source, shard, ledger.shards[shard].parts, params, "x")["samples"] == 5
    reference = snapshot(clean_build)
    fs, root = fsspec.core.url_to_fs(url)
    for name in reference:
        if name.endswith((".parquet", ".tar")):
            assert fs.cat(f"{root}/{name}") == reference[name], name
    assert all(sink.is_done(shard, params) for shard in SHARDS)


def test_ledger_accepts_each_key_once_and_knows_when_a_shard_is_complete():
    ledger = PartLedger()

    def info(part, keys, total=4):
        return {"shard": "00000", "part": part, "shard_total": total, "keys": keys,
                "statuses": ["grounded"] * len(keys), "startup_s": {"ground": 1.5}, "node": "n1"}

    assert ledger.add(info("a", ["k1", "k2"]))
    assert not ledger.complete("00000")
    assert not ledger.add(info("b", ["k2", "k3"]))          # overlaps an accepted part
    assert not ledger.add(info("c", ["k3", "k3"]))          # a key twice in one part
    assert ledger.add(info("d", ["k3", "k4"]))
    assert ledger.complete("00000") and ledger.shards["00000"].parts == ["a", "d"]
    assert ledger.shards["00000"].counts == {"grounded": 4} and ledger.startup_s == {"ground": 3.0}
    assert ledger.rejected == [("00000", "b"), ("00000", "c")] and ledger.incomplete() == {}


def test_stale_parts_of_this_runs_shards_are_removed_others_kept(tmp_path):
    for shard in ("00000", "00001"):
        folder = parts_folder(str(tmp_path), shard)
        folder.makedirs()
        folder.write_bytes("x.parquet", b"left by a killed run")
    assert remove_stale_parts(str(tmp_path), ["00000", "00005"]) == ["00000"]
    assert not parts_folder(str(tmp_path), "00000").exists() and parts_folder(str(tmp_path), "00001").exists()
    assert remove_stale_parts(str(tmp_path), ["00001"]) == ["00001"]
    assert not parts_folder(str(tmp_path)).exists()


def test_a_shard_changed_after_its_done_marker_is_rebuilt(clean_world, clean_build, tmp_path):
    from grit_pipeline.pipeline import run_pipeline

    output = tmp_path / "grit"
    run_pipeline(local_config(clean_world, output))
    marker = json.loads((output / layout.done_name("00001")).read_text())
    assert marker["files"]["00001.parquet"] == (output / "00001.parquet").stat().st_size
    # Truncated after the commit (a partial copy, a disk problem): noticed and rebuilt.
    data = (output / "00001.parquet").read_bytes()
    (output / "00001.parquet").write_bytes(data[: len(data) // 2])
    (output / layout.tar_name("00002")).unlink()
    summary = run_pipeline(local_config(clean_world, output))
    assert summary.shards_written == ["00001", "00002"] and summary.shards_skipped == ["00000"]
    assert snapshot(output) == snapshot(clean_build)


def test_commit_of_a_shard_without_parts_checks_the_source_is_empty(staged, tmp_path):
    source, _ = staged
    config = local_config("unused", tmp_path / "out")
    with pytest.raises(RuntimeError, match="none of its 5 samples came out of the pipeline"):
        commit_shard(BuildSink(config), source, "00000", [], config.params_through("write"), "x")


def test_detections_pack_and_unpack_are_inverse():
    from grit_pipeline.detectors.base import Detection

    detections = [Detection(0, (0.1, 0.2, 0.3, 0.4), 0.9), Detection(2, (0.0, 0.0, 1.0, 1.0), 0.25)]
    packed = pack_detections(detections)
    assert packed == [[0.0, 0.1, 0.2, 0.3, 0.4, 0.9], [2.0, 0.0, 0.0, 1.0, 1.0, 0.25]]
    assert unpack_detections(packed) == detections and unpack_detections(None) == []


def test_stage_start_up_is_reported_once_and_kept_out_of_per_sample_time(clean_world, tmp_path, monkeypatch):
    import types

    from grit_pipeline.pipeline import run_pipeline, stages
    from grit_pipeline.pipeline.sample import new_sample

    clock = [0.0]  # a fake clock: setup costs 100 s, processing 1 s per sample
    monkeypatch.setattr(stages, "time", types.SimpleNamespace(perf_counter=lambda: clock[0]))

    class Slow(stages.Stage):
        name = "slow"

        def setup(self):
            clock[0] += 100

        def process(self, samples):
            clock[0] += len(samples)

    stage = Slow(local_config("in", "out"))
    first, second = [new_sample(key="a"), new_sample(key="b")], [new_sample(key="c")]
    stage(first)
    stage(second)
    assert first[0]["startup_s"] == {"slow": 100} and first[1]["startup_s"] is None and second[0]["startup_s"] is None
    assert [s["seconds"]["slow"] for s in first + second] == [1, 1, 1]
    monkeypatch.undo()
    # Through a run: every stage's start-up in the summary, none in the per-shard stats' stage times.
    summary = run_pipeline(local_config(clean_world, tmp_path / "grit"))
    assert set(summary.startup_s) == {"noun_chunks", "ground", "expand"}
