"""The pipeline without Ray (local engine): ingest of broken shards, fused vs stage-by-stage, resume,
kill -9 mid-write, rethresholding one stage, stats and the CLI."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from grit_pipeline import status as S
from grit_pipeline.pipeline import PipelineConfig, collect_totals, layout, run_pipeline, run_stage
from grit_pipeline.record import GRIT_SCHEMA, GritRecord
from grit_pipeline.serialize import grounded_text
from tests.build_files import build_files, done_names, temp_files
from tests.fixtures_shards import healthy_samples, write_broken_world, write_shard

REPO = Path(__file__).resolve().parents[1]
NOOP_HASH = {"score": "hash"}  # deterministic mix of kept and dropped boxes, no model


def local_config(input_dir, output_dir, **changes) -> PipelineConfig:
    values = dict(input=str(input_dir), output=str(output_dir), engine="local", detector="noop",
                  detector_options=dict(NOOP_HASH), progress=False)
    values.update(changes)
    return PipelineConfig(**values)


def snapshot(output: Path) -> dict[str, object]:
    """A build's content for comparisons (by relative name, the layout's sub-folders included): file bytes,
    stats without timings; run metadata left out."""
    out = {}
    for name, path in build_files(output).items():
        if name == "_run.json" or ".tmp-" in name:
            continue
        if name == "_stats.json" or name.startswith(f"{layout.STATS_DIR}/"):
            stats = json.loads(path.read_text())
            stats.pop("timings_s", None)
            out[name] = stats
        elif name.startswith(f"{layout.DONE_DIR}/"):  # the stats file's recorded size depends on its timings
            marker = json.loads(path.read_text())
            marker["files"] = {k: v for k, v in marker.get("files", {}).items()
                               if not k.startswith(f"{layout.STATS_DIR}/")}
            out[name] = marker
        else:
            out[name] = path.read_bytes()
    return out


def all_rows(output: Path) -> tuple[list[dict], list[dict]]:
    grit, rejects = [], []
    for path in sorted(Path(output).glob("*.parquet")):
        grit.extend(pq.read_table(path).to_pylist())
    for path in sorted(Path(output).glob(f"{layout.REJECTS_DIR}/*.parquet")):
        rejects.extend(pq.read_table(path).to_pylist())
    return grit, rejects


@pytest.fixture(scope="module")
def broken_world(tmp_path_factory):
    folder = tmp_path_factory.mktemp("broken") / "shards"
    expected = write_broken_world(folder)
    return folder, expected


@pytest.fixture(scope="module")
def broken_build(broken_world, tmp_path_factory):
    folder, _ = broken_world
    output = tmp_path_factory.mktemp("broken_build") / "grit"
    summary = run_pipeline(local_config(folder, output))
    return output, summary


@pytest.fixture(scope="module")
def clean_world(tmp_path_factory):
    folder = tmp_path_factory.mktemp("clean") / "shards"
    for shard in range(3):
        write_shard(folder, f"{shard:05d}", healthy_samples(shard, 5))
    return folder


@pytest.fixture(scope="module")
def clean_build(clean_world, tmp_path_factory):
    output = tmp_path_factory.mktemp("clean_build") / "grit"
    run_pipeline(local_config(clean_world, output))
    return output


def test_every_input_key_once_with_status_and_reason(broken_world, broken_build):
    _, expected = broken_world
    output, summary = broken_build
    grit, rejects = all_rows(output)
    keys = [r["key"] for r in grit] + [r["key"] for r in rejects]
    assert len(keys) == len(set(keys)), "a key appears twice"
    assert set(keys) == {k for shard in expected.values() for k in shard}
    got = {r["key"]: r["status"] for r in grit + rejects}
    for shard, statuses in expected.items():
        for key, want in statuses.items():
            if want not in (None, "?"):
                assert got[key] == want, (key, got[key], want)
            elif want is None:
                assert got[key] in (S.GROUNDED, S.NO_BOX), (key, got[key])
    assert all(r["status"] == S.GROUNDED for r in grit)
    assert all(r["status"] in S.ALL and r["status"] != S.GROUNDED and r["reason"] for r in rejects)
    assert summary.shards_written == ["00000", "00001", "00002", "00003", "00004"]
    assert json.loads((output / layout.stats_name("00004")).read_text())["samples"] == 0
    assert pq.read_table(output / layout.rejects_name("00004")).num_rows == 0


def test_truncated_tar_keeps_samples_before_the_cut(broken_world, broken_build):
    output, _ = broken_build
    grit, rejects = all_rows(output)
    statuses = {r["key"]: r["status"] for r in grit + rejects if r["source_shard"] == "00001"}
    order = sorted(statuses)
    assert statuses[order[0]] in (S.GROUNDED, S.NO_BOX)   # read before the cut
    assert statuses[order[-1]] == S.SHARD_ERROR           # after it
    reason = next(r["reason"] for r in rejects if r["key"] == order[-1])
    assert "00001.tar" in reason and "unexpected end" in reason
    # once the tar is unreadable every later sample is a shard error (no gap, no reordering)
    seen_error = False
    for key in order:
        seen_error |= statuses[key] == S.SHARD_ERROR
        assert not seen_error or statuses[key] == S.SHARD_ERROR


def test_missing_files_and_rejects_have_reasons(broken_build):
    output, _ = broken_build
    _, rejects = all_rows(output)
    by_key = {r["key"]: r for r in rejects}
    assert "no tar file" in by_key["000030000"]["reason"]
    assert "404" in by_key["000000102"]["reason"]
    assert by_key["000000100"]["stage"] == "ground" and "corrupt" in by_key["000000100"]["reason"]
    assert by_key["000000105"]["status"] == S.LETTERBOXED and "keep_ratio" in by_key["000000105"]["reason"]
    assert by_key["000000104"]["reason"] == "caption is not valid UTF-8"
    # tar without parquet: its samples are still processed
    grit, _ = all_rows(output)
    assert {r["source_shard"] for r in grit} >= {"00002"}


def test_output_schema_tar_and_stats(broken_build):
    output, _ = broken_build
    table = pq.read_table(output / "00000.parquet")
    for field in GRIT_SCHEMA:
        assert table.schema.field(field.name).type == field.type
    rows = table.to_pylist()
    assert rows, "shard 00000 must have grounded rows"
    import tarfile

    with tarfile.open(output / layout.tar_name("00000")) as tar:
        names = tar.getnames()
        for row in rows:
            record = GritRecord.from_dict(row)  # valid GrIT-20M record
            # the released loader's location cells by default (cell_rule="official")
            assert row["grounded_text"] == grounded_text(record, cell_rule="official")
            assert {f"{row['key']}.jpg", f"{row['key']}.json", f"{row['key']}.txt"} <= set(names)
            record = json.loads(tar.extractfile(f"{row['key']}.json").read())
            assert record["noun_chunks"] == row["noun_chunks"] and record["status"] == S.GROUNDED
            assert tar.extractfile(f"{row['key']}.txt").read().decode() == row["grounded_text"]
            assert all(item[6] > 0.65 for item in row["noun_chunks"])
            assert all(item[6] <= 0.65 for item in row["dropped_boxes"])
    assert len(names) == 3 * len(rows)
    stats = json.loads((output / layout.stats_name("00000")).read_text())
    assert sum(stats["counts"].values()) == stats["samples"] == 12
    assert stats["boxes"] == sum(len(r["noun_chunks"]) for r in rows)
    assert len(stats["score_histogram"]["edges"]) == 21 and len(stats["score_histogram"]["counts"]) == 20
    assert set(stats["timings_s"]) == {"noun_chunks", "ground", "expand"}
    totals = json.loads((output / "_stats.json").read_text())
    assert totals["samples"] == 25 and totals == {**collect_totals(str(output)), "timings_s": totals["timings_s"]}


def test_fused_and_stage_by_stage_give_identical_output(clean_world, clean_build, tmp_path):
    staged = tmp_path / "staged"
    config = local_config(clean_world, staged)
    for stage in ("noun_chunks", "ground", "expand", "write"):
        run_stage(stage, config)
    assert sorted(p.name for p in (staged / "_stages").iterdir()) == ["expand", "ground", "noun_chunks"]
    assert snapshot(staged) == snapshot(clean_build)


def test_rerunning_one_stage_with_another_threshold(clean_world, tmp_path):
    staged, fused = tmp_path / "staged", tmp_path / "fused"
    for stage in ("noun_chunks", "ground", "expand", "write"):
        run_stage(stage, local_config(clean_world, staged))
    low = local_config(clean_world, staged, box_threshold=0.3)
    summary = run_stage("ground", low)
    assert summary.shards_written == []  # the threshold does not change the ground stage's output
    assert run_stage("expand", low).shards_written == ["00000", "00001", "00002"]  # stale: rebuilt
    run_stage("write", low)
    run_pipeline(local_config(clean_world, fused, box_threshold=0.3))
    assert snapshot(staged) == snapshot(fused)
    grit, _ = all_rows(fused)
    assert any(0.3 < item[6] <= 0.65 for row in grit for item in row["noun_chunks"])


def test_stage_without_previous_stage_fails_clearly(clean_world, tmp_path):
    with pytest.raises(FileNotFoundError, match="noun-chunks"):
        run_stage("ground", local_config(clean_world, tmp_path / "out"))


def test_rerun_skips_done_redoes_partial_and_overwrite_forces(clean_world, clean_build, tmp_path):
    output = tmp_path / "grit"
    run_pipeline(local_config(clean_world, output))
    # a crash while rewriting shard 00001: its marker is gone, one file half-written under a temp name
    (output / layout.done_name("00001")).unlink()
    (output / layout.pairs_name("00001")).write_bytes(b"garbage")
    (output / f"{layout.tar_name('00001')}.tmp-12345").write_bytes(b"partial")
    summary = run_pipeline(local_config(clean_world, output))
    assert summary.shards_written == ["00001"] and summary.shards_skipped == ["00000", "00002"]
    assert snapshot(output) == snapshot(clean_build)
    assert not temp_files(output)
    summary = run_pipeline(local_config(clean_world, output, overwrite=True))
    assert summary.shards_written == ["00000", "00001", "00002"]
    # changed output-affecting parameters: refused, nothing changed; --overwrite rebuilds every shard
    from grit_pipeline.pipeline.preflight import PreflightError

    with pytest.raises(PreflightError, match=r"nms_iou: 0\.6 \(built\) vs 0\.5 \(this run\)"):
        run_pipeline(local_config(clean_world, output, nms_iou=0.5))
    summary = run_pipeline(local_config(clean_world, output, nms_iou=0.5, overwrite=True))
    assert summary.shards_written == ["00000", "00001", "00002"]


def _grit(*args, env=None, check=True):
    environment = {**os.environ, "NO_ALBUMENTATIONS_UPDATE": "1", "HF_HUB_OFFLINE": "1", **(env or {})}
    result = subprocess.run([sys.executable, "-m", "grit_pipeline", *args], cwd=REPO, env=environment,
                            capture_output=True, text=True, timeout=300)
    if check and result.returncode != 0:
        raise AssertionError(f"grit {args} exited {result.returncode}:\n{result.stderr[-3000:]}")
    return result


NOOP_FLAGS = ("--detector", "noop", "--detector-option", "score=hash")


@pytest.mark.parametrize("kill_at", [7, 10])
def test_kill_9_mid_run_then_rerun_gives_identical_output(clean_world, clean_build, tmp_path, kill_at):
    """The driver SIGKILLs itself at its N-th atomic write (temp file complete, not yet renamed).
    Each shard is 5 writes (4 files + marker): 7 dies inside shard 2, 10 just before shard 2's marker."""
    output = tmp_path / "grit"
    args = ("run", "--input", str(clean_world), "--output", str(output), "--engine", "local", *NOOP_FLAGS)
    killed = _grit(*args, env={"GRIT_FAULT_INJECTION": "1", "GRIT_FAULT_KILL_AT_RENAME": str(kill_at)}, check=False)
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
    assert done_names(output) == [layout.done_name("00000")]   # some but not all shards finished
    assert [p for p in temp_files(output) if p.name.startswith("00001")]   # the write that was cut off
    rerun = _grit(*args)
    assert "1 already done, 2 to do" in rerun.stderr
    assert snapshot(output) == snapshot(clean_build)
    grit, rejects = all_rows(output)
    keys = [r["key"] for r in grit + rejects]
    assert len(keys) == len(set(keys)) == 15


