"""`grit instruct`: templates, decoding, determinism, exactly-once accounting, kill -9 and resume, hostile records.

``write_build`` writes a GRIT build as `grit run` leaves it (``_webdataset/NNNNN.tar`` with KEY.jpg / KEY.json /
KEY.txt, ``NNNNN.parquet`` with the GrIT-20M columns, a rejects file that holds no records); the GrIT-20M download
layout comes from ``tests.fixtures_views.write_example_grit20m``.
"""
from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import sys
import tarfile
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image, ImageDraw

from grit_pipeline.instruct import (BOX_TEMPLATES, BOX_TO_EXPRESSION, EXPRESSION_TO_BOX, TEMPLATE_NAMES,
                                    InstructParams, InstructReject, box_to_expression_turn, expression_to_box_turn,
                                    make_conversation)
from grit_pipeline.instruct_build import INDEX_SCHEMA, InstructConfig, read_instruct_shard, run_instruct
from grit_pipeline.location import box_to_cells
from grit_pipeline.pipeline import layout
from grit_pipeline.serialize import parse_grounded_text
from tests.build_files import build_files, done_names, temp_files

REPO = Path(__file__).resolve().parents[1]
COLOURS = {"red": (220, 30, 30), "green": (30, 170, 60), "blue": (40, 70, 220), "yellow": (230, 200, 20)}
SHAPES = ("square", "ball", "box")


def _jpeg(objects) -> bytes:
    image = Image.new("RGB", (64, 64), (235, 235, 230))
    draw = ImageDraw.Draw(image)
    for colour, (x1, y1, x2, y2) in objects:
        draw.rectangle([x1 * 64, y1 * 64, x2 * 64 - 1, y2 * 64 - 1], fill=COLOURS[colour])
    out = io.BytesIO()
    image.save(out, format="JPEG", quality=90)
    return out.getvalue()


def world_record(n: int) -> tuple[dict, list]:
    """A record with two objects ("a red square next to a blue ball"), boxes where they are drawn."""
    names = list(COLOURS)
    first = (names[n % 4], SHAPES[n % 3], (0.05, 0.1 + 0.01 * (n % 5), 0.45, 0.6))
    second = (names[(n + 1) % 4], SHAPES[(n + 1) % 3], (0.55, 0.4, 0.95, 0.9 - 0.01 * (n % 7)))
    caption = f"a {first[0]} {first[1]} next to a {second[0]} {second[1]}"
    spans = []
    for colour, shape, box in (first, second):
        phrase = f"a {colour} {shape}"
        start = caption.index(phrase)
        spans.append([float(start), float(start + len(phrase)), *box, 0.9])
    record = {"key": f"{n:09d}", "caption": caption, "width": 64, "height": 64, "noun_chunks": spans,
              "ref_exps": [list(s) for s in spans], "id": n, "url": f"https://example.invalid/{n}.jpg",
              "clip_similarity_vitb32": 0.3, "clip_similarity_vitl14": 0.3}
    return record, [(first[0], first[2]), (second[0], second[2])]


def write_build(folder: Path, records_by_shard: dict[str, list[dict]]) -> None:
    """A GRIT build as `grit run` writes it (tar + parquet + an empty rejects file per shard)."""
    for sub in layout.SUBFOLDERS:
        (folder / sub).mkdir(parents=True, exist_ok=True)
    for shard, records in records_by_shard.items():
        with tarfile.open(folder / layout.tar_name(shard), "w") as tar:
            for record in records:
                objects = record.pop("_objects", [])
                members = {"jpg": _jpeg(objects), "json": json.dumps({**record, "status": "grounded"}).encode(),
                           "txt": b"<grounding>grounded text, never the caption"}
                for ext, data in members.items():
                    info = tarfile.TarInfo(f"{record['key']}.{ext}")
                    info.size = len(data)
                    tar.addfile(info, io.BytesIO(data))
        pq.write_table(pa.Table.from_pylist([{**r, "status": "grounded"} for r in records]), folder / f"{shard}.parquet")
        pq.write_table(pa.table({"key": pa.array([], pa.string())}), folder / layout.rejects_name(shard))
        (folder / layout.stats_name(shard)).write_text("{}")
        (folder / layout.done_name(shard)).write_text("{}")


