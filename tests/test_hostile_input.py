"""Hostile input never stops a run or reaches outside it: the shared tar reader, ingest validation,
one bad sample costing one row, numeric arguments, and the output tars' member names."""
from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from grit_pipeline import status as S
from grit_pipeline.pipeline import PipelineConfig, layout, run_pipeline
from grit_pipeline.pipeline.ingest import list_input_shards, read_input_shard
from grit_pipeline.tar_reader import IMAGE_EXTENSIONS, TarReader, key_problem, split_member
from tests.build_files import done_names
from tests.fixtures_shards import healthy_samples, jpeg_bytes, write_shard
from tests.hostile_shards import GIB, gzip_tar_declaring, meta_json, sparse_member, tar_bytes, write_raw_shard

MIB = 1024 * 1024


# ---- the shared tar reader ------------------------------------------------------------------
def test_reader_groups_members_by_key_with_webdataset_rules():
    data = tar_bytes([("a.jpg", b"A"), ("a.JSON", b"{}"), ("__meta__", b"x"), ("noext", b"x"),
                      ("b.seg.png", b"B"), ("b.txt", b"t")])
    reader = TarReader(io.BytesIO(data))
    samples = list(reader)
    assert [(s.key, s.files) for s in samples] == [("a", {"jpg": b"A", "json": b"{}"}),
                                                   ("b", {"seg.png": b"B", "txt": b"t"})]
    assert reader.error is None and samples[0].image() == ("jpg", b"A") and samples[1].image() is None
    assert split_member("dir/x.tar.gz") == ("dir/x", "tar.gz") and split_member(".hidden") == (None, "")
    from webdataset.tariterators import base_plus_ext

    for name in ("a.jpg", "dir/x.tar.gz", "a.b.C", ".hidden", "noext", "d.ir/x", "x.", "../../y.txt", "/abs/z.png"):
        key, ext = base_plus_ext(name)
        assert split_member(name) == ((key, ext.lower()) if key is not None else (None, "")), name
    assert IMAGE_EXTENSIONS[0] == "jpg"


def test_reader_skips_members_declaring_more_than_the_limit_before_reading_them():
    sparse = tar_bytes([sparse_member("big.jpg", GIB), ("big.txt", b"caption"), ("ok.jpg", b"x" * 100)])
    assert len(sparse) < 64 * 1024  # 1 GiB declared by a tiny file
    samples = list(TarReader(io.BytesIO(sparse), max_member_bytes=MIB))
    assert samples[0].oversize == {"jpg": GIB} and samples[0].files == {"txt": b"caption"}
    assert samples[1].files == {"jpg": b"x" * 100}
    gz = gzip_tar_declaring("z.jpg", 8 * MIB)  # compressed: streamed, skipped under the same limit
    (only,) = list(TarReader(io.BytesIO(gz), max_member_bytes=MIB))
    assert only.oversize == {"jpg": 8 * MIB} and only.files == {}
    pax = gzip_tar_declaring("././@PaxHeader", 8 * MIB, kind=tarfile.XHDTYPE)  # metadata tarfile reads whole
    reader = TarReader(io.BytesIO(pax), max_member_bytes=MIB)
    assert list(reader) == [] and "declares 8388608 bytes to read at once" in reader.error


def test_reader_turns_broken_tars_into_an_error_and_keeps_what_came_before():
    whole = tar_bytes([("a.jpg", b"A" * 2000), ("b.jpg", b"B" * 2000), ("c.jpg", b"C" * 2000)])
    reader = TarReader(io.BytesIO(whole[:3500]))  # cut inside b.jpg
    assert [s.key for s in reader] == ["a"] and reader.cut_key == "b" and "end of data" in reader.error
    for garbage in (b"", b"not a tar at all" * 100, b"\x1f\x8b\x08 broken gzip" + b"\0" * 600):
        reader = TarReader(io.BytesIO(garbage))
        assert list(reader) == [] and reader.error
    reader = TarReader("/nonexistent/folder/00000.tar")
    assert list(reader) == [] and "FileNotFoundError" in reader.error


