"""`grit ground` end to end with a tiny random Grounding DINO / OWLv2 loaded through --model DIR."""
import io
import json

import numpy as np
import pytest
from PIL import Image

from grit_pipeline import status
from grit_pipeline.cli import main
from grit_pipeline.record import GritRecord
from hf_tiny import build_tiny_grounding_dino, build_tiny_owlv2


@pytest.fixture(scope="module")
def gdino_dir(tmp_path_factory):
    return build_tiny_grounding_dino(tmp_path_factory.mktemp("gdino"))


@pytest.fixture(scope="module")
def owl_dir(tmp_path_factory):
    return build_tiny_owlv2(tmp_path_factory.mktemp("owlv2"))


def save_random_image(path, width, height, seed=0, fmt=None):
    rng = np.random.default_rng(seed)
    Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8)).save(path, format=fmt)
    return path


@pytest.fixture()
def inputs(tmp_path):
    folder = tmp_path / "pictures"
    folder.mkdir()
    save_random_image(folder / "dogs.jpg", 80, 50, seed=1)
    save_random_image(folder / "car.png", 60, 90, seed=2)
    (folder / "empty.jpg").write_bytes(b"")
    (folder / "cut.jpg").write_bytes((folder / "dogs.jpg").read_bytes()[:200])
    cmyk = Image.new("CMYK", (40, 40), (0, 200, 200, 0))
    cmyk.save(folder / "cmyk.jpg")
    lines = [
        {"key": "dogs", "image": "pictures/dogs.jpg", "caption": "a dog and a hot dog on a table"},
        {"key": "car", "image": str(folder / "car.png"), "caption": "a red car near the house",
         "url": "http://example.com/car.png", "id": 7},
        {"key": "empty", "image": "pictures/empty.jpg", "caption": "a cat"},
        {"key": "cut", "image": "pictures/cut.jpg", "caption": "a cat"},
        {"key": "missing", "image": "pictures/nope.jpg", "caption": "a cat"},
        {"key": "nocaption", "image": "pictures/dogs.jpg", "caption": None},
        {"key": "abstract", "image": "pictures/dogs.jpg", "caption": "love and hope"},
        {"key": "cmyk", "image": "pictures/cmyk.jpg", "caption": "a red sign"},
        {"key": "border", "image": "pictures/dogs.jpg", "caption": "a dog", "width": 256, "height": 256,
         "original_width": 640, "original_height": 480},
    ]
    jsonl = tmp_path / "samples.jsonl"
    jsonl.write_text("\n".join(json.dumps(line) for line in lines) + "\nnot json at all\n")
    return jsonl


def run_cli(argv, capsys, stdin=None, monkeypatch=None):
    if stdin is not None:
        monkeypatch.setattr("sys.stdin", io.StringIO(stdin))
    code = main(argv)
    captured = capsys.readouterr()
    rows = [json.loads(line) for line in captured.out.splitlines() if line.strip()]
    return code, rows, captured.err


def test_jsonl_in_grit_records_out(gdino_dir, inputs, capsys):
    code, rows, err = run_cli(["ground", "--input", str(inputs), "--detector", "hf", "--model", str(gdino_dir),
                               "--box-threshold", "0.2", "--batch-size", "4", "--device", "cpu", "--dropped"],
                              capsys)
    assert code == 0
    by_key = {row["key"]: row for row in rows}
    assert [row["key"] for row in rows] == ["dogs", "car", "empty", "cut", "missing", "nocaption", "abstract",
                                            "cmyk", "border", "line-10"]  # every input once, in order
    assert {k: by_key[k]["status"] for k in by_key} == {
        "dogs": status.GROUNDED, "car": status.GROUNDED, "empty": status.DECODE_ERROR, "cut": status.DECODE_ERROR,
        "missing": status.DECODE_ERROR, "nocaption": status.BAD_CAPTION, "abstract": status.NO_NOUN_CHUNKS,
        "cmyk": status.GROUNDED, "border": status.LETTERBOXED, "line-10": status.SHARD_ERROR,
    }
    for key in ("empty", "cut", "missing", "nocaption", "abstract", "border", "line-10"):
        assert by_key[key]["reason"], key
    car = by_key["car"]
    record = GritRecord.from_dict(car)  # valid GrIT-20M record
    assert (record.width, record.height) == (60, 90) and record.url == "http://example.com/car.png" and record.id == 7
    spans = {tuple(item[:2]) for item in record.noun_chunks}
    assert spans <= {(0.0, 9.0), (15.0, 24.0)}  # "a red car", "the house"
    assert all(item[6] > 0.2 for item in record.noun_chunks)
    assert all(item[6] <= 0.2 for item in car["dropped_boxes"])
    dogs = GritRecord.from_dict(by_key["dogs"])
    texts = {dogs.caption[int(s):int(e)] for s, e, *_ in dogs.noun_chunks}
    assert texts <= {"a dog", "a hot dog", "a table"}
    assert "grounded" in err and "samples" in err  # progress and summary on stderr