def clean_build(folder: Path, shards: int = 3, per_shard: int = 4) -> Path:
    by_shard = {}
    for s in range(shards):
        records = []
        for i in range(per_shard):
            record, objects = world_record(s * 100 + i)
            records.append({**record, "_objects": objects})
        by_shard[f"{s:05d}"] = records
    write_build(folder, by_shard)
    return folder


def hostile_records() -> list[dict]:
    base, _ = world_record(7)
    caption = base["caption"]
    span = list(base["ref_exps"][0])

    def variant(key, **changes):
        return {**base, "key": key, **changes}

    return [
        variant("hostile_box", ref_exps=[span[:2] + [0.1, 0.1, 1.5, 0.5, 0.9]], noun_chunks=[span[:2] + [0.1, 0.1, 1.5, 0.5, 0.9]]),
        variant("hostile_nan", ref_exps=[span[:6] + [float("nan")]], noun_chunks=[span[:6] + [float("nan")]]),
        variant("hostile_span", ref_exps=[[0.0, float(len(caption) + 40), *span[2:]]], noun_chunks=[[0.0, 3.0, *span[2:]]]),
        variant("hostile_long", caption="a " + "x" * 999_998),
        variant("hostile_low", ref_exps=[span[:6] + [0.3]], noun_chunks=[span[:6] + [0.3]]),
    ]


# --- templates and turns -------------------------------------------------------------------------------------

BOX = (0.10, 0.20, 0.45, 0.70)  # official cells: 6*32+3 = 195, 22*32+14 = 718

EXPECTED = {
    "hf": {
        "what_is_it": "What is<phrase> it</phrase><object><patch_index_0195><patch_index_0718></object>?",
        "what_is_this": "What is<phrase> this</phrase><object><patch_index_0195><patch_index_0718></object>?",
        "describe_this_object": "Describe<phrase> this object</phrase><object><patch_index_0195><patch_index_0718></object>",
        "it": "<phrase>It</phrase><object><patch_index_0195><patch_index_0718></object>",
        "this": "<phrase>This</phrase><object><patch_index_0195><patch_index_0718></object>",
        "the_object": "<phrase>The object</phrase><object><patch_index_0195><patch_index_0718></object>",
    },
    "paper": {
        "what_is_it": "What is<p> it</p><box><loc_195><loc_718></box>?",
        "what_is_this": "What is<p> this</p><box><loc_195><loc_718></box>?",
        "describe_this_object": "Describe<p> this object</p><box><loc_195><loc_718></box>",
        "it": "<p>It</p><box><loc_195><loc_718></box>",
        "this": "<p>This</p><box><loc_195><loc_718></box>",
        "the_object": "<p>The object</p><box><loc_195><loc_718></box>",
    },
}


@pytest.mark.parametrize("fmt", ["hf", "paper"])
def test_every_table9_template_rendered_exactly(fmt):
    assert TEMPLATE_NAMES == tuple(EXPECTED[fmt])  # the paper's six, in its order
    for template in BOX_TEMPLATES:
        instruction, answer = box_to_expression_turn(template.name, BOX, "a red dog", fmt=fmt)
        assert instruction == EXPECTED[fmt][template.name]
        assert answer == "a red dog"


def test_expression_to_box_turn_both_spellings_and_every_box():
    boxes = [BOX, (0.5, 0.5, 1.0, 1.0)]
    assert expression_to_box_turn("two dogs", boxes, "hf") == (
        "<phrase>two dogs</phrase>",
        "<object><patch_index_0195><patch_index_0718></delimiter_of_multi_objects/><patch_index_0528>"
        "<patch_index_1023></object>")
    assert expression_to_box_turn("two dogs", boxes, "paper") == (
        "<p>two dogs</p>", "<box><loc_195><loc_718><delim><loc_528><loc_1023></box>")
    # transformers' cell rule differs only where x2*P is whole: 0.5 -> cell 15 instead of 16
    _, answer = expression_to_box_turn("a dog", [(0.1, 0.1, 0.5, 0.5)], "hf", cell_rule="transformers")
    assert answer == "<object><patch_index_0099><patch_index_0495></object>"


