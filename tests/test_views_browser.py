"""The gallery and the report as a person sees them: rendered by headless Chromium (Debian's ``chromium``).

Checks: every image loaded, every box drawn where its record says (element rectangles against the image
rectangle, and the pixel colour on a box edge in a screenshot), hostile captions/reasons shown as text with
nothing injected, and no request leaving the machine (DevTools Network domain: only file: and data: URLs).
"""
from __future__ import annotations

import io
import json

import pytest
from PIL import Image

from grit_pipeline.views.chromium import Chromium, find_chromium
from tests.fixtures_views import (
    HOSTILE_CAPTION, HOSTILE_REASON, write_example_build, write_example_grit20m,
)
from grit_pipeline.views.gallery import write_gallery
from grit_pipeline.views.report import write_report

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(find_chromium() is None,
                       reason="headless Chromium not installed (apt-get install chromium; .ci/run installs it)"),
]

LOCAL_SCHEMES = ("file:", "data:")
PX = 1.5  # allowed difference in CSS pixels between a drawn box edge and its record


@pytest.fixture(scope="module")
def browser():
    with Chromium(width=1280, height=900) as chromium:
        yield chromium


@pytest.fixture(scope="module")
def example(tmp_path_factory):
    return write_example_build(tmp_path_factory.mktemp("browser"))


def fresh_page(browser, path):
    browser.events.clear()
    browser.open(path)


def visible_cards(browser) -> list[dict]:
    """For each visible card: key, status, image state, and the geometry of its frame and boxes."""
    return browser.evaluate("""
      Array.from(document.querySelectorAll('.card')).filter(c => !c.hidden).map(card => {
        const frame = card.querySelector('.frame');
        const img = frame.querySelector('img');
        const ref = (img || frame).getBoundingClientRect();
        return {
          key: card.dataset.key, status: card.dataset.status,
          image: img ? {complete: img.complete, naturalWidth: img.naturalWidth} : null,
          frame: {left: ref.left, top: ref.top, width: ref.width, height: ref.height},
          boxes: Array.from(frame.querySelectorAll('.box')).map(b => {
            const r = b.getBoundingClientRect();
            return {kind: b.dataset.kind, index: +b.dataset.index, left: r.left, top: r.top,
                    right: r.right, bottom: r.bottom, shown: getComputedStyle(b).display !== 'none',
                    colour: getComputedStyle(b).borderLeftColor};
          }),
        };
      })""")


def assert_box_at(box: dict, frame: dict, span: list[float]) -> None:
    _, _, x1, y1, x2, y2, _ = span
    expected = (frame["left"] + x1 * frame["width"], frame["top"] + y1 * frame["height"],
                frame["left"] + x2 * frame["width"], frame["top"] + y2 * frame["height"])
    got = (box["left"], box["top"], box["right"], box["bottom"])
    assert got == pytest.approx(expected, abs=PX), (box, span)


def test_gallery_in_chromium(browser, example, tmp_path):
    page = write_gallery(example["build"], tmp_path / "gallery.html", per_page=3)
    fresh_page(browser, page)
    records = {r["key"]: r for r in example["grounded"]}
    rejects = {r["key"]: r for r in example["rejects"]}
    pages = browser.evaluate("window.gritGallery.pages")
    assert pages == 3
    seen = set()
    for number in range(pages):
        browser.evaluate(f"window.gritGallery.show({number})")
        shown = visible_cards(browser)
        assert 1 <= len(shown) <= 3
        for card in shown:
            seen.add(card["key"])
            key = card["key"]
            if key in example["with_image"]:                     # image in the build or the input shard
                assert card["image"] == {"complete": True, "naturalWidth": card["image"]["naturalWidth"]}
                assert card["image"]["naturalWidth"] > 0, key
            else:
                assert card["image"] is None, key               # placeholder with the reason instead
            assert card["frame"]["width"] > 100 and card["frame"]["height"] > 50
            if key in records:
                kept = [b for b in card["boxes"] if b["kind"] == "kept"]
                assert len(kept) == len(records[key]["noun_chunks"]) and all(b["shown"] for b in kept)
                for box in kept:
                    assert_box_at(box, card["frame"], records[key]["noun_chunks"][box["index"]])
                dropped = [b for b in card["boxes"] if b["kind"] == "dropped"]
                assert len(dropped) == len(example["dropped"][key])
                assert not any(b["shown"] for b in dropped)      # hidden until the toggle is on
            elif rejects[key]["dropped_boxes"]:
                (box,) = card["boxes"]
                assert box["shown"]                              # a no_box reject shows what was dropped
                assert_box_at(box, card["frame"], rejects[key]["dropped_boxes"][0])
    assert seen == set(records) | set(rejects)

    # the toggle shows dropped boxes on grounded samples, at their coordinates
    browser.evaluate("(() => { const t = document.getElementById('show-dropped'); t.click(); return t.checked; })()")
    for number in range(pages):
        browser.evaluate(f"window.gritGallery.show({number})")
        for card in visible_cards(browser):
            for box in card["boxes"]:
                if box["kind"] == "dropped" and card["key"] in records:
                    assert box["shown"]
                    assert_box_at(box, card["frame"], example["dropped"][card["key"]][box["index"]])

    # nothing left the machine
    urls = browser.requested_urls()
    assert urls and all(u.startswith(LOCAL_SCHEMES) for u in urls), urls


