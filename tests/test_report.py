"""grit report: totals by the documented counting rules, histograms, plots written, escaping, --truth."""
from __future__ import annotations

import json
import re

import pytest
from PIL import Image

from grit_pipeline import status as st
from grit_pipeline.cli import main as grit_main
from grit_pipeline.pipeline import layout
from grit_pipeline.views.dataset import Dataset
from tests.fixtures_views import HOSTILE_REASON, write_example_build, write_example_grit20m
from grit_pipeline.views.report import PAPER_TOTALS, collect, write_report

PLOTS = ("box_scores", "boxes_per_image", "expression_words", "spans_per_caption", "drops_per_stage")


@pytest.fixture(scope="module")
def example(tmp_path_factory):
    return write_example_build(tmp_path_factory.mktemp("report"))


def expected_totals(records, threshold=0.65):
    """The counting rules, computed independently from the stored records: spans are the distinct
    referring expressions above the threshold that no other one contains."""
    boxes = sum(len(r["noun_chunks"]) for r in records)
    words = []
    for r in records:
        distinct = {(int(s[0]), int(s[1])) for s in r["ref_exps"] if s[6] > threshold}
        outer = [a for a in distinct if not any(b != a and b[0] <= a[0] and a[1] <= b[1] for b in distinct)]
        words += [len(r["caption"][a:b].split()) for a, b in outer]
    return boxes, len(words), sum(words) / len(words)


def test_collect_counts_build(example):
    data = collect(Dataset.open(example["build"]))
    boxes, spans, mean_words = expected_totals(example["grounded"])
    assert data.images == len(example["grounded"]) == 4
    assert (data.boxes, data.spans) == (boxes, spans) == (6, 4)   # "a blue ball on the floor" is contained
    assert data.mean_expression_words == pytest.approx(mean_words)
    assert sorted(data.boxes_per_image) == [1, 1, 2, 2]
    assert sorted(data.spans_per_caption) == [1, 1, 1, 1]      # two boxes of one chunk: one span
    assert data.mean_expression_words == 5.75                  # (11 + 3 + 3 + 6) / 4
    assert data.threshold == 0.65 and data.threshold_source == "_run.json"
    assert data.status_counts == {st.GROUNDED: 4, st.NO_BOX: 1, st.DECODE_ERROR: 1, st.BAD_CAPTION: 1,
                                  st.DOWNLOAD_ERROR: 1}
    assert data.drops == {(r["stage"], r["status"]): 1 for r in example["rejects"]}
    # histogram from the shard stats: every post-NMS score, kept (> 0.65) and dropped
    stats = json.loads((example["build"] / layout.stats_name("00000")).read_text())
    assert data.histogram_counts == stats["score_histogram"]["counts"]
    assert data.histogram_source.startswith("shard stats")
    scores = [s[6] for r in example["grounded"] for s in r["noun_chunks"]]
    scores += [s[6] for spans in example["dropped"].values() for s in spans]
    scores += [s[6] for r in example["rejects"] for s in r["dropped_boxes"]]
    assert sum(data.histogram_counts) == len(scores) == 9
    assert data.timings_s["ground"] == pytest.approx(0.1)


def test_histogram_without_stats_uses_stored_and_dropped_boxes(example, tmp_path):
    import shutil
    build = tmp_path / "build"
    shutil.copytree(example["build"], build)
    (build / layout.stats_name("00000")).unlink()
    data = collect(Dataset.open(build))
    assert data.histogram_source == "stored boxes and dropped_boxes"
    stats = json.loads((example["build"] / layout.stats_name("00000")).read_text())
    assert data.histogram_counts == stats["score_histogram"]["counts"]


def test_write_report_files_and_escaping(example, tmp_path):
    out = write_report(example["build"], tmp_path / "rep")
    assert out == tmp_path / "rep" / "report.html"
    for name in PLOTS:
        with Image.open(tmp_path / "rep" / "plots" / f"{name}.png") as image:
            assert image.format == "PNG" and image.width >= 600 and image.height >= 300
    page = out.read_text()
    assert page.count("<img src='data:image/png;base64,") == len(PLOTS)
    assert "<script" not in page and "&lt;script&gt;window.__pwned=3&lt;/script&gt;" in page
    assert f"{PAPER_TOTALS['images']:,}" in page and "137,349,210" in page and "114,978,233" in page
    markdown = (tmp_path / "rep" / "report.md").read_text()
    for name in PLOTS:
        assert f"(plots/{name}.png)" in markdown
    assert "<script>" not in markdown and "&lt;script&gt;" in markdown
    assert "| images | 4 |  | 90,614,680 |  |" in markdown
    assert "| boxes | 6 | 1.50 | 137,349,210 | 1.52 |" in markdown
    assert "| text spans | 4 | 1.00 | 114,978,233 | 1.27 |" in markdown
    assert re.search(r"\| average expression length \(words\) \| 5\.75 \|", markdown)
    assert "warning" not in markdown
    assert HOSTILE_REASON not in markdown