@pytest.mark.parametrize("fmt", ["hf", "paper"])
def test_answers_location_tokens_decode_back_to_the_records_boxes(fmt):
    record, _ = world_record(3)
    params = InstructParams(expression_to_box=2, box_to_expression=2, fmt=fmt)
    conversation = make_conversation(record, params)
    assert len(conversation.samples) == 4
    record_boxes = {tuple(span[2:6]) for span in record["ref_exps"]}
    for sample in conversation.samples:
        if sample["task"] == EXPRESSION_TO_BOX:
            parsed = parse_grounded_text(sample["instruction"] + sample["answer"], fmt=fmt)
            assert parsed.caption == sample["expression"]
        else:
            parsed = parse_grounded_text(sample["instruction"], fmt=fmt)
            assert sample["answer"] == sample["expression"]
            assert record["caption"][slice(*sample["span"])] == sample["expression"]
        [entity] = parsed.entities
        # the decoded boxes are the record's boxes at the grid's resolution: same cells
        assert [box_to_cells(b) for b in entity.boxes] == [box_to_cells(b) for b in sample["boxes"]]
        assert all(tuple(b) in record_boxes for b in sample["boxes"])
        for decoded, original in zip(entity.boxes, sample["boxes"]):
            assert all(abs(a - b) <= 1 / 32 for a, b in zip(decoded, original))


def test_conversation_shape_and_deterministic_choices():
    record, _ = world_record(11)
    params = InstructParams(expression_to_box=1, box_to_expression=1, seed=5)
    first = make_conversation(record, params)
    assert first.to_dict() == make_conversation(dict(record), params).to_dict()  # same (seed, key): same samples
    turns = first.conversations
    assert [t["from"] for t in turns] == ["human", "gpt", "human", "gpt"]
    assert turns[0]["value"].startswith("<image>\n") and "<image>" not in turns[2]["value"]
    assert {s["task"] for s in first.samples} == {EXPRESSION_TO_BOX, BOX_TO_EXPRESSION}
    # the choice depends on (seed, key): over many keys and seeds every template is drawn, and seeds differ
    drawn = {seed: [] for seed in (0, 1)}
    for seed in drawn:
        for n in range(60):
            r, _ = world_record(n)
            drawn[seed] += [s["template"] for s in make_conversation(r, InstructParams(seed=seed)).samples
                            if s["task"] == BOX_TO_EXPRESSION]
    assert set(drawn[0]) == set(TEMPLATE_NAMES) and drawn[0] != drawn[1]
    only = make_conversation(record, InstructParams(templates=("describe_this_object",), expression_to_box=0))
    assert [s["template"] for s in only.samples] == ["describe_this_object"]


def test_hostile_records_become_rejects_with_a_reason():
    reasons = {}
    for record in hostile_records():
        with pytest.raises(InstructReject) as caught:
            make_conversation(record)
        reasons[record["key"]] = (caught.value.status, caught.value.reason)
    assert reasons["hostile_box"][0] == "bad_metadata" and "x_max" in reasons["hostile_box"][1] \
        and "[0, 1]" in reasons["hostile_box"][1]
    assert reasons["hostile_nan"][0] == "bad_metadata" and "score" in reasons["hostile_nan"][1] \
        and "finite" in reasons["hostile_nan"][1]
    assert reasons["hostile_span"][0] == "bad_metadata" and "offsets" in reasons["hostile_span"][1]
    assert reasons["hostile_long"][0] == "bad_caption" and "1000000 characters" in reasons["hostile_long"][1]
    assert reasons["hostile_low"][0] == "no_box" and "0.65" in reasons["hostile_low"][1]
    with pytest.raises(ValueError, match="templates must be"):
        run_instruct(InstructConfig(input="x", output="y", templates=("what_is_that",)))


# --- the build -------------------------------------------------------------------------------------------------