def _main(capsys, *args) -> tuple[int, str, str]:
    """`grit ARGS` in this process (the kill tests run it as a real subprocess)."""
    from grit_pipeline.cli import main

    capsys.readouterr()
    code = main(list(args))
    out = capsys.readouterr()
    return code, out.out, out.err


def test_cli_run_stats_and_exit_codes(broken_world, tmp_path, capsys):
    folder, _ = broken_world
    output = tmp_path / "grit"
    code, out, err = _main(capsys, "run", "--input", str(folder), "--output", str(output), "--engine", "local", *NOOP_FLAGS)
    assert code == 0  # rejects do not fail the run
    assert "shards 5/5" in err and "ETA" in err and "noun_chunks" in err and "5 shards written" in out
    code, out, _ = _main(capsys, "stats", str(output))
    assert code == 0 and "images (grounded pairs)" in out and "shard_error" in out and "top drop reasons" in out
    code, out, _ = _main(capsys, "stats", str(output), "--json")
    totals = json.loads(out)
    assert totals["samples"] == 25 and sum(totals["counts"].values()) == 25
    assert totals["images"] == totals["counts"]["grounded"] > 0
    assert totals["spans"] <= totals["boxes"] and totals["avg_expression_words"] > 1
    assert {"status": "shard_error", "reason": "shard N has no tar file", "count": 3} in totals["drop_reasons"]
    code, _, err = _main(capsys, "run", "--input", str(tmp_path / "nope"), "--output", str(output), "--engine", "local")
    assert code == 2 and "input folder not found" in err
    assert _main(capsys, "stats", str(tmp_path / "nope"))[0] == 2
    assert _main(capsys, "run", "--input", str(folder), "--output", str(output), "--box-threshold", "1.5")[0] == 2