def test_gallery_hostile_caption_is_text(browser, example, tmp_path):
    page = write_gallery(example["build"], tmp_path / "gallery.html", per_page=100)
    fresh_page(browser, page)
    result = browser.evaluate("""(() => {
      const card = document.querySelector('.card[data-key="000000002"]');
      const caption = card.querySelector('.caption');
      const reason = document.querySelector('.card[data-key="000000006"] .reason-text');
      const rect = caption.getBoundingClientRect();
      return {
        pwned: window.__pwned === undefined ? null : window.__pwned,
        captionText: caption.textContent, reasonText: reason.textContent,
        injected: caption.querySelectorAll('img, script, b, p, svg').length
                  + reason.querySelectorAll('script, i').length,
        scripts: document.querySelectorAll('script').length,
        svg: document.querySelectorAll('svg').length,
        jsLinks: Array.from(document.querySelectorAll('a')).filter(a => !/^https?:/.test(a.href)).length,
        visible: rect.width > 0 && rect.height > 0 && caption.innerText.includes('<script>window.__pwned=2'),
      };
    })()""")
    assert result["pwned"] is None
    assert result["captionText"] == HOSTILE_CAPTION
    assert result["reasonText"] == HOSTILE_REASON
    assert result["injected"] == 0 and result["svg"] == 0 and result["jsLinks"] == 0
    assert result["scripts"] == 2
    assert result["visible"]


def test_gallery_box_edges_have_the_box_colour_in_a_screenshot(browser, example, tmp_path):
    page = write_gallery(example["build"], tmp_path / "gallery.html", per_page=100, statuses=["grounded"])
    fresh_page(browser, page)
    key = "000000003"   # yellow square in the top-right corner, box colour from the palette
    geometry = browser.evaluate(f"""(() => {{
      const box = document.querySelector('.card[data-key="{key}"] .box.kept');
      box.scrollIntoView({{block: 'center'}});
      const r = box.getBoundingClientRect();
      const img = box.parentElement.querySelector('img').getBoundingClientRect();
      return {{left: r.left, top: r.top, right: r.right, bottom: r.bottom,
              colour: getComputedStyle(box).borderLeftColor,
              img: {{left: img.left, top: img.top, width: img.width, height: img.height}}}};
    }})()""")
    shot = Image.open(io.BytesIO(browser.screenshot())).convert("RGB")
    colour = tuple(int(v) for v in geometry["colour"][geometry["colour"].index("(") + 1:-1].split(",")[:3])
    middle_y = round((geometry["top"] + geometry["bottom"]) / 2)
    left_edge = shot.getpixel((int(geometry["left"]) + 1, middle_y))
    bottom_edge = shot.getpixel((round((geometry["left"] + geometry["right"]) / 2), int(geometry["bottom"]) - 1))
    assert max(abs(a - b) for a, b in zip(left_edge, colour)) < 40, (left_edge, colour)
    assert max(abs(a - b) for a, b in zip(bottom_edge, colour)) < 40, (bottom_edge, colour)
    # and the drawn object (the yellow square) is inside the box, at the record's place
    record = next(r for r in example["grounded"] if r["key"] == key)
    _, _, x1, y1, x2, y2, _ = record["noun_chunks"][0]
    img = geometry["img"]
    inside = shot.getpixel((round(img["left"] + (x1 + x2) / 2 * img["width"]),
                            round(img["top"] + (y1 + y2) / 2 * img["height"])))
    assert inside[0] > 180 and inside[1] > 160 and inside[2] < 90, inside   # yellow
    outside = shot.getpixel((round(img["left"] + 0.2 * img["width"]), round(img["top"] + 0.8 * img["height"])))
    assert min(outside) > 200, outside                                        # light background


