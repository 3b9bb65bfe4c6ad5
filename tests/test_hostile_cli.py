"""Hostile input to the command line: one clear line and a non-zero exit (or an error row), never a
traceback; a run stopped by a full or read-only disk resumes to the same build."""
from __future__ import annotations

import errno
import io
import json
import sys

import pytest

from grit_pipeline.pipeline import layout
from tests.build_files import done_names, temp_files
from tests.fixtures_shards import healthy_samples, jpeg_bytes, write_shard


def _main(capsys, monkeypatch, *args, stdin: bytes | None = None):
    from grit_pipeline.cli import main

    if stdin is not None:
        monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(stdin), encoding="utf-8"))
    code = main([str(a) for a in args])
    captured = capsys.readouterr()
    assert "Traceback" not in captured.err
    return code, captured.out, captured.err


def test_spans_on_invalid_utf8_and_a_huge_caption(capsys, monkeypatch):
    code, out, _ = _main(capsys, monkeypatch, "spans", stdin=b"a dog on a mat\n\xff\xfe broken \xc3\n")
    rows = [json.loads(line) for line in out.splitlines()]
    assert code == 0 and rows[0]["noun_chunks"] and rows[1]["error"] == "caption is not valid UTF-8"
    code, out, _ = _main(capsys, monkeypatch, "spans", "a cat " * 200_000)  # 1.2M characters
    row = json.loads(out)
    assert code == 0 and "1200000 characters long" in row["error"] and row["noun_chunks"] == []


def test_ground_on_deeply_nested_json_lines(tmp_path, capsys, monkeypatch):
    image = tmp_path / "a.jpg"
    image.write_bytes(jpeg_bytes(1))
    lines = [json.dumps({"key": "a", "image": str(image), "caption": "a dog on a mat"}), "[" * 100_000 + "]" * 100_000]
    (tmp_path / "in.jsonl").write_text("\n".join(lines) + "\n")
    code, out, _ = _main(capsys, monkeypatch, "ground", "--input", tmp_path / "in.jsonl", "--detector", "noop")
    rows = {r["key"]: r for r in map(json.loads, out.splitlines())}
    assert code == 0 and rows["a"]["status"] and rows["line-2"]["status"] == "shard_error"


def test_evaluate_grounding_with_a_truth_box_of_strings(tmp_path, capsys, monkeypatch):
    truth = {"key": "a", "caption": "a dog", "objects": [{"noun_chunk": [0, 5], "box": ["a", "b", "c", "d"]}]}
    (tmp_path / "truth.jsonl").write_text(json.dumps(truth) + "\n")
    (tmp_path / "build").mkdir()
    code, _, err = _main(capsys, monkeypatch, "evaluate-grounding", "--output", tmp_path / "build",
                         "--truth", tmp_path / "truth.jsonl")
    assert code != 0 and "truth.jsonl:1: bad truth line" in err and "finite numbers" in err
    assert len(err.strip().splitlines()) == 1


@pytest.mark.parametrize("code_name", ["ENOSPC", "EROFS"])
def test_a_full_or_read_only_disk_is_one_line_and_the_build_resumes(tmp_path, capsys, monkeypatch, code_name):
    from grit_pipeline.pipeline import storage

    write_shard(tmp_path / "in", "00000", healthy_samples(0, 2))
    write_shard(tmp_path / "in", "00001", healthy_samples(1, 2))
    args = ["run", "--input", tmp_path / "in", "--output", tmp_path / "out", "--engine", "local", "--no-progress",
            "--detector", "noop", "--detector-option", "score=hash"]
    real_replace, calls = storage.os.replace, []

    def failing_replace(src, dst):
        calls.append(dst)
        if len(calls) > 3:  # the first shard's files commit, then the disk "fills up"
            raise OSError(getattr(errno, code_name), "simulated", dst)
        return real_replace(src, dst)

    monkeypatch.setattr(storage.os, "replace", failing_replace)
    code, _, err = _main(capsys, monkeypatch, *args)
    lines = [line for line in err.strip().splitlines() if not line.startswith("warning:")]
    assert code != 0 and len(lines) == 1
    assert ("no space left" in lines[0]) if code_name == "ENOSPC" else ("read-only" in lines[0])
    assert not temp_files(tmp_path / "out")
    monkeypatch.setattr(storage.os, "replace", real_replace)
    code, out, _ = _main(capsys, monkeypatch, *args)
    assert code == 0 and done_names(tmp_path / "out") == [layout.done_name("00000"), layout.done_name("00001")]


def test_unreachable_storage_is_one_line(tmp_path, capsys, monkeypatch):
    write_shard(tmp_path / "in", "00000", healthy_samples(0, 1))
    code, _, err = _main(capsys, monkeypatch, "run", "--input", tmp_path / "in", "--output", "nosuchproto://bucket/x",
                         "--engine", "local", "--no-progress", "--detector", "noop")
    assert code != 0 and len([line for line in err.strip().splitlines() if not line.startswith("warning:")]) == 1


def test_a_corrupt_stats_file_alone_is_reported(tmp_path, capsys, monkeypatch):
    for sub in (layout.DONE_DIR, layout.STATS_DIR):
        (tmp_path / sub).mkdir()
    (tmp_path / layout.done_name("00000")).write_text("{}")
    (tmp_path / layout.stats_name("00000")).write_text("[" * 100_000)
    code, out, err = _main(capsys, monkeypatch, "stats", tmp_path)
    assert code == 0 and f"unreadable shard stats file {layout.stats_name('00000')}" in out
