"""kosmos metrics on hand-computed cases: REC, Flickr ANY-BOX recall, VQA accuracy, METEOR / CIDEr."""
import shutil

import pytest

from kosmos import metrics


def grounded(phrase, *boxes):
    from grit_pipeline.serialize import Entity, serialize_entities

    caption = phrase
    return serialize_entities(caption, [Entity(0, len(phrase), list(boxes))])


def test_iou_by_hand():
    assert metrics.iou((0, 0, 2, 2), (1, 1, 3, 3)) == pytest.approx(1 / 7)
    assert metrics.iou((0, 0, 1, 1), (2, 2, 3, 3)) == 0.0
    assert metrics.to_pixels((0.5, 0.0, 1.0, 1.0), 200, 100, frame=(0.25, 0.0, 0.5, 1.0)) == (100, 0, 150, 100)


def rec_annotations():
    images = [{"id": i, "file_name": f"{i}.jpg", "width": 100, "height": 100, "caption": "the cat"}
              for i in range(4)]
    images[3]["width"] = 200
    anns = [{"id": i, "image_id": i, "bbox": [10, 10, 40, 40]} for i in range(3)]
    anns.append({"id": 3, "image_id": 3, "bbox": [100, 0, 50, 100]})
    return {"images": images, "annotations": anns}


def test_rec_accuracy_by_hand():
    predictions = {
        # (0.1, 0.1, 0.5, 0.5) -> cells 99 / 495 -> decoded bin centres (0.109, 0.109, 0.484, 0.484): IoU 0.88
        0: {"text": "<grounding>" + grounded("the cat", (0.1, 0.1, 0.5, 0.5))[len("<grounding>"):]},
        # a box, but linked to another phrase: REC takes only boxes of the expression -> miss (no box)
        1: {"text": grounded("a dog", (0.1, 0.1, 0.5, 0.5))},
        # first box far away (the second one would hit): only the FIRST box counts -> miss
        2: {"text": grounded("The cat", (0.7, 0.7, 0.9, 0.9), (0.1, 0.1, 0.5, 0.5))},
        # model saw the centre crop of a 200x100 image; its box (0.5..1 of the crop) is pixels 100..150
        3: {"text": grounded("the cat", (0.5, 0.0, 1.0, 1.0)), "frame": [0.25, 0.0, 0.5, 1.0]},
    }
    result = metrics.rec_accuracy(predictions, rec_annotations())
    assert result == {"accuracy": 50.0, "hits": 2, "total": 4, "no_box": 1, "missing_predictions": 0}
    assert metrics.rec_accuracy({}, rec_annotations())["missing_predictions"] == 4


def test_mean_box_baseline_by_hand():
    result = metrics.mean_box_accuracy([(0.0, 0.0, 0.4, 0.4), (0.2, 0.2, 0.6, 0.6)], rec_annotations())
    assert result["mean_box"] == pytest.approx([0.1, 0.1, 0.5, 0.5])
    assert result["hits"] == 3 and result["accuracy"] == 75.0  # the 200-px-wide image is missed


def flickr_annotations():
    caption = "A man holds two dogs in the park"
    return {"images": [{"id": 7, "file_name": "7.jpg", "width": 100, "height": 100, "caption": caption,
                        "tokens_positive_eval": [[[0, 5]], [[12, 20]], [[24, 32]]]}],
            "annotations": [
                {"id": 1, "image_id": 7, "bbox": [0, 0, 50, 100], "tokens_positive": [[0, 5]]},
                {"id": 2, "image_id": 7, "bbox": [50, 50, 20, 20], "tokens_positive": [[12, 20]]},
                {"id": 3, "image_id": 7, "bbox": [80, 80, 20, 20], "tokens_positive": [[12, 20]]},
            ]}  # "the park" has no box: skipped


