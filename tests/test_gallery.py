"""grit gallery: reading both layouts, sampling, box geometry in the HTML, escaping (no browser here;
tests/test_views_browser.py renders the pages in headless Chromium)."""
from __future__ import annotations

import html
import io
import json
import re
import tarfile

import pytest
from PIL import Image

from grit_pipeline import status as st
from grit_pipeline.cli import main as grit_main
from grit_pipeline.views.dataset import Dataset, DatasetError, read_images
from tests.fixtures_views import (
    HOSTILE_CAPTION, HOSTILE_REASON, HOSTILE_URL, write_example_build, write_example_grit20m,
)
from grit_pipeline.views.gallery import (
    boxes_to_draw, expand_statuses, highlight_caption, sample_dataset, write_gallery,
)
from grit_pipeline.views.html import json_for_script, thumbnail


@pytest.fixture(scope="module")
def example(tmp_path_factory):
    return write_example_build(tmp_path_factory.mktemp("views"))


@pytest.fixture(scope="module")
def grit20m(tmp_path_factory):
    return write_example_grit20m(tmp_path_factory.mktemp("grit20m"))


def cards(page: str) -> dict[str, str]:
    """key -> the HTML of its card."""
    found = re.findall(r'(<article class="card[^"]*" data-key="([^"]*)".*?</article>)', page, flags=re.S)
    return {html.unescape(key): card for card, key in found}


def box_styles(card: str) -> dict[tuple[str, int], tuple[float, float, float, float]]:
    """(kind, index) -> (left, top, width, height) in percent, from the box divs' inline styles."""
    out = {}
    for kind, index, style in re.findall(
            r'<div class="box (\w+)" data-kind="\w+" data-index="(\d+)" [^>]*?style="([^"]*)"', card):
        values = dict(re.findall(r"(left|top|width|height):([\d.]+)%", style))
        out[(kind, int(index))] = tuple(float(values[k]) for k in ("left", "top", "width", "height"))
    return out


def test_build_layout_every_key_once_with_status(example):
    dataset = Dataset.open(example["build"])
    assert dataset.kind == "pipeline"
    assert dataset.threshold() == 0.65
    samples = list(dataset.iter_samples())
    keys = [s.key for s in samples]
    expected = [r["key"] for r in example["grounded"]] + [r["key"] for r in example["rejects"]]
    assert sorted(keys) == sorted(expected) and len(set(keys)) == len(keys)
    by_key = {s.key: s for s in samples}
    for row in example["rejects"]:
        assert by_key[row["key"]].status == row["status"]
        assert by_key[row["key"]].reason == row["reason"]
        assert by_key[row["key"]].stage == row["stage"]
    # rejected samples' images come from the input shard named by the run, not from the build's tar
    assert by_key["000000004"].image_tar == str(example["inputs"] / "00000.tar")
    images = read_images(samples)
    assert (by_key["000000004"].image_tar, "000000004") in images           # no_box: image found
    assert (by_key["000000007"].image_tar, "000000007") not in images       # never downloaded


def test_gallery_draws_every_stored_box_at_its_coordinates(example, tmp_path):
    out = write_gallery(example["build"], tmp_path / "g.html", sample=100)
    page = out.read_text()
    shown = cards(page)
    assert set(shown) == {r["key"] for r in example["grounded"]} | {r["key"] for r in example["rejects"]}
    for record in example["grounded"]:
        styles = box_styles(shown[record["key"]])
        assert len([k for k in styles if k[0] == "kept"]) == len(record["noun_chunks"])
        for j, (_, _, x1, y1, x2, y2, _) in enumerate(record["noun_chunks"]):
            left, top, width, height = styles[("kept", j)]
            assert (left, top) == pytest.approx((100 * x1, 100 * y1), abs=1e-3)
            assert (width, height) == pytest.approx((100 * (x2 - x1), 100 * (y2 - y1)), abs=1e-3)
        for j, (_, _, x1, y1, x2, y2, _) in enumerate(example["dropped"][record["key"]]):
            assert styles[("dropped", j)][:2] == pytest.approx((100 * x1, 100 * y1), abs=1e-3)
    # the no_box reject shows its below-threshold box, with score on hover and its reason
    no_box = shown["000000004"]
    assert box_styles(no_box)[("dropped", 0)] == pytest.approx((30, 30, 30, 30), abs=1e-3)
    assert 'title="a blue ball · score 0.520 (dropped)"' in no_box
    assert "no box scored above 0.65" in no_box and "<b>expand</b>" in no_box  # the stage that applies the threshold
    # images embedded as data URIs (EXIF-applied thumbnails); missing ones explained
    assert no_box.count('<img src="data:image/jpeg;base64,') == 1
    assert "not downloaded" in shown["000000007"]
    assert "image cannot be decoded (not a recognised image format" in shown["000000005"]
    assert "no caption" in shown["000000006"]