def test_markdown_cells_cannot_break_the_table(tmp_path, example):
    from grit_pipeline.views.report import _md_cell
    assert _md_cell("a|b") == "a\\|b"
    assert _md_cell("x\ny") == "x y"
    assert _md_cell("<img src=x>") == "&lt;img src=x&gt;"
    assert _md_cell("[link](javascript:x)") == "\\[link\\](javascript:x)"


def test_report_with_truth(example, tmp_path, capsys):
    from grit_pipeline.evaluate import evaluate_grounding

    out = write_report(example["build"], tmp_path / "rep", truth=example["truth"])
    direct = evaluate_grounding(example["build"], example["truth"])
    # every kept box is on its drawn object; the no_box reject's object was missed: 6 of 7 found
    assert direct["noun_chunks"]["precision"] == 1.0
    assert direct["noun_chunks"]["recall"] == pytest.approx(6 / 7, abs=1e-4)
    markdown = (tmp_path / "rep" / "report.md").read_text()
    assert "| noun\\_chunks | 1.0000 | 0.8571 | 6 | 6 | 7 | 0 / 0 / 0 / 0 / 0 |" in markdown
    assert "Against the truth" in out.read_text()
    assert grit_main(["report", str(example["build"]), "--out", str(tmp_path / "r2"),
                      "--truth", str(tmp_path / "no-truth")]) == 2
    assert "no truth files" in capsys.readouterr().err


def test_report_on_grit20m_download(tmp_path):
    data = write_example_grit20m(tmp_path / "g")
    result = collect(Dataset.open(data["dir"]))
    boxes, spans, mean_words = expected_totals(data["grounded"])
    assert (result.images, result.boxes, result.spans) == (len(data["grounded"]), boxes, spans)
    assert result.mean_expression_words == pytest.approx(mean_words)
    assert result.status_counts[st.DOWNLOAD_ERROR] == 1
    assert result.drops == {("download", st.DOWNLOAD_ERROR): 1}
    assert result.threshold_source.startswith("default")
    assert sum(result.histogram_counts) == boxes and result.histogram_source == "stored boxes"
    assert write_report(data["dir"]).exists()
    assert (data["dir"] / "_report" / "report.md").exists()


def test_cli_report(example, tmp_path, capsys):
    assert grit_main(["report", str(example["build"]), "--out", str(tmp_path / "r")]) == 0
    printed = capsys.readouterr().out.split()
    assert printed == [str(tmp_path / "r" / "report.html"), str(tmp_path / "r" / "report.md")]
    assert grit_main(["report", str(tmp_path / "nothing")]) == 2


@pytest.mark.slow
def test_report_agrees_with_grit_stats_on_a_real_build(tmp_path):
    """synth -> grit pipeline (noop detector with hashed scores: kept and dropped boxes) -> report; the
    report's totals and histogram are the pipeline's own (collect_totals, i.e. `grit stats`)."""
    from grit_pipeline.pipeline import PipelineConfig, collect_totals, run_pipeline
    from grit_pipeline.synth.writer import write_synthetic_world

    write_synthetic_world(tmp_path / "shards", images=24, seed=3, shard_size=12)
    run_pipeline(PipelineConfig(input=str(tmp_path / "shards"), output=str(tmp_path / "grit"), detector="noop",
                                detector_options={"score": "hash"}, engine="local", progress=False))
    totals = collect_totals(str(tmp_path / "grit"))
    data = collect(Dataset.open(tmp_path / "grit"))
    assert data.images > 0 and data.status_counts[st.NO_BOX] + data.dropped_boxes > 0
    assert (data.images, data.boxes, data.spans) == (totals["images"], totals["boxes"], totals["spans"])
    assert data.mean_expression_words == pytest.approx(totals["avg_expression_words"], abs=1e-3)
    assert data.inputs == totals["samples"] == 24
    assert data.histogram_counts == totals["score_histogram"]["counts"]
    assert {k: v for k, v in totals["counts"].items() if v} == dict(data.status_counts)
    page = write_report(tmp_path / "grit", tmp_path / "rep", truth=tmp_path / "shards" / "truth")
    assert "warning" not in page.read_text()