def snapshot(output: Path) -> dict[str, object]:
    """File bytes, stats and markers without timings, by relative name (the layout's sub-folders included);
    _run.json left out."""
    out = {}
    for name, path in build_files(output).items():
        if name == "_run.json" or ".tmp-" in name:
            continue
        if name == "_stats.json" or name.startswith(f"{layout.STATS_DIR}/"):
            stats = json.loads(path.read_text())
            stats.pop("timings_s", None)
            out[name] = stats
        elif name.startswith(f"{layout.DONE_DIR}/"):
            marker = json.loads(path.read_text())
            marker["files"] = {k: v for k, v in marker["files"].items() if not k.startswith(f"{layout.STATS_DIR}/")}
            out[name] = marker
        else:
            out[name] = path.read_bytes()
    return out


def accounted(output: Path) -> dict[str, str]:
    """key -> "instructed" or its reject status, over every shard; fails on a key seen twice."""
    seen: dict[str, str] = {}
    for tar in sorted(output.glob(f"{layout.TARS_DIR}/*.tar")):
        for entry in read_instruct_shard(str(tar)):
            assert entry["key"] not in seen
            seen[entry["key"]] = "instructed"
    for rejects in sorted(output.glob(f"{layout.REJECTS_DIR}/*.parquet")):
        for row in pq.read_table(rejects).to_pylist():
            assert row["key"] not in seen and row["reason"]
            seen[row["key"]] = row["status"]
    return seen


@pytest.fixture(scope="module")
def builds(tmp_path_factory):
    root = tmp_path_factory.mktemp("instruct")
    build = clean_build(root / "build")
    hostile = hostile_records()
    hostile.append({**world_record(8)[0], "key": "bad/key"})
    write_build(build, {"00003": hostile})
    local = root / "local"
    summary = run_instruct(InstructConfig(input=str(build), output=str(local), engine="local", progress=False))
    return root, build, local, summary


def test_every_input_record_accounted_exactly_once(builds):
    root, build, local, summary = builds
    assert summary.shards_written == ["00000", "00001", "00002", "00003"]
    seen = accounted(local)
    assert len(seen) == 12 + 6
    assert [k for k, v in seen.items() if v == "instructed"] == [f"{s * 100 + i:09d}" for s in range(3) for i in range(4)]
    assert {k: v for k, v in seen.items() if v != "instructed"} == {
        "hostile_box": "bad_metadata", "hostile_nan": "bad_metadata", "hostile_span": "bad_metadata",
        "hostile_long": "bad_caption", "hostile_low": "no_box", "bad/key": "bad_key"}
    rejects = {r["key"]: r for r in pq.read_table(local / layout.rejects_name("00003")).to_pylist()}
    assert rejects["hostile_long"]["caption"] is None or len(rejects["hostile_long"]["caption"]) == 1_000_000
    # the index: one row per question/answer pair; the tar's entries hold image + conversation
    index = pq.read_table(local / "00000.parquet")
    assert index.schema == INDEX_SCHEMA and index.num_rows == 8
    entry = read_instruct_shard(str(local / layout.tar_name("00000")))[0]
    assert entry["caption"] == "a red square next to a green ball"  # the record's caption, not KEY.txt
    assert Image.open(io.BytesIO(entry["image_bytes"])).size == (64, 64)
    assert [t["from"] for t in entry["conversations"]] == ["human", "gpt", "human", "gpt"]
    stats = json.loads((local / layout.stats_name("00003")).read_text())
    assert stats["samples"] == 6 and stats["counts"]["bad_metadata"] == 3
    assert json.loads((local / layout.stats_name("00000")).read_text())["instruct"]["turns"] == 8


def test_rerun_skips_done_shards_and_changed_parameters_are_refused(builds, tmp_path):
    root, build, local, _ = builds
    output = tmp_path / "out"
    config = InstructConfig(input=str(build), output=str(output), engine="local", progress=False)
    run_instruct(config)
    (output / layout.done_name("00001")).unlink()
    summary = run_instruct(config)
    assert summary.shards_written == ["00001"] and snapshot(output) == snapshot(local)
    with pytest.raises(ValueError, match="seed"):
        run_instruct(config.replace(seed=3))
    summary = run_instruct(config.replace(seed=3, overwrite=True))
    assert len(summary.shards_written) == 4 and snapshot(output) != snapshot(local)