def test_flickr_queries_and_any_box_recall_by_hand():
    queries = metrics.flickr_queries(flickr_annotations())
    assert [(q["id"], q["prefix"], q["phrase"], len(q["boxes"])) for q in queries] == [
        ("7_0", "", "A man", 1), ("7_1", "A man holds", "two dogs", 2)]
    predictions = {
        "7_0": {"text": grounded("A man", (0.0, 0.0, 0.5, 1.0))},                        # hit at 1
        "7_1": {"text": grounded("two dogs", (0.0, 0.0, 0.2, 0.2), (0.0, 0.5, 0.2, 0.7),
                                 (0.8, 0.8, 1.0, 1.0))},                                   # 3rd box hits box 3
    }
    assert metrics.flickr_recall(predictions, flickr_annotations()) == {
        "R@1": 50.0, "R@5": 100.0, "R@10": 100.0, "total": 2}


@pytest.mark.parametrize("answer, gts, expected", [
    ("Two", ["2"] * 10, 1.0),                              # number word -> digit
    ("yes", ["yes"] * 2 + ["no"] * 8, 0.6),                # (2 * 1/3 + 8 * 2/3) / 10
    ("the dog.", ["dog"] * 3 + ["cat"] * 7, 0.9),          # period and article removed: (3 * 2/3 + 7) / 10
    ("dont", ["don't"] * 10, 1.0),                         # contraction restored
    ("2,000", ["2000"] * 10, 1.0),                         # digit,digit comma: punctuation removed
    ("black and white", ["black-white"] * 4 + ["black & white"] * 6, 0.0),
    ("black white", ["black-white"] * 4 + ["x"] * 6, 1.0),  # differing gts get punctuation processing
])
def test_vqa_accuracy_by_hand(answer, gts, expected):
    assert metrics.vqa_question_accuracy(answer, gts) == pytest.approx(expected)


def test_vqa_normalisation_rules():
    assert metrics.vqa_normalise_answer("An apple!") == "apple"
    assert metrics.vqa_normalise_answer("3.5") == "3.5"                # decimal point kept
    assert metrics.vqa_normalise_answer("yes, it is") == "yes it is"   # ", " -> removed
    assert metrics.vqa_process_punctuation("left/right") == "left right"


def test_vqa_accuracy_files_by_hand():
    questions = {"questions": [{"question_id": 1, "image_id": 5, "question": "How many?"},
                               {"question_id": 2, "image_id": 5, "question": "Is it?"}]}
    annotations = {"annotations": [
        {"question_id": 1, "answer_type": "number", "answers": [{"answer": "2", "answer_id": i} for i in range(10)]},
        {"question_id": 2, "answer_type": "yes/no",
         "answers": [{"answer": a, "answer_id": i} for i, a in enumerate(["yes"] * 2 + ["no"] * 8)]}]}
    result = metrics.vqa_accuracy([{"question_id": 1, "answer": "two"}, {"question_id": 2, "answer": "yes"}],
                                  annotations, questions)
    assert result["accuracy"] == 80.0 and result["per_answer_type"] == {"number": 100.0, "yes/no": 60.0}


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("java") is None, reason="pycocoevalcap needs Java")
def test_cider_and_meteor_by_hand():
    # CIDEr-D: each candidate equals its only reference and the images share no n-gram (idf log 2 > 0):
    # cosine 1 for n = 1..4 -> 10 per image (x100); METEOR of exact matches is 1.
    result = metrics.caption_metrics({1: "a red cat sits quietly", 2: "blue dog runs very fast"},
                                     {1: ["a red cat sits quietly"], 2: ["blue dog runs very fast"]})
    assert result == {"METEOR": 100.0, "CIDEr": pytest.approx(1000.0)}
    # no word in common: both 0
    assert metrics.caption_metrics({1: "blue dog runs fast"}, {1: ["green bird flies high"]}) == {
        "METEOR": 0.0, "CIDEr": 0.0}
    with pytest.raises(ValueError, match="no references"):
        metrics.caption_metrics({3: "x"}, {1: ["y"]})


def test_java_missing_gives_a_clear_error(monkeypatch):
    monkeypatch.setattr(shutil, "which", lambda name: None)
    with pytest.raises(metrics.JavaMissingError, match="Java"):
        metrics.caption_metrics({1: "a"}, {1: ["a"]})
