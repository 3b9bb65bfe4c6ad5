"""What GRIT's full size needs, shown small: the driver releases a committed shard's keys, planning a resume of
10,000 shards makes one listing plus one read per marker, and a worker reads an input shard a chunk at a time."""
from __future__ import annotations

import json
import threading
from collections import Counter

import pytest
from fsspec.implementations.memory import MemoryFileSystem

from grit_pipeline.pipeline import PipelineConfig, layout
from grit_pipeline.pipeline.ingest import InputShard, iter_input_shard, read_input_shard
from grit_pipeline.pipeline.parts import PartLedger
from grit_pipeline.pipeline.plan import plan_shards
from grit_pipeline.pipeline.shards import BuildSink
from tests.fixtures_shards import healthy_samples, write_shard


def test_a_committed_shards_keys_leave_the_ledger():
    ledger = PartLedger()
    for shard in ("00000", "00001"):
        for part in range(4):
            keys = [f"{shard}-{part}-{i}" for i in range(250)]
            assert ledger.add({"shard": shard, "part": f"p{part}", "shard_total": 1000, "keys": keys,
                               "statuses": ["grounded"] * 250})
    assert ledger.keys_held() == 2000 and ledger.complete("00000")
    parts, counts = ledger.seal("00000")
    assert parts == ["p0", "p1", "p2", "p3"] and counts == {"grounded": 1000}
    assert ledger.keys_held() == 1000 and "00000" not in ledger.shards  # only its name stays
    # a late copy of a part of the sealed shard (a retried attempt) is still refused
    assert not ledger.add({"shard": "00000", "part": "late", "shard_total": 1000, "keys": ["00000-0-0"],
                           "statuses": ["grounded"]})
    assert ledger.rejected[-1] == ("00000", "late") and ledger.seen("00000")
    ledger.seal("00001")
    assert ledger.keys_held() == 0


class CountingMemoryFS(MemoryFileSystem):
    """The in-memory filesystem, counting requests by kind."""

    protocol = ("countmem",)
    calls: Counter = Counter()
    lock = threading.Lock()

    @classmethod
    def _strip_protocol(cls, path):
        path = str(path)
        return super()._strip_protocol(path[len("countmem://"):] if path.startswith("countmem://") else path)

    def _count(self, kind):
        with CountingMemoryFS.lock:
            CountingMemoryFS.calls[kind] += 1

    def ls(self, path, detail=True, **kwargs):
        self._count("ls")
        return super().ls(path, detail=detail, **kwargs)

    def info(self, path, **kwargs):
        self._count("info")
        return super().info(path, **kwargs)

    def exists(self, path, **kwargs):
        self._count("exists")
        return super().exists(path, **kwargs)

    def cat_file(self, path, start=None, end=None, **kwargs):
        self._count("read")
        return super().cat_file(path, start=start, end=end, **kwargs)

    def _open(self, path, mode="rb", **kwargs):
        self._count("open")
        return super()._open(path, mode=mode, **kwargs)


@pytest.fixture(scope="module")
def ten_thousand_shards():
    """A finished build of 10,000 shards (tiny files), on the counting in-memory filesystem."""
    import fsspec

    fsspec.register_implementation("countmem", CountingMemoryFS, clobber=True)
    fs = CountingMemoryFS()
    root = "/grit-plan-test"
    config = PipelineConfig(input="/in", output=f"countmem://{root}")
    params = config.params_through("write")
    sink = BuildSink(config)
    shards = [f"{i:05d}" for i in range(10_000)]
    for shard in shards:
        files = {}
        for name in sink.files(shard):
            data = b"x" * (len(name) + int(shard) % 7)
            fs.pipe_file(f"{root}/{name}", data)
            files[name] = len(data)
        marker = {"shard": shard, "samples": 1, "params": params, "files": files}
        fs.pipe_file(f"{root}/{layout.done_name(shard)}", json.dumps(marker).encode())
    yield config, sink, shards, params, fs, root
    _forget(fs, root)


def _forget(fs, root):
    """Drop a folder from the in-memory store (``fs.rm`` lists the folder once per file: quadratic)."""
    for path in [p for p in fs.store if p.startswith(root)]:
        del fs.store[path]
    fs.pseudo_dirs[:] = [d for d in fs.pseudo_dirs if not d.startswith(root)]


def test_planning_10000_shards_is_one_listing_and_one_read_per_marker(ten_thousand_shards):
    config, sink, shards, params, fs, root = ten_thousand_shards
    # two shards changed after their commit: one file truncated, one marker from other parameters
    fs.pipe_file(f"{root}/{layout.tar_name('00007')}", b"")
    stale = {"shard": "00042", "samples": 1, "params": {**params, "box_threshold": 0.5}, "files": {}}
    fs.pipe_file(f"{root}/{layout.done_name('00042')}", json.dumps(stale).encode())
    CountingMemoryFS.calls.clear()
    done, todo = plan_shards(sink, shards, {s: params for s in shards})
    assert todo == ["00007", "00042"] and len(done) == 9_998
    calls = dict(CountingMemoryFS.calls)
    # one listing of the build and one of each layout sub-folder give every file's size
    assert calls.get("ls") == 1 + len(layout.SUBFOLDERS), calls
    assert calls.get("read", 0) + calls.get("open", 0) == 10_000, calls   # one read per marker
    assert not calls.get("info") and not calls.get("exists"), calls       # never a request per file