def test_box_hover_titles_and_span_colours(example, tmp_path):
    page = write_gallery(example["build"], tmp_path / "g.html").read_text()
    card = cards(page)["000000000"]
    # the box title gives chunk, expression and score
    assert 'title="a red box → a red box next to a blue ball on the floor · score 0.910"' in card
    # each box's colour is the colour of its chunk's highlighted span in the caption
    box_colours = dict(re.findall(r'class="box kept"[^>]*data-chunk="(\d+:\d+)"[^>]*--c:(#[0-9a-f]{6})', card))
    span_colours = dict(re.findall(r'class="seg nc[^"]*" style="--c:(#[0-9a-f]{6})[^"]*" data-chunk="(\d+:\d+)"', card))
    span_colours = {chunk: colour for colour, chunk in span_colours.items()}
    assert box_colours == {"0:9": span_colours["0:9"], "18:29": span_colours["18:29"]}
    assert box_colours["0:9"] != box_colours["18:29"]


def test_hostile_caption_reason_and_url_are_text(example, tmp_path):
    page = write_gallery(example["build"], tmp_path / "g.html").read_text()
    shown = cards(page)
    hostile = shown["000000002"]
    assert "<script>window" not in page and "onerror=" not in page.replace("onerror=&quot;", "")
    assert "&lt;script&gt;window.__pwned=2&lt;/script&gt;" in hostile
    assert "&lt;img src=x onerror=&quot;window.__pwned=1&quot;&gt;" in hostile
    text = re.search(r'<p class="caption">(.*?)</p>', hostile, flags=re.S).group(1)
    assert html.unescape(re.sub(r"<[^>]+>", "", text)) == HOSTILE_CAPTION   # every character still shown
    assert "{cards}" in hostile                       # template placeholders in data are not expanded
    assert 'href="javascript' not in page             # a javascript: url is text, never a link
    assert html.escape(HOSTILE_URL[:50]) in hostile
    assert html.escape(HOSTILE_REASON) in shown["000000006"]
    assert page.count("<script") == 2                 # the config JSON and the pager


def test_json_for_script_cannot_close_the_script():
    value = {"caption": "</script><script>alert(1)</script> & \u2028\u2029 <!--"}
    text = json_for_script(value)
    assert "<" not in text and ">" not in text and "&" not in text
    assert "\u2028" not in text and "\u2029" not in text
    assert json.loads(text) == value


def test_sample_is_deterministic_sized_and_filtered(example):
    dataset = Dataset.open(example["build"])
    first, counts, matching = sample_dataset(dataset, 3, None, seed=7)
    again, _, _ = sample_dataset(dataset, 3, None, seed=7)
    other, _, _ = sample_dataset(dataset, 3, None, seed=8)
    assert [s.key for s in first] == [s.key for s in again] and len(first) == 3
    assert {s.key for s in first} != {s.key for s in other} or [s.key for s in first] != [s.key for s in other]
    assert counts[st.GROUNDED] == 4 and sum(counts.values()) == 8 and matching == counts
    rejected, _, matching = sample_dataset(dataset, 100, expand_statuses(["rejected"]), seed=0)
    assert {s.status for s in rejected} == {st.NO_BOX, st.DECODE_ERROR, st.BAD_CAPTION, st.DOWNLOAD_ERROR}
    assert sum(matching.values()) == 4
    only, _, _ = sample_dataset(dataset, 100, expand_statuses(["no_box,decode_error"]), seed=0)
    assert sorted(s.key for s in only) == ["000000004", "000000005"]
    with pytest.raises(ValueError, match="unknown status 'grounde'"):
        expand_statuses(["grounde"])