def test_stage_cli_and_python_m_stages(clean_world, tmp_path, capsys, monkeypatch):
    import runpy

    output = tmp_path / "grit"
    common = ("--output", str(output), "--engine", "local", "--no-progress", *NOOP_FLAGS)
    code, _, err = _main(capsys, "stage", "ground", *common)
    assert code == 2 and "run `grit stage noun-chunks`" in err
    for module, extra in (("stages.noun_chunks", ("--input", str(clean_world))), ("stages.ground", ()),
                          ("stages.expand", ()), ("stages.write", ())):
        monkeypatch.setattr(sys, "argv", [module, *extra, *common])
        with pytest.raises(SystemExit) as exit_:
            runpy.run_module(module, run_name="__main__")
        assert exit_.value.code == 0, module
    assert len(done_names(output)) == 3
    assert len(done_names(output / "_stages" / "expand")) == 3


def test_noop_detector_boxes_do_not_overlap():
    from grit_pipeline.detectors.base import get_detector
    from grit_pipeline.grounding import filter_detections

    detector = get_detector("noop", model="ignored", device="cpu", batch_size=4)
    (dets,) = detector.detect([None], [["a dog", "a cat", "a tree"]])
    assert [d.phrase_index for d in dets] == [0, 1, 2] and all(d.score == 0.9 for d in dets)
    kept, dropped = filter_detections(dets, 0.65, 0.6)
    assert len(kept) == 3 and not dropped
    hashed = get_detector("noop", score="hash")
    scores = [d.score for d in hashed.detect([None], [CAPTIONS_FOR_HASH])[0]]
    assert scores == [d.score for d in hashed.detect([None], [CAPTIONS_FOR_HASH])[0]]
    assert min(scores) < 0.65 < max(scores)
    with pytest.raises(ValueError):
        get_detector("noop", score=2)