def test_threshold_one_keeps_nothing(gdino_dir, inputs, capsys):
    code, rows, _ = run_cli(["ground", "--input", str(inputs), "--detector", "hf", "--model", str(gdino_dir),
                             "--box-threshold", "1.0", "--device", "cpu", "--limit", "2"], capsys)
    assert code == 0 and [row["status"] for row in rows] == [status.NO_BOX, status.NO_BOX]
    assert "no box scored above 1.0" in rows[0]["reason"]


def test_image_folder_with_captions_and_metadata(owl_dir, tmp_path, capsys):
    folder = tmp_path / "shard"
    folder.mkdir()
    save_random_image(folder / "000.jpg", 64, 48, seed=4)
    (folder / "000.txt").write_text("a man with a hat next to a boat\n")
    save_random_image(folder / "001.jpg", 64, 64, seed=5)
    (folder / "001.txt").write_text("a red bus")
    (folder / "001.json").write_text(json.dumps({"width": 64, "height": 64, "original_width": 640,
                                                 "original_height": 400, "url": "http://x/1.jpg"}))
    save_random_image(folder / "002.png", 30, 30, seed=6)  # no caption file
    code, rows, _ = run_cli(["ground", "--images", str(folder), "--detector", "hf", "--model", str(owl_dir),
                             "--box-threshold", "0.0", "--device", "cpu"], capsys)
    assert code == 0
    assert [(row["key"], row["status"]) for row in rows] == [
        ("000", status.GROUNDED), ("001", status.LETTERBOXED), ("002", status.BAD_CAPTION)]
    assert rows[1]["url"] == "http://x/1.jpg"
    record = GritRecord.from_dict(rows[0])
    assert (record.width, record.height) == (64, 48) and record.noun_chunks


def test_stdin_input(gdino_dir, tmp_path, capsys, monkeypatch):
    image = save_random_image(tmp_path / "x.jpg", 50, 50)
    line = json.dumps({"key": "k1", "image": str(image), "caption": "a cat on a table"})
    code, rows, _ = run_cli(["ground", "--detector", "hf", "--model", str(gdino_dir), "--device", "cpu",
                             "--box-threshold", "0.0"], capsys, stdin=line + "\n", monkeypatch=monkeypatch)
    assert code == 0 and len(rows) == 1 and rows[0]["status"] == status.GROUNDED


@pytest.mark.parametrize("argv, message", [
    (["--detector", "no-such-backend"], "no-such-backend"),
    (["--detector", "hf"], "needs a model"),
    (["--detector", "hf", "--box-threshold", "2"], "box_threshold"),
    (["--detector", "hf", "--nms-iou", "0"], "nms_iou"),
    (["--detector", "hf", "--min-score", "0.7"], "--min-score"),
])
def test_usage_errors_are_messages_not_tracebacks(argv, message, inputs, capsys):
    code, rows, err = run_cli(["ground", "--input", str(inputs), *argv], capsys)
    assert code == 2 and rows == [] and message in err


def test_default_demo_detector_grounds_synthetic_scenes(tmp_path, capsys):
    """The default path (--detector demo, no model download) on pictures of the synthetic world."""
    import random

    from grit_pipeline.synth.captions import make_caption
    from grit_pipeline.synth.scene import random_scene, render_scene

    rng = random.Random(7)
    for i in range(6):
        scene = random_scene(rng)
        render_scene(scene).save(tmp_path / f"{i:03d}.jpg", quality=95)
        (tmp_path / f"{i:03d}.txt").write_text(make_caption(rng, scene).text)
    code, rows, err = run_cli(["ground", "--images", str(tmp_path), "--device", "cpu"], capsys)
    assert code == 0 and len(rows) == 6
    grounded = [row for row in rows if row["status"] == status.GROUNDED]
    assert len(grounded) >= 3, [row.get("reason") for row in rows]
    for row in grounded:
        record = GritRecord.from_dict(row)
        assert all(item[6] > 0.65 for item in record.noun_chunks)


