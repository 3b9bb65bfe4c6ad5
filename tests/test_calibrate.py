"""grit calibrate: one grounding pass, an offline sweep equal to grit run + grit evaluate-grounding."""
from __future__ import annotations

import json

import pytest

from grit_pipeline import calibrate
from grit_pipeline.evaluate import evaluate_grounding, load_truth


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """A small synthetic world, its pipeline build at the defaults (0.65, NMS 0.6), and one grounding pass."""
    from grit_pipeline.pipeline import PipelineConfig, run_pipeline
    from grit_pipeline.synth import write_synthetic_world

    root = tmp_path_factory.mktemp("calibrate")
    write_synthetic_world(root / "shards", images=40, seed=31, shard_size=20)
    config = PipelineConfig(input=str(root / "shards"), output=str(root / "grit"), detector="demo", engine="local",
                            progress=False)
    run_pipeline(config)
    truth = load_truth(root / "shards" / "truth")
    rows = calibrate.score_samples(config, keys=set(truth))
    return root, truth, rows


def _counts(level_result):
    return (level_result["true_positives"], level_result["predictions"], level_result["false_positives"],
            level_result["precision"], level_result["recall"])


def test_sweep_recovers_the_default_thresholds_figures_exactly(world):
    root, truth, rows = world
    result = calibrate.sweep(rows, truth)
    at_default = next(r for r in result["table"] if r["threshold"] == 0.65 and r["nms_iou"] == 0.6)
    built = evaluate_grounding(root / "grit", root / "shards" / "truth")
    for level in calibrate.LEVELS:
        assert _counts(at_default[level]) == _counts(built[level])
    assert at_default["noun_chunks"]["true_positives"] > 0
    # a higher threshold too: the build's boxes scoring above 0.8
    above = evaluate_grounding(root / "grit", root / "shards" / "truth", min_score=0.8)
    at_08 = next(r for r in result["table"] if r["threshold"] == 0.8)
    for level in calibrate.LEVELS:
        assert _counts(at_08[level]) == _counts(above[level])


def test_recall_and_boxes_fall_monotonically_with_the_threshold(world):
    _, truth, rows = world
    result = calibrate.sweep(rows, truth, nms_ious=(0.6, 0.3))
    for nms_iou in (0.6, 0.3):
        table = [r for r in result["table"] if r["nms_iou"] == nms_iou]
        assert [r["threshold"] for r in table] == list(calibrate.DEFAULT_THRESHOLDS)
        for level in calibrate.LEVELS:
            recalls = [r[level]["recall"] for r in table]
            assert recalls == sorted(recalls, reverse=True) and recalls[0] > recalls[-1]
        boxes = [r["boxes"] for r in table]
        assert boxes == sorted(boxes, reverse=True)
    # a stricter NMS keeps fewer boxes at every threshold
    assert all(a["boxes"] <= b["boxes"] for a, b in zip(
        [r for r in result["table"] if r["nms_iou"] == 0.3], [r for r in result["table"] if r["nms_iou"] == 0.6]))


def test_recommendation_rules():
    def row(t, p, r, bpi, nms=0.6):
        level = {"precision": p, "recall": r}
        return {"threshold": t, "nms_iou": nms, "noun_chunks": level, "ref_exps": level, "boxes_per_image": bpi}

    table = [row(0.2, 0.70, 0.95, 3.0), row(0.4, 0.90, 0.90, 2.0), row(0.5, 0.90, 0.90, 1.9),
             row(0.6, 0.95, 0.80, 1.5), row(0.8, None, 0.0, None)]
    assert calibrate.recommend(table, target_precision=0.9)["threshold"] == 0.5   # best recall, then precision, then safer
    assert calibrate.recommend(table, target_precision=0.93)["threshold"] == 0.6
    assert calibrate.recommend(table, target_precision=0.99)["threshold"] is None
    assert "best 0.95 at 0.6" in calibrate.recommend(table, target_precision=0.99)["note"]
    assert calibrate.recommend(table, reference_boxes_per_image=1.6)["threshold"] == 0.6
    assert calibrate.recommend(table) is None


def test_cli_saves_scores_reuses_them_and_writes_the_report(world, tmp_path, capsys):
    from grit_pipeline.cli import main

    root, _, _ = world
    out = tmp_path / "cal"
    assert main(["calibrate", "--input", str(root / "shards"), "--truth", str(root / "shards" / "truth"),
                 "--output", str(out), "--target-precision", "0.9", "--limit", "25"]) == 0
    printed = capsys.readouterr().out
    assert "recommendation (target_precision 0.9, noun_chunks): --box-threshold" in printed
    first = json.loads((out / "calibration.json").read_text())
    assert first["samples"] == 25
    for name in ("scores.parquet", "pr_curve.png", "report.html", "report.md"):
        assert (out / name).is_file()
    assert "data:image/png;base64" in (out / "report.html").read_text()
    again = tmp_path / "again"
    assert main(["calibrate", "--scores-from", str(out), "--truth", str(root / "shards" / "truth"),
                 "--output", str(again), "--target-precision", "0.9", "--thresholds", "0.5:0.7:0.05",
                 "--nms-iou", "0.5", "0.6"]) == 0
    second = json.loads((again / "calibration.json").read_text())
    assert second["thresholds"] == [0.5, 0.55, 0.6, 0.65, 0.7] and second["nms_ious"] == [0.5, 0.6]
    same = lambda result: next(r for r in result["table"] if r["threshold"] == 0.65 and r["nms_iou"] == 0.6)  # noqa: E731
    assert same(first) == same(second)
    capsys.readouterr()
    assert main(["calibrate", "--truth", str(root / "shards" / "truth"), "--output", str(tmp_path / "x")]) == 2
    assert "give --input" in capsys.readouterr().err


def test_calibrate_runs_an_hf_detector_from_a_local_directory(world, tmp_path):
    from grit_pipeline.cli import main
    from hf_tiny import build_tiny_owlv2  # tests/ is on sys.path under pytest

    root, _, _ = world
    model = build_tiny_owlv2(tmp_path / "owlv2")
    out = tmp_path / "cal"
    assert main(["calibrate", "--input", str(root / "shards"), "--truth", str(root / "shards" / "truth"),
                 "--output", str(out), "--detector", "hf", "--model", str(model), "--device", "cpu",
                 "--limit", "6", "--thresholds", "0,0.5", "--detector-option", "min_score=0.0"]) == 0
    result = json.loads((out / "calibration.json").read_text())
    assert result["samples"] == 6 and result["detector"] == "hf" and len(result["table"]) == 2
    assert result["table"][0]["boxes"] >= result["table"][1]["boxes"]