CAPTIONS_FOR_HASH = ["a dog", "a cat", "a tree", "the sky", "a boat", "a red car", "two people", "a hat"]


def test_input_and_output_as_fsspec_urls(clean_world, clean_build, tmp_path):
    import fsspec

    memory = fsspec.filesystem("memory")
    for path in clean_world.iterdir():
        memory.pipe(f"/pipeline-test-shards/{path.name}", path.read_bytes())
    output = tmp_path / "grit"
    summary = run_pipeline(local_config("memory://pipeline-test-shards", f"file://{output}"))
    assert summary.shards_written == ["00000", "00001", "00002"]
    ours, reference = snapshot(output), snapshot(clean_build)
    data_files = [n for n in reference if n.endswith((".parquet", ".tar"))]
    assert len(data_files) == 9 and all(ours[n] == reference[n] for n in data_files)
    stats = json.loads((output / layout.stats_name("00000")).read_text())
    assert stats["input"] == "memory://pipeline-test-shards/00000"
    # an object-store-like output (no rename there): same bytes, markers written
    run_pipeline(local_config(clean_world, "memory://pipeline-test-out"))
    assert sorted(p.removeprefix("/pipeline-test-out/") for p in memory.find("/pipeline-test-out")) == sorted(
        [*reference, "_run.json"])
    for name in data_files:
        assert memory.cat(f"/pipeline-test-out/{name}") == reference[name]


def test_cli_defaults_are_the_pipeline_defaults():
    from grit_pipeline.cli import build_parser
    from grit_pipeline.pipeline.cli_args import config_from_args

    args = build_parser().parse_args(["run", "--input", "in", "--output", "out"])
    assert config_from_args(args) == PipelineConfig(input="in", output="out")
    assert PipelineConfig().detector == "demo" and PipelineConfig().engine == "auto"
    args = build_parser().parse_args(["stage", "expand", "--output", "out", "--detector-option", "score=hash",
                                      "--detector-option", "max_per_phrase=3", "--shards", "00001,00003"])
    config = config_from_args(args)
    assert config.detector_options == {"score": "hash", "max_per_phrase": 3} and config.shards == ("00001", "00003")