def test_ground_gives_grit_runs_rows_for_the_same_samples(tmp_path, capsys):
    """One orchestration: `grit ground` on the images and captions of a synthetic shard gives, key by key,
    the status, reason and GrIT-20M columns that `grit run` writes for that shard."""
    import tarfile

    import pyarrow.parquet as pq

    from grit_pipeline.synth.writer import write_synthetic_world

    write_synthetic_world(tmp_path / "shards", images=12, seed=3, shard_size=12, defect_rate=0.3)
    assert main(["run", "--input", str(tmp_path / "shards"), "--output", str(tmp_path / "grit"), "--engine",
                 "local", "--no-progress"]) == 0
    capsys.readouterr()
    folder = tmp_path / "pictures"
    folder.mkdir()
    with tarfile.open(tmp_path / "shards" / "00000.tar") as tar:
        tar.extractall(folder, filter="data")  # KEY.jpg + KEY.txt (+ KEY.json): the --images layout
    code, rows, _ = run_cli(["ground", "--images", str(folder), "--device", "cpu"], capsys)
    assert code == 0
    built = {r["key"]: r for r in pq.read_table(tmp_path / "grit" / "00000.parquet").to_pylist()}
    rejected = {r["key"]: r for r in pq.read_table(tmp_path / "grit" / "_rejects" / "00000.parquet").to_pylist()}
    assert {row["key"] for row in rows} <= set(built) | set(rejected)  # failed downloads have no image file
    assert any(row["status"] == status.GROUNDED for row in rows) and any(row["status"] != status.GROUNDED
                                                                         for row in rows)
    for row in rows:
        if row["status"] == status.GROUNDED:
            stored = built[row["key"]]
            assert (row["noun_chunks"], row["ref_exps"], row["width"], row["height"]) == (
                stored["noun_chunks"], stored["ref_exps"], stored["width"], stored["height"])
        else:
            assert (row["status"], row["reason"]) == (rejected[row["key"]]["status"], rejected[row["key"]]["reason"])


def _synthetic_pictures(folder, count, seed=7, suffix=".png"):
    """Pictures of the synthetic world with their captions (the default demo detector grounds them)."""
    import random

    from grit_pipeline.synth.captions import make_caption
    from grit_pipeline.synth.scene import random_scene, render_scene

    folder.mkdir(parents=True, exist_ok=True)
    rng = random.Random(seed)
    for i in range(count):
        scene = random_scene(rng)
        render_scene(scene).save(folder / f"{i:03d}{suffix}", **({"quality": 95} if suffix == ".jpg" else {}))
        (folder / f"{i:03d}.txt").write_text(make_caption(rng, scene).text)
    return folder


def test_draw_writes_each_grounded_image_with_its_boxes_in_their_colours(tmp_path, capsys):
    from grit_pipeline.views.draw import colour_of, outline_width

    folder = _synthetic_pictures(tmp_path / "pictures", 5)
    _synthetic_pictures(tmp_path / "pictures", 1, seed=8, suffix=".jpg")  # 000.jpg beside 000.png
    (folder / "broken.png").write_bytes(b"\x89PNG not really")
    (folder / "broken.txt").write_text("a red square")
    code, rows, err = run_cli(["ground", "--images", str(folder), "--device", "cpu", "--draw",
                               str(tmp_path / "drawn")], capsys)
    assert code == 0
    by_key = {row["key"]: row for row in rows}
    assert by_key["broken"]["status"] == status.DECODE_ERROR  # reported in its row, not a crash
    summary = json.loads(err.strip().splitlines()[-1])
    grounded = [row for row in rows if row["status"] == status.GROUNDED]
    assert len(grounded) >= 3
    assert summary["drawn"]["images"] == len(grounded)
    assert summary["drawn"]["not_drawn"][status.DECODE_ERROR] == 1
    names = sorted(p.name for p in (tmp_path / "drawn").iterdir())
    assert names == sorted(f"{row['key']}{'.jpg' if row['image'].endswith('.jpg') else '.png'}" for row in grounded)
    for row in grounded:
        assert row["image"] == str(folder / (row["key"] + (".jpg" if row["image"].endswith(".jpg") else ".png")))
        drawn = Image.open(tmp_path / "drawn" / f"{row['key']}{'.jpg' if row['image'].endswith('.jpg') else '.png'}")
        original = Image.open(row["image"]).convert("RGB")
        assert drawn.size == original.size
        chunks = sorted({(int(s), int(e)) for s, e, *_ in row["noun_chunks"]})
        # the last chunk's boxes are drawn last: the middle of each box's left edge carries its colour
        last = len(chunks) - 1
        boxes = [item[2:6] for item in row["noun_chunks"] if (int(item[0]), int(item[1])) == chunks[last]]
        for x1, y1, x2, y2 in boxes:
            width, height = drawn.size
            x = int(x1 * width) + outline_width(width, height) // 2
            y = int((y1 + y2) / 2 * height)
            pixel = drawn.convert("RGB").getpixel((x, y))
            if drawn.format == "PNG":
                assert pixel == colour_of(last), (row["key"], pixel)
            else:  # JPEG: the colour within compression's error
                assert max(abs(a - b) for a, b in zip(pixel, colour_of(last))) < 40, (row["key"], pixel)


def test_draw_into_a_file_is_a_one_line_refusal(tmp_path, capsys):
    folder = _synthetic_pictures(tmp_path / "pictures", 1)
    (tmp_path / "taken").write_text("a file")
    code, rows, err = run_cli(["ground", "--images", str(folder), "--draw", str(tmp_path / "taken")], capsys)
    assert code == 2 and rows == [] and "--draw" in err and len(err.strip().splitlines()) == 1