def test_reader_reports_duplicate_members_and_keeps_the_first():
    (sample,) = list(TarReader(io.BytesIO(tar_bytes([("a.jpg", b"1"), ("a.jpg", b"2")]))))
    assert sample.files == {"jpg": b"1"} and sample.duplicates == ["jpg"]


@pytest.mark.parametrize("key, ok", [
    ("000012345", True), ("a-b_c", True), ("ключ", True),
    ("../evil", False), ("/etc/passwd", False), ("dir/key", False), ("a\\b", False), (".hidden", False),
    ("", False), ("new\nline", False), ("x" * 300, False), (12, False),
])
def test_key_problem(key, ok):
    assert (key_problem(key) is None) == ok


# ---- ingest: every bad value is one row with a status and a reason ---------------------------
def _hostile_members():
    good = jpeg_bytes(1)
    deep = b'{"a":' * 100_000 + b"1" + b"}" * 100_000  # beyond Python's recursion limit
    deepish = b'{"caption": "a dog", "exif": ' + b"[" * 100 + b"]" * 100 + b"}"  # parses, too deep
    members = [
        ("ok1.jpg", good), ("ok1.json", meta_json("ok1", "a dog on a mat")),
        ("../../escape.jpg", good), ("../../escape.json", meta_json("x", "a dog")),
        ("/abs/root.jpg", good),
        ("inf.jpg", good), ("inf.json", b'{"caption": "a dog", "width": Infinity, "height": 3}'),
        ("huge_id.jpg", good), ("huge_id.json", b'{"caption": "a dog", "id": 1e999}'),
        ("big_id.jpg", good), ("big_id.json", json.dumps({"caption": "a dog", "id": 2 ** 70}).encode()),
        ("deep.jpg", good), ("deep.json", deep), ("deepish.jpg", good), ("deepish.json", deepish),
        ("notobj.jpg", good), ("notobj.json", b"[1, 2]"),
        ("sim.jpg", good), ("sim.json", b'{"caption": "a dog", "similarity": "high"}'),
        ("url.jpg", good), ("url.json", b'{"caption": "a dog", "url": 5}'),
        ("long.jpg", good), ("long.txt", b"a dog " * 1000),
        ("dup.jpg", good), ("dup.txt", b"first copy"),
        ("bigimg.txt", b"a cat"), sparse_member("bigimg.jpg", GIB),
        ("bigjson.jpg", good), sparse_member("bigjson.json", GIB),
        ("dup.jpg", good), ("dup.txt", b"second copy"),  # the same key again, later in the tar
        ("ok2.jpg", good), ("ok2.txt", b"a cat on a sofa"),
    ]
    expected = {
        "ok1": None, "ok2": None,
        "../../escape": (S.BAD_KEY, "path separator"), "/abs/root": (S.BAD_KEY, "path separator"),
        "inf": (S.BAD_METADATA, "width: not a finite integer"), "huge_id": (S.BAD_METADATA, "id: not a finite"),
        "big_id": (S.BAD_METADATA, "id: outside the int64 range"), "deep": (S.BAD_METADATA, "json: nested deeper"),
        "deepish": (S.BAD_METADATA, "json: nested deeper"),
        "notobj": (S.BAD_METADATA, "json: not an object"), "sim": (S.BAD_METADATA, "similarity: not a number"),
        "url": (S.BAD_METADATA, "url: not text"), "long": (S.BAD_CAPTION, "6000 characters long"),
        "dup": (S.DUPLICATE_KEY, "listed 2 times"), "bigimg": (S.DECODE_ERROR, "declares 1073741824 bytes"),
        "bigjson": (S.BAD_METADATA, "json: member declares 1073741824 bytes"),
    }
    return members, expected


def test_every_hostile_sample_becomes_one_row_with_status_and_reason(tmp_path):
    members, expected = _hostile_members()
    write_raw_shard(tmp_path, "00000", members)
    (shard,) = list_input_shards(str(tmp_path))
    samples = read_input_shard(shard, max_member_bytes=MIB, max_caption_chars=4096)
    by_key = {s["key"]: s for s in samples}
    assert len(by_key) == len(samples) and set(by_key) == set(expected)
    for key, want in expected.items():
        if want is None:
            assert by_key[key]["status"] is None and by_key[key]["image_bytes"], key
        else:
            status, reason = want
            assert by_key[key]["status"] == status and reason in by_key[key]["reason"], (key, by_key[key]["reason"])
            assert by_key[key]["image_bytes"] is None