def test_min_score_draws_low_boxes_as_dropped(example, tmp_path):
    page = write_gallery(example["build"], tmp_path / "g.html", min_score=0.8).read_text()
    card = cards(page)["000000000"]            # boxes 0.91 (kept) and 0.78 (now below 0.8)
    styles = box_styles(card)
    assert ("kept", 0) in styles and ("kept", 1) not in styles and ("dropped", 1) in styles
    assert "boxes scoring below 0.8 are drawn as dropped" in page


def test_paging_config_and_page_count(example, tmp_path):
    page = write_gallery(example["build"], tmp_path / "g.html", per_page=3).read_text()
    config = json.loads(re.search(r'<script type="application/json" id="grit-config">(.*?)</script>', page).group(1))
    assert config == {"perPage": 3, "count": 8}


def test_grit20m_download_layout(grit20m, tmp_path):
    dataset = Dataset.open(grit20m["dir"])
    assert dataset.kind == "img2dataset"
    page = write_gallery(grit20m["dir"], tmp_path / "g.html").read_text()
    shown = cards(page)
    assert set(shown) == {r["key"] for r in grit20m["grounded"]} | set(grit20m["failed"])
    for record in grit20m["grounded"]:
        styles = box_styles(shown[record["key"]])
        for j, (_, _, x1, y1, x2, y2, _) in enumerate(record["noun_chunks"]):
            assert styles[("kept", j)][:2] == pytest.approx((100 * x1, 100 * y1), abs=1e-3)
        assert shown[record["key"]].count("data:image/jpeg;base64,") == 1
    failed = shown["000000009"]
    assert 'data-status="download_error"' in failed and "&lt;b&gt;HTTP Error 404&lt;/b&gt;" in failed


def test_invalid_spans_are_reported_not_fatal(tmp_path):
    root = tmp_path / "bad"
    root.mkdir()
    good = {"key": "k1", "caption": "a cat", "width": 10, "height": 10, "url": "u",
            "noun_chunks": [[0, 5, 0.1, 0.1, 0.5, 0.5, 0.9], [0, 50, 0.1, 0.1, 0.5, 0.5, 0.9]],
            "ref_exps": json.dumps([[0, 5, 0.1, 0.1, 0.5, 0.5, 0.9], [0, 5, 0.6, 0.1, 0.5, 0.5, 0.9]])}
    with tarfile.open(root / "00000.tar", "w") as tar:
        for name, data in (("k1.json", json.dumps(good).encode()), ("k2.json", b"{not json"),
                           ("k1.jpg", b"garbage")):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    page = write_gallery(root, tmp_path / "g.html").read_text()
    shown = cards(page)
    assert set(shown) == {"k1", "k2"}
    assert len(box_styles(shown["k1"])) == 1                      # only the valid span is drawn
    assert "not drawn: noun_chunks[1]: offsets [0, 50)" in shown["k1"]
    assert "unreadable k2.json" in shown["k2"]


def test_unfinished_shards_are_skipped(example, tmp_path):
    import shutil
    build = tmp_path / "build"
    shutil.copytree(example["build"], build)
    for name in ("00000.parquet", "_rejects/00000.parquet", "_webdataset/00000.tar", "_stats/00000.json"):
        shutil.copy(build / name, build / name.replace("00000", "00001"))  # no _done/00001.done
    page = write_gallery(build, tmp_path / "g.html").read_text()
    assert "1 shard(s) without a .done marker were skipped" in page
    assert len(cards(page)) == 8


def test_highlight_keeps_every_caption_character():
    caption = "a dog in a field of <flowers> & grass"
    from grit_pipeline.views.dataset import ViewSample

    sample = ViewSample(key="k", status=st.GROUNDED, caption=caption,
                        noun_chunks=[[0, 5, 0, 0, 1, 1, 0.9], [9, 16, 0, 0, 0.5, 0.5, 0.8]],
                        ref_exps=[[0, len(caption), 0, 0, 1, 1, 0.9], [9, 29, 0, 0, 0.5, 0.5, 0.8]],
                        dropped_boxes=[[30, 37, 0, 0, 0.2, 0.2, 0.3]])
    out = highlight_caption(caption, boxes_to_draw(sample))
    assert html.unescape(re.sub(r"<[^>]+>", "", out)) == caption
    assert out.count('class="seg nc re"') == 2 and out.count("nc-dropped") == 1