def test_grit20m_gallery_in_chromium(browser, tmp_path):
    data = write_example_grit20m(tmp_path / "grit20m")
    page = write_gallery(data["dir"], tmp_path / "gallery.html", per_page=100)
    fresh_page(browser, page)
    records = {r["key"]: r for r in data["grounded"]}
    shown = visible_cards(browser)
    assert {c["key"] for c in shown} == set(records) | set(data["failed"])
    for card in shown:
        if card["key"] in records:
            assert card["image"]["naturalWidth"] > 0
            for box in card["boxes"]:
                assert_box_at(box, card["frame"], records[card["key"]]["noun_chunks"][box["index"]])
        else:
            assert card["image"] is None and card["status"] == "download_error"
    assert all(u.startswith(LOCAL_SCHEMES) for u in browser.requested_urls())


def test_report_in_chromium(browser, example, tmp_path):
    page = write_report(example["build"], tmp_path / "report")
    fresh_page(browser, page)
    result = browser.evaluate("""(() => ({
      plots: Array.from(document.querySelectorAll('figure img')).map(i => ({
        id: i.closest('figure').id, loaded: i.complete && i.naturalWidth > 0, width: i.getBoundingClientRect().width})),
      totals: Array.from(document.querySelectorAll('table.totals tbody tr')).map(
        tr => Array.from(tr.cells).map(td => td.textContent)),
      reasons: Array.from(document.querySelectorAll('table.reasons td')).map(td => td.textContent),
      injected: document.querySelectorAll('script, table i').length,
      pwned: window.__pwned === undefined ? null : window.__pwned,
    }))()""")
    assert [p["id"] for p in result["plots"]] == ["plot-box_scores", "plot-boxes_per_image",
                                                  "plot-expression_words", "plot-spans_per_caption",
                                                  "plot-drops_per_stage"]
    assert all(p["loaded"] and p["width"] > 200 for p in result["plots"])
    totals = {row[0]: row[1:] for row in result["totals"]}
    assert totals["images"][0] == "4" and totals["boxes"][0] == "6" and totals["text spans"][0] == "4"
    assert totals["images"][2] == "90,614,680"
    assert HOSTILE_REASON in result["reasons"]
    assert result["injected"] == 0 and result["pwned"] is None
    urls = browser.requested_urls()
    assert urls and all(u.startswith(LOCAL_SCHEMES) for u in urls), urls


def test_chromium_records_a_remote_request(browser, tmp_path):
    """The network check can fail: a page that asks for a remote image shows up in the request list."""
    page = tmp_path / "remote.html"
    page.write_text('<!DOCTYPE html><img src="http://example.invalid/x.png"><p>hi</p>')
    fresh_page(browser, page)
    browser.evaluate("new Promise(r => setTimeout(() => r(true), 200))")
    assert any(u.startswith("http://example.invalid/") for u in browser.requested_urls())
    assert json.dumps(browser.requested_urls())


@pytest.mark.slow
def test_real_build_gallery_in_chromium(browser, tmp_path):
    """synth -> grit pipeline (noop detector, hashed scores) -> gallery: every image loads, rejects
    included (their images come from the input shards), every box where the build's parquet says."""
    import pyarrow.parquet as pq

    from grit_pipeline.pipeline import PipelineConfig, run_pipeline
    from grit_pipeline.synth.writer import write_synthetic_world

    write_synthetic_world(tmp_path / "shards", images=16, seed=5, shard_size=8)
    run_pipeline(PipelineConfig(input=str(tmp_path / "shards"), output=str(tmp_path / "grit"), detector="noop",
                                detector_options={"score": "hash"}, engine="local", progress=False))
    rows = {}
    for name in ("00000.parquet", "00001.parquet"):
        rows.update({r["key"]: r for r in pq.read_table(tmp_path / "grit" / name).to_pylist()})
    page = write_gallery(tmp_path / "grit", tmp_path / "gallery.html", sample=16, per_page=16)
    fresh_page(browser, page)
    shown = visible_cards(browser)
    assert len(shown) == 16 and any(c["status"] != "grounded" for c in shown) and rows
    for card in shown:
        assert card["image"] is not None and card["image"]["naturalWidth"] > 0, card["key"]
        if card["status"] == "grounded":
            kept = [b for b in card["boxes"] if b["kind"] == "kept"]
            assert len(kept) == len(rows[card["key"]]["noun_chunks"])
            for box in kept:
                assert_box_at(box, card["frame"], rows[card["key"]]["noun_chunks"][box["index"]])
    assert all(u.startswith(LOCAL_SCHEMES) for u in browser.requested_urls())