def test_parquet_values_are_validated_too(tmp_path):
    rows = [{"key": "a", "caption": "a dog", "status": "success", "id": 7, "similarity": 0.3},
            {"key": "b", "caption": "a dog", "status": "success", "id": float("nan"), "similarity": float("inf")},
            {"key": "c", "caption": "a dog", "status": "success", "id": 3.0, "similarity": None},
            {"key": "c", "caption": "again", "status": "success", "id": 4.0, "similarity": None}]
    good = jpeg_bytes(2)
    write_raw_shard(tmp_path, "00000", [("a.jpg", good), ("b.jpg", good), ("c.jpg", good)], parquet_rows=rows)
    (shard,) = list_input_shards(str(tmp_path))
    by_key = {s["key"]: s for s in read_input_shard(shard)}
    assert by_key["a"]["status"] is None and by_key["a"]["id"] == 7 and by_key["a"]["clip_similarity_vitb32"] == 0.3
    assert by_key["b"]["status"] == S.BAD_METADATA and "similarity: not finite" in by_key["b"]["reason"]
    assert by_key["c"]["status"] == S.DUPLICATE_KEY


def test_a_parquet_row_without_a_key_becomes_a_bad_key_reject(tmp_path):
    rows = [{"key": "a", "caption": "a dog", "status": "success"},
            {"key": None, "caption": "a cat", "status": "success"}]
    write_raw_shard(tmp_path, "00000", [("a.jpg", jpeg_bytes(2)), ("a.txt", b"a dog")], parquet_rows=rows)
    (shard,) = list_input_shards(str(tmp_path))
    samples = read_input_shard(shard)
    assert [s["key"] for s in samples] == ["a", ".parquet-row-000001"]
    assert {s["shard_total"] for s in samples} == {2}
    keyless = samples[1]
    assert keyless["status"] == S.BAD_KEY and keyless["reason"] == "row 1 of 00000.parquet has no key"
    assert key_problem(keyless["key"])  # can never be a valid sample's key


@pytest.fixture(scope="module")
def hostile_build(tmp_path_factory):
    folder = tmp_path_factory.mktemp("hostile") / "shards"
    members, expected = _hostile_members()
    write_raw_shard(folder, "00000", members)
    write_shard(folder, "00001", healthy_samples(1, 3))
    write_raw_shard(folder, "00002", [("k.jpg", jpeg_bytes(2)), ("k.txt", b"a red square")],
                    parquet_rows=[{"key": "k", "caption": "a red square", "status": "success"},
                                  {"key": None, "caption": "a blue circle", "status": "success"}])
    output = folder.parent / "grit"
    config = PipelineConfig(input=str(folder), output=str(output), engine="local", detector="noop",
                            detector_options={"score": "hash"}, progress=False, max_member_bytes=MIB)
    run_pipeline(config)
    return output, expected


def test_a_hostile_shard_is_built_and_every_key_is_in_exactly_one_place(hostile_build):
    output, expected = hostile_build
    assert done_names(output) == [layout.done_name(shard) for shard in ("00000", "00001", "00002")]
    keys = []
    for path in sorted(output.glob("*.parquet")) + sorted(output.glob(f"{layout.REJECTS_DIR}/*.parquet")):
        keys += pq.read_table(path, columns=["key"]).column("key").to_pylist()
    assert sorted(keys) == sorted(set(keys)) and set(expected) <= set(keys)
    rejects = {r["key"]: r for r in pq.read_table(output / layout.rejects_name("00000")).to_pylist()}
    for key, want in expected.items():
        if want is not None:
            assert rejects[key]["status"] == want[0] and want[1] in rejects[key]["reason"]
    (keyless,) = [r for r in pq.read_table(output / layout.rejects_name("00002")).to_pylist() if r["key"] != "k"]
    assert keyless["key"] == ".parquet-row-000001" and keyless["status"] == S.BAD_KEY
    counts = json.loads((output / layout.stats_name("00000")).read_text())["counts"]
    for status in (S.BAD_METADATA, S.BAD_KEY, S.DUPLICATE_KEY, S.BAD_CAPTION, S.DECODE_ERROR):
        assert counts[status] == sum(1 for want in expected.values() if want and want[0] == status)