def test_grit_stats_reads_each_file_once(ten_thousand_shards, capsys):
    """`grit stats` over 10,000 shards: one listing, then each shard's marker, stats, rows and rejects once."""
    import argparse

    from grit_pipeline.commands import stats

    config, sink, shards, params, fs, root = ten_thousand_shards
    small = "/grit-stats-test"
    for path in fs.find(root):  # 300 shards are enough to count per-shard requests
        name = path[len(root) + 1:]
        if name.rsplit("/", 1)[-1] < "00300":
            fs.pipe_file(f"{small}/{name}", fs.cat_file(path))
    CountingMemoryFS.calls.clear()
    stats.run(argparse.Namespace(output=f"countmem://{small}", json=True, top=5))
    calls = dict(CountingMemoryFS.calls)
    shards_there = len([n for n in fs.ls(f"{small}/{layout.DONE_DIR}", detail=False) if n.endswith(".done")])
    reads = calls.get("read", 0) + calls.get("open", 0)
    assert calls.get("ls", 0) <= 2 + len(layout.SUBFOLDERS) and reads <= 4 * shards_there + 2, (calls, shards_there)
    _forget(fs, small)


def test_an_input_shard_is_read_a_chunk_at_a_time(tmp_path):
    samples = healthy_samples(0, 23)
    samples.append(dict(samples[3]))  # a key the tar holds twice: both copies rejected, in any chunk
    write_shard(tmp_path, "00000", samples)
    shard = InputShard("00000", str(tmp_path), True, True)
    chunks = list(iter_input_shard(shard, chunk_size=5))
    assert [len(c) for c in chunks] == [5, 5, 5, 5, 3]
    streamed = [s for c in chunks for s in c]
    whole = read_input_shard(shard)
    assert sorted(s["key"] for s in streamed) == sorted(s["key"] for s in whole)
    assert len({s["key"] for s in streamed}) == len(streamed) == 23
    assert {s["shard_total"] for s in streamed} == {23}
    by_key = {s["key"]: s for s in streamed}
    assert by_key[samples[3]["key"]]["status"] == "duplicate_key"
    assert {k: (s["status"], s["reason"]) for k, s in by_key.items()} == \
           {s["key"]: (s["status"], s["reason"]) for s in whole}


def test_the_commit_merges_parts_by_key_a_row_group_at_a_time(tmp_path):
    """Parts are written sorted by key in row groups of MERGE_ROWS; the merge yields the shard in key order
    with its image bytes, while the rest of the commit reads the parts without them."""
    import pyarrow.parquet as pq

    from grit_pipeline.pipeline.parts import MERGE_ROWS, merged_parts, parts_folder, read_parts, write_parts
    from grit_pipeline.pipeline.sample import new_sample

    keys = [f"k{i:03d}" for i in range(100)]
    parts = []
    for offset in range(3):  # three parts holding interleaved keys, each given out of order
        rows = [new_sample(key=k, source_shard="00000", shard_total=100, status="grounded",
                           image_bytes=k.encode() * 10) for k in reversed(keys[offset::3])]
        (info,) = write_parts(str(tmp_path), rows)
        parts.append(info["part"])
    folder = parts_folder(str(tmp_path), "00000")
    metadata = pq.ParquetFile(folder.path(parts[0])).metadata
    assert metadata.num_row_groups == -(-34 // MERGE_ROWS) and metadata.row_group(0).num_rows == MERGE_ROWS
    merged = list(merged_parts(str(tmp_path), "00000", parts))
    assert [r["key"] for r in merged] == keys and all(r["image_bytes"] == r["key"].encode() * 10 for r in merged)
    light = read_parts(str(tmp_path), "00000", parts, columns=["key", "status"])
    assert len(light) == 100 and all(r["image_bytes"] is None for r in light)


def test_a_crafted_marker_makes_its_shard_rebuild_not_the_run_fail(tmp_path):
    """A `.done` nested past Python's recursion limit, or holding NaN for its params, reads as no marker."""
    config = PipelineConfig(input="/in", output=str(tmp_path))
    sink, params = BuildSink(config), config.params_through("write")
    for shard, text in (("00000", "[" * 100_000 + "]" * 100_000),
                        ("00001", '{"params": NaN, "files": {"00001.tar": Infinity}}')):
        (tmp_path / layout.done_name(shard)).parent.mkdir(exist_ok=True)
        (tmp_path / layout.done_name(shard)).write_text(text)
        for name in sink.files(shard):
            (tmp_path / name).parent.mkdir(exist_ok=True)
            (tmp_path / name).write_bytes(b"x")
    assert plan_shards(sink, ["00000", "00001"], {"00000": params, "00001": params}) == ([], ["00000", "00001"])
    assert not sink.is_done("00000", params) and not sink.is_done("00001", params)
