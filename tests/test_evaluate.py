"""grit evaluate-grounding on a hand-made build and truth, against hand-computed precision and recall."""
from __future__ import annotations

import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from grit_pipeline.evaluate import evaluate_grounding, load_truth, match_image
from grit_pipeline.pipeline import layout

CAP_A = "a red circle next to a blue square on a striped background"
CAP_B = "two green stars, but no dog"
CAP_C = "a yellow triangle"
CAP_D = "a black ring"


def _truth_lines():
    # offsets counted by hand: "a red circle" 0-12 (head "circle" 6-12), "a blue square" 21-34 (head 28-34),
    # "a striped background" 38-58; "two green stars" 0-15 (head "stars" 10-15), "dog" 24-27.
    assert CAP_A[0:12] == "a red circle" and CAP_A[21:34] == "a blue square" and CAP_A[38:58] == "a striped background"
    assert CAP_B[0:15] == "two green stars" and CAP_B[24:27] == "dog"
    return [
        {"key": "a", "caption": CAP_A, "width": 200, "height": 100,
         "objects": [{"noun_chunk": [0, 12], "ref_exp": [0, 58], "box": [0.1, 0.1, 0.4, 0.4]},
                     {"noun_chunk": [21, 34], "ref_exp": [21, 58], "box": [0.5, 0.5, 0.9, 0.9]}],
         "absent": [], "ignore": [[38, 58]]},
        {"key": "b", "caption": CAP_B, "width": 100, "height": 100,
         "objects": [{"noun_chunk": [0, 15], "ref_exp": [0, 15], "box": [0.0, 0.0, 0.2, 0.2]},
                     {"noun_chunk": [0, 15], "ref_exp": [0, 15], "box": [0.6, 0.6, 0.8, 0.8]}],
         "absent": [[24, 27]]},
        {"key": "c", "caption": CAP_C, "width": 50, "height": 80,
         "objects": [{"noun_chunk": [0, 17], "ref_exp": [0, 17], "box": [0.2, 0.2, 0.5, 0.5]}]},
        {"key": "d", "caption": CAP_D, "width": 50, "height": 80,
         "objects": [{"noun_chunk": [0, 12], "ref_exp": [0, 12], "box": [0.2, 0.2, 0.5, 0.5]}]},
    ]


def _rows():
    a_nc = [[0, 12, 0.1, 0.1, 0.4, 0.4, 0.9],       # TP (circle)
            [21, 34, 0.1, 0.5, 0.3, 0.9, 0.8],      # square named, box does not overlap: wrong_box
            [38, 58, 0.0, 0.0, 1.0, 1.0, 0.7]]      # background: ignored
    a_re = [[0, 12, 0.1, 0.1, 0.4, 0.4, 0.9],       # expression too short (char IoU 12/58): wrong_span
            [21, 58, 0.1, 0.5, 0.3, 0.9, 0.8],      # wrong_box
            [38, 58, 0.0, 0.0, 1.0, 1.0, 0.7]]      # ignored
    b = [[0, 15, 0.0, 0.0, 0.2, 0.2, 0.95],         # TP (star 1)
         [0, 15, 0.01, 0.0, 0.2, 0.2, 0.9],         # same star again: duplicate
         [21, 27, 0.4, 0.4, 0.5, 0.5, 0.8],         # "no dog": absent_phrase
         [16, 19, 0.4, 0.4, 0.5, 0.5, 0.7],         # "but": unlabelled_phrase
         [0, 15, 0.6, 0.6, 0.8, 0.8, 0.66]]         # TP (star 2)
    return [
        {"key": "a", "caption": CAP_A, "width": 200, "height": 100, "noun_chunks": a_nc, "ref_exps": a_re,
         "status": "grounded"},
        {"key": "b", "caption": CAP_B, "width": 100, "height": 100, "noun_chunks": b, "ref_exps": b,
         "status": "grounded"},
    ]


@pytest.fixture()
def build(tmp_path):
    truth_dir = tmp_path / "truth"
    truth_dir.mkdir()
    (truth_dir / "00000.jsonl").write_text("\n".join(json.dumps(t) for t in _truth_lines()) + "\n")
    out = tmp_path / "grit"
    out.mkdir()
    pq.write_table(pa.Table.from_pylist(_rows()), out / "00000.parquet")
    (out / layout.REJECTS_DIR).mkdir()
    pq.write_table(pa.Table.from_pylist([{"key": "c", "status": "no_box", "reason": "no box scored above 0.65"}]),
                   out / layout.rejects_name("00000"))
    return out, truth_dir


def test_hand_computed_precision_and_recall(build):
    out, truth = build
    result = evaluate_grounding(out, truth)
    nc = result["noun_chunks"]
    # 7 counted predictions (the background one is ignored), 3 true positives; 6 truth objects, 3 found
    assert nc["predictions"] == 7 and nc["true_positives"] == 3 and nc["truth_objects"] == 6
    assert nc["precision"] == round(3 / 7, 4) and nc["recall"] == 0.5
    assert nc["false_positives"] == {"wrong_box": 1, "duplicate": 1, "absent_phrase": 1, "unlabelled_phrase": 1,
                                     "wrong_span": 0}
    assert nc["ignored_predictions"] == 1
    re_ = result["ref_exps"]
    # the circle's expression is too short to be its referring expression: 2 TP of 7
    assert re_["true_positives"] == 2 and re_["predictions"] == 7
    assert re_["precision"] == round(2 / 7, 4) and re_["recall"] == round(2 / 6, 4)
    assert re_["false_positives"]["wrong_span"] == 1 and re_["false_positives"]["unlabelled_phrase"] == 1
    images = result["images"]
    assert images["truth"] == 4 and images["kept"] == 2 and images["dropped"] == 1
    assert images["missing_from_build"] == 1 and images["dropped_by_status"] == {"no_box": 1}
    assert images["all_objects_found"] == 1   # only image b has every object found


def test_min_score_and_iou_options(build):
    out, truth = build
    strict = evaluate_grounding(out, truth, min_score=0.75)   # drops the 0.66 star, "but" and the background
    assert strict["noun_chunks"]["predictions"] == 5 and strict["noun_chunks"]["true_positives"] == 2
    loose = evaluate_grounding(out, truth, iou=0.0001)
    assert loose["noun_chunks"]["true_positives"] == 3   # the wrong square box still does not overlap at all


def test_noun_chunk_rule_is_the_head_noun():
    truth = {"caption": CAP_A, "objects": [{"noun_chunk": [0, 12], "box": [0, 0, 0.5, 0.5]}], "absent": [], "ignore": []}
    box = [0, 0, 0.5, 0.5, 0.9]
    assert match_image(truth, [[2, 12, *box]], "noun_chunks")["true_positives"] == 1    # "red circle"
    assert match_image(truth, [[0, 5, *box]], "noun_chunks")["true_positives"] == 0     # "a red": no head


def test_cli_prints_json(build, capsys):
    from grit_pipeline.cli import main

    out, truth = build
    assert main(["evaluate-grounding", "--output", str(out), "--truth", str(truth)]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["noun_chunks"]["recall"] == 0.5
    assert main(["evaluate-grounding", "--output", str(out / "nowhere"), "--truth", str(truth)]) == 2


def test_bad_truth_is_a_clear_error(tmp_path):
    (tmp_path / "t.jsonl").write_text('{"key": "x", "caption": "a cat", "objects": [{"noun_chunk": [0, 5]}]}\n')
    with pytest.raises(ValueError, match="t.jsonl:1"):
        load_truth(tmp_path)