def test_shard_selection_unknown_detector_and_a_caption_spacy_refuses(clean_world, tmp_path):
    output = tmp_path / "grit"
    summary = run_pipeline(local_config(clean_world, output, shards=("00001",)))
    assert summary.shards_written == ["00001"] and done_names(output) == [layout.done_name("00001")]
    with pytest.raises(ValueError, match="unknown detector 'nope'"):
        run_pipeline(local_config(clean_world, output, detector="nope"))

    from grit_pipeline.pipeline.sample import new_sample
    from grit_pipeline.pipeline.stages import NounChunkStage

    samples = [new_sample(key="a", caption="a dog on a mat"), new_sample(key="b", caption="a cat " * 200_000)]
    NounChunkStage(PipelineConfig())(samples)
    assert samples[0]["status"] is None and samples[0]["noun_chunk_spans"]
    assert samples[1]["status"] == S.BAD_CAPTION and "spaCy failed" in samples[1]["reason"]


def test_gpus_per_detector_actor_follow_the_cluster():
    assert PipelineConfig().resolved_num_gpus(cluster_gpus=0) == 0
    assert PipelineConfig().resolved_num_gpus(cluster_gpus=8) == 1  # a CPU-only driver still uses GPU workers
    assert PipelineConfig(device="cpu").resolved_num_gpus(cluster_gpus=8) == 0
    assert PipelineConfig(num_gpus=0.5).resolved_num_gpus(cluster_gpus=0) == 0.5


def test_synthetic_world_with_the_demo_detector_fused_equals_stages(tmp_path):
    """`grit synth` output (the img2dataset layout) through the default detector, both modes."""
    from grit_pipeline.synth.writer import write_synthetic_world

    write_synthetic_world(tmp_path / "shards", images=8, seed=5, shard_size=4)
    fused, staged = tmp_path / "fused", tmp_path / "staged"
    config = PipelineConfig(input=str(tmp_path / "shards"), output=str(fused), engine="local", progress=False)
    run_pipeline(config)
    for stage in ("noun_chunks", "ground", "expand", "write"):
        run_stage(stage, config.replace(output=str(staged)))
    assert snapshot(staged) == snapshot(fused)
    totals = collect_totals(str(fused))
    assert totals["samples"] == 8 and totals["images"] > 0 and totals["boxes"] >= totals["images"]


def test_progress_eta_from_samples_and_shard_sizes():
    import io
    import time

    from grit_pipeline.pipeline.progress import Progress

    stream = io.StringIO()
    progress = Progress("run", total_shards=4, interval_s=0, stream=stream)
    assert progress.eta_s() is None
    progress.started = time.monotonic() - 10
    progress.samples_finished("00000", shard_total=10, samples=10)  # 10 of ~40 samples in 10 s
    assert progress.eta_s() == pytest.approx(30, abs=0.5)
    progress.stage("ground", 10)
    progress.shard_written("00000", 10)
    assert "shards 1/4" in stream.getvalue() and "ETA 0:00:3" in stream.getvalue() and "ground 10" in stream.getvalue()


def test_too_small_ray_cluster_fails_fast_with_the_numbers():
    from grit_pipeline.pipeline import PipelineConfig
    from grit_pipeline.pipeline.engine_ray import check_cluster_cpus
    from grit_pipeline.pipeline.preflight import PreflightError  # (one line, exit status 2)

    config = PipelineConfig(input="in", output="out", text_pool=2, ground_pool=1)
    check_cluster_cpus(config, 4)  # 2 + 1 actors + reading and expansion fit
    with pytest.raises(PreflightError, match=r"has 2 CPUs but the pipeline needs 4 \(--text-pool 2 \+ --ground-pool 1"):
        check_cluster_cpus(config, 2)


def test_input_shard_without_img2dataset_stats_is_processed_with_a_warning(tmp_path, capsys):
    from grit_pipeline.pipeline import PipelineConfig
    from grit_pipeline.pipeline.shards import InputSource

    write_shard(tmp_path / "in", "00000", healthy_samples(0, 2))
    stats = tmp_path / "in" / "00000_stats.json"
    if stats.exists():
        stats.unlink()
    assert InputSource(PipelineConfig(input=str(tmp_path / "in"), output=str(tmp_path / "out"))).shards() == ["00000"]
    assert "1 input shard(s) have no NNNNN_stats.json" in capsys.readouterr().err