def test_a_build_of_the_previous_layout_gives_the_same_conversations(builds, tmp_path):
    """A build grit run left in its previous layout (tars, rejects, stats and markers beside the rows) is read
    as well: its rejects files are not shards of records, and every record gives what it gives today."""
    root, build, local, _ = builds
    old = tmp_path / "old"
    old.mkdir()
    for name, path in build_files(build).items():
        (old / layout.previous_name(name)).write_bytes(path.read_bytes())
    assert (old / "00000.tar").is_file() and (old / "00000_rejects.parquet").is_file()
    output = tmp_path / "out"
    summary = run_instruct(InstructConfig(input=str(old), output=str(output), engine="local", progress=False))
    assert summary.shards_written == ["00000", "00001", "00002", "00003"]
    assert accounted(output) == accounted(local)

    def shards(folder):  # (stats and markers record the input folder, which differs)
        return {n: v for n, v in snapshot(folder).items() if not n.startswith((layout.STATS_DIR, layout.DONE_DIR))}

    assert len(shards(local)) == 3 * 4 and shards(output) == shards(local)   # index, tar and rejects per shard


def test_paper_spelling_and_the_grit20m_download_layout(tmp_path):
    from tests.fixtures_views import write_example_grit20m

    download = write_example_grit20m(tmp_path / "grit20m")
    output = tmp_path / "out"
    summary = run_instruct(InstructConfig(input=str(download["dir"]), output=str(output), engine="local",
                                          progress=False, text_format="paper"))
    assert summary.counts == {"grounded": 3, "download_error": 1}
    entries = read_instruct_shard(str(output / layout.tar_name("00000")))
    assert [e["key"] for e in entries] == [r["key"] for r in download["grounded"]]
    text = json.dumps([e["conversations"] for e in entries])
    assert "<p>" in text and "<loc_" in text and "<phrase>" not in text and entries[0]["format"] == "paper"


def _grit(*args, env=None):
    environment = {**os.environ, "NO_ALBUMENTATIONS_UPDATE": "1", **(env or {})}
    return subprocess.run([sys.executable, "-m", "grit_pipeline", *args], cwd=REPO, env=environment,
                          capture_output=True, text=True, timeout=300)


def test_kill_9_mid_run_then_rerun_gives_identical_shards(builds, tmp_path):
    """The process SIGKILLs itself at its 7th atomic write: _run.json, shard 00000's four files and marker,
    then inside shard 00001."""
    root, build, local, _ = builds
    output = tmp_path / "out"
    args = ("instruct", "--input", str(build), "--output", str(output), "--engine", "local")
    killed = _grit(*args, env={"GRIT_FAULT_INJECTION": "1", "GRIT_FAULT_KILL_AT_RENAME": "7"})
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
    assert done_names(output) == [layout.done_name("00000")]
    assert [p for p in temp_files(output) if p.name.startswith("00001")]
    rerun = _grit(*args)
    assert rerun.returncode == 0, rerun.stderr[-2000:]
    assert "1 already done, 3 to do" in rerun.stderr
    assert snapshot(output) == snapshot(local)
    assert not temp_files(output)


def test_ray_engine_gives_the_local_engines_shards(builds, tmp_path):
    root, build, local, _ = builds
    output = tmp_path / "ray"
    summary = run_instruct(InstructConfig(input=str(build), output=str(output), engine="ray", num_cpus=2,
                                          progress=False))
    assert summary.engine == "ray" and len(summary.shards_written) == 4
    assert snapshot(output) == snapshot(local)
    assert not (output / "_parts").exists()


def test_cli_refuses_bad_settings_in_one_line(builds, tmp_path, capsys):
    from grit_pipeline.cli import main

    root, build, _, _ = builds
    code = main(["instruct", "--input", str(build), "--output", str(tmp_path / "o"), "--expression-to-box", "0",
                 "--box-to-expression", "0"])
    err = capsys.readouterr().err
    assert code == 2 and "no sample would be made" in err and "Traceback" not in err