def test_thumbnail_applies_exif_orientation():
    image = Image.new("RGB", (40, 20), (255, 0, 0))
    exif = image.getexif()
    exif[0x0112] = 6  # rotate 90: the decoded picture is 20 wide, 40 high
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", exif=exif)
    _, width, height = thumbnail(buffer.getvalue(), max_side=512)
    assert (width, height) == (20, 40)
    _, width, height = thumbnail(buffer.getvalue(), max_side=10)
    assert max(width, height) == 10


def test_cli_gallery(example, tmp_path, capsys):
    out = tmp_path / "cli.html"
    assert grit_main(["gallery", str(example["build"]), "--sample", "2", "--seed", "3", "--out", str(out),
                      "--status", "grounded"]) == 0
    assert capsys.readouterr().out.strip() == str(out)
    shown = cards(out.read_text())
    assert len(shown) == 2 and all('data-status="grounded"' in c for c in shown.values())
    assert grit_main(["gallery", str(tmp_path / "missing")]) == 2
    assert "not a directory" in capsys.readouterr().err
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(DatasetError, match="no shards found"):
        Dataset.open(empty)


def test_gallery_of_grit_ground_output(tmp_path, capsys):
    """`grit ground --images DIR -o out.jsonl` then `grit gallery out.jsonl`: every row a card, grounded pictures
    embedded with their boxes where the row puts them, rejects with their reason, bad lines counted, not fatal."""
    import random

    from grit_pipeline.synth.captions import make_caption
    from grit_pipeline.synth.scene import random_scene, render_scene

    folder = tmp_path / "pictures"
    folder.mkdir()
    rng = random.Random(7)
    for i in range(4):
        scene = random_scene(rng)
        render_scene(scene).save(folder / f"{i:03d}.png")
        (folder / f"{i:03d}.txt").write_text(make_caption(rng, scene).text)
    (folder / "broken.jpg").write_bytes(b"not a picture")
    (folder / "broken.txt").write_text("a red square")
    output = tmp_path / "out.jsonl"
    assert grit_main(["ground", "--images", str(folder), "--output", str(output), "--device", "cpu"]) == 0
    rows = [json.loads(line) for line in output.read_text().splitlines()]
    with open(output, "a") as extra:  # a damaged line and a row whose picture has gone
        extra.write("{not json\n")
        extra.write(json.dumps({**rows[0], "key": "moved", "image": str(tmp_path / "gone.png")}) + "\n")
    capsys.readouterr()
    assert grit_main(["gallery", str(output)]) == 0
    page_path = tmp_path / "out_gallery.html"
    assert capsys.readouterr().out.strip() == str(page_path)
    page = page_path.read_text()
    shown = cards(page)
    assert set(shown) == {row["key"] for row in rows} | {"moved"}
    grounded = [row for row in rows if row["status"] == st.GROUNDED]
    assert grounded and any(row["status"] == st.DECODE_ERROR for row in rows)
    for row in grounded:
        card = shown[row["key"]]
        assert 'src="data:image/jpeg;base64,' in card and f'data-status="{st.GROUNDED}"' in card
        styles = box_styles(card)
        assert len(styles) == len(row["noun_chunks"])
        for j, (_, _, x1, y1, x2, y2, _) in enumerate(row["noun_chunks"]):
            assert styles[("kept", j)] == pytest.approx((100 * x1, 100 * y1, 100 * (x2 - x1), 100 * (y2 - y1)),
                                                        abs=1e-3)
    broken = shown["broken"]
    assert f'data-status="{st.DECODE_ERROR}"' in broken and html.escape(rows[-1]["reason"]) in broken
    assert "image cannot be decoded" in broken
    assert "gone.png" in shown["moved"] and "<img" not in shown["moved"]
    assert "1 line(s) of out.jsonl are not JSON objects" in page


def test_gallery_refuses_a_file_that_is_not_ground_output(tmp_path, capsys):
    table = tmp_path / "table.parquet"
    table.write_bytes(b"PAR1 not json lines")
    assert grit_main(["gallery", str(table)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "grit ground output" in err