@pytest.mark.ray
def test_the_ray_engine_builds_the_hostile_shards_like_the_local_engine(hostile_build, tmp_path):
    import ray

    from tests.test_pipeline import snapshot

    output, _ = hostile_build
    config = PipelineConfig(input=str(output.parent / "shards"), output=str(tmp_path / "ray"), engine="ray",
                            detector="noop", detector_options={"score": "hash"}, progress=False,
                            max_member_bytes=MIB, text_batch_size=4, ground_batch_size=2, object_store_limit_mb=64)
    ray.init(address="local", num_cpus=3, include_dashboard=False, configure_logging=False, log_to_driver=False)
    try:
        run_pipeline(config)
    finally:
        ray.shutdown()
    assert snapshot(tmp_path / "ray") == snapshot(output)


def test_extracting_an_output_tar_built_from_hostile_keys_writes_nothing_outside(hostile_build, tmp_path):
    output, _ = hostile_build
    target = tmp_path / "a" / "extract"
    target.mkdir(parents=True)
    tars = sorted(output.glob(f"{layout.TARS_DIR}/*.tar"))
    assert len(tars) == 3
    for shard in tars:
        with tarfile.open(shard) as tar:
            for member in tar.getmembers():
                assert "/" not in member.name and not member.name.startswith(".") and member.isreg()
            tar.extractall(target, filter="fully_trusted")  # no safety filter: the names alone must be safe
    assert {p.parent for p in target.rglob("*")} == {target}
    assert sorted(p.name for p in tmp_path.rglob("*") if p.is_file() and target not in p.parents) == []


# ---- one bad sample costs one row in every engine -------------------------------------------
class _Picky:
    """A stage body that fails on captions containing 'boom' (or on every sample)."""

    def __init__(self, always=False):
        self.always = always

    def __call__(self, samples):
        for sample in samples:
            if self.always or "boom" in sample["caption"]:
                raise RuntimeError(f"cannot handle {sample['key']}")
        for sample in samples:
            sample["width"] = 1


def _stage(body):
    from grit_pipeline.pipeline.stages import Stage

    class PickyStage(Stage):
        name = "picky"

        def process(self, samples):
            body(samples)

    return PickyStage(PipelineConfig())


def test_a_stage_that_raises_on_one_sample_rejects_only_that_sample():
    from grit_pipeline.pipeline.sample import new_sample

    samples = [new_sample(key=k, caption=c) for k, c in (("a", "fine"), ("b", "boom"), ("c", "fine"))]
    _stage(_Picky())(samples)
    assert [s["status"] for s in samples] == [None, S.STAGE_ERROR, None]
    assert "cannot handle b" in samples[1]["reason"] and samples[0]["width"] == samples[2]["width"] == 1
    everything = [new_sample(key=k, caption="fine") for k in "xyz"]
    with pytest.raises(RuntimeError, match="cannot handle x"):  # not the data: the shard is not committed
        _stage(_Picky(always=True))(everything)


# ---- bad numbers are refused up front, in one line ----------------------------------------------
@pytest.mark.parametrize("flag, value", [("--text-batch-size", "0"), ("--ground-batch-size", "-3"),
                                         ("--max-member-bytes", "0"), ("--read-parallelism", "0")])
def test_bad_numeric_arguments_are_one_line_errors(tmp_path, capsys, flag, value):
    from grit_pipeline.cli import main

    write_shard(tmp_path / "in", "00000", healthy_samples(0, 1))
    code = main(["run", "--input", str(tmp_path / "in"), "--output", str(tmp_path / "out"), "--engine", "local",
                 "--no-progress", flag, value])
    err = capsys.readouterr().err
    assert code != 0 and "must be at least 1" in err and "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "out").exists()
