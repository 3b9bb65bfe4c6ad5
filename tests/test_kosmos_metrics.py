"""kosmos metrics on hand-computed cases, by the official scripts' rules: REC (refexp_evaluate), Flickr ANY-BOX
recall (flickr_entities_evaluate), VQA accuracy (vqaEval.py 2016 and 2021), METEOR / CIDEr."""
import shutil

import pytest

from kosmos.evaluate.metrics import captioning, grounding, vqa


def test_iou_by_hand():
    assert grounding.iou((0, 0, 2, 2), (1, 1, 3, 3)) == pytest.approx(1 / 7)
    assert grounding.iou((0, 0, 1, 1), (2, 2, 3, 3)) == 0.0
    assert grounding.iou_matrix([(0, 0, 2, 2), (0, 0, 0, 0)], [(1, 1, 3, 3)]) == [[pytest.approx(1 / 7)], [0.0]]


def loc(ul, lr):
    return f"<patch_index_{ul:04d}><patch_index_{lr:04d}>"


def obj(*pairs):
    return "<object>" + "</delimiter_of_multi_objects/>".join(loc(*p) for p in pairs) + "</object>"


# 640 x 427 image. Cells (33, 39) share a row: decoded to cell edges x 1/32..8/32, y 1/32..2/32, i.e. pixels
# (20, 13.34375, 160, 26.6875). Cells (0, 224) share a column: (0, 0, 20, 106.75).
EDGE_BOX = [20.0, 13.34375, 140.0, 13.34375]      # xywh: exactly the (33, 39) box
REC_CASES = [
    # (text, ground truth xywh, hit official (exact, float32), hit float64, hit normalised)
    # IoU = (160 - 65.72) / (65.72 + 142.84 - 20) = 94.28 / 188.56 = 0.5 exactly; float32 rounding of the
    # coordinates gives 0.49999994: a miss in the official script, a hit in float64
    ("<grounding><phrase>the cat</phrase>" + obj((33, 39)), [65.72, 13.34375, 142.84, 13.34375], 0, 1, 0),
    # just above 0.5 (94.28 / 188.559999 = 0.5000000027): still a float32 miss
    ("<grounding><phrase>the cat</phrase>" + obj((33, 39)), [65.72, 13.34375, 142.839999, 13.34375], 0, 1, 0),
    # IoU = 106.75 / 213.5 = 0.5 exactly, exact in float32 too: a hit (>= 0.5)
    ("<grounding><phrase>the cat</phrase>" + obj((0, 224)), [0.0, 0.0, 20.0, 213.5], 1, 1, 1),
    # a multi-box object with one malformed group: the official decoder drops the whole object (no box);
    # the tolerant parser keeps the well-formed group, which is exact
    ("<grounding><phrase>the cat</phrase><object><patch_index_0033></delimiter_of_multi_objects/>" + loc(33, 39)
     + "</object>", EDGE_BOX, 0, 0, 1),
    # phrase text differs in case: not the expression for the official rule
    ("<grounding><phrase>The cat</phrase>" + obj((33, 39)), EDGE_BOX, 0, 0, 1),
    # first box far away, second exact: only the first counts (the official upper bound takes any)
    ("<grounding><phrase>the cat</phrase>" + obj((1000, 1023), (33, 39)), EDGE_BOX, 0, 0, 0),
    # spaces around the phrase are stripped; text before </image> is ignored
    ("<image>junk</image><grounding><phrase> the cat </phrase>" + obj((33, 39)), EDGE_BOX, 1, 1, 1),
]


def rec_files(with_missing=True):
    images = [{"id": i, "file_name": f"{i}.jpg", "width": 640, "height": 427, "caption": "the cat"}
              for i in range(len(REC_CASES) + with_missing)]
    boxes = [case[1] for case in REC_CASES] + [EDGE_BOX] * with_missing
    anns = [{"id": i, "image_id": i, "bbox": box} for i, box in enumerate(boxes)]
    return images, {a["image_id"]: [a] for a in anns}


def test_rec_official_rules_by_hand():
    images, truth = rec_files()
    predictions = {i: {"text": case[0]} for i, case in enumerate(REC_CASES)}  # the last expression: no prediction
    n = len(images)
    official = grounding.rec_accuracy(predictions, images, truth)
    assert official["hits"] == sum(c[2] for c in REC_CASES) == 2
    assert official["accuracy_pct"] == pytest.approx(100 * 2 / n)
    assert (official["no_box"], official["missing_predictions"], official["total"]) == (2, 1, n)
    assert official["upper_bound_pct"] == pytest.approx(100 * 3 / n)  # any box: the far-then-exact case hits
    as_float64 = grounding.rec_accuracy(predictions, images, truth, iou_dtype="float64")
    assert as_float64["hits"] == sum(c[3] for c in REC_CASES) == 4
    tolerant = grounding.rec_accuracy(predictions, images, truth, match="normalised")
    assert tolerant["hits"] == sum(c[4] for c in REC_CASES) == 4 and tolerant["no_box"] == 0


def test_rec_frame_moves_boxes_back_to_the_original_image():
    images = [{"id": 0, "width": 200, "height": 100, "caption": "the cat"}]
    truth = {0: [{"bbox": [100, 0, 50, 100]}]}
    # the model saw the centre crop (x 0.25..0.75); its box is the crop's right half: pixels 100..150
    text = "<grounding><phrase>the cat</phrase>" + obj((16, 31 * 32 + 31))
    result = grounding.rec_accuracy({0: {"text": text, "frame": (0.25, 0.0, 0.5, 1.0)}}, images, truth)
    assert result["hits"] == 1
    assert grounding.to_pixels((0.5, 0.0, 1.0, 1.0), 200, 100, frame=(0.25, 0.0, 0.5, 1.0)) == (100, 0, 150, 100)


def test_mean_box_baseline_by_hand():
    images = [{"id": i, "file_name": f"{i}.jpg", "width": 100, "height": 100, "caption": "the cat"}
              for i in range(4)]
    images[3]["width"] = 200
    anns = [{"id": i, "image_id": i, "bbox": [10, 10, 40, 40]} for i in range(3)]
    anns.append({"id": 3, "image_id": 3, "bbox": [100, 0, 50, 100]})
    result = grounding.mean_box_accuracy([(0.0, 0.0, 0.4, 0.4), (0.2, 0.2, 0.6, 0.6)],
                                       {"images": images, "annotations": anns})
    assert result["mean_box"] == pytest.approx([0.1, 0.1, 0.5, 0.5])
    assert result["hits"] == 3 and result["accuracy_pct"] == 75.0  # the 200-px-wide image is missed


# Flickr: 320 x 320 image (MDETR stores the size as strings). Boxes on cell edges (same row):
# A = cells (0, 3) -> (0, 0, 40, 10); B = (165, 169) -> (50, 50, 100, 60); C = (660, 665) -> (200, 200, 260, 210);
# FAR = (992, 993) -> (0, 310, 20, 320).
FLICKR_CAPTION = "a man holds a dog near a man"
A, B, C, FAR = (0, 3), (165, 169), (660, 665), (992, 993)


def flickr_json():
    return {"images": [{"id": 7, "file_name": "1.jpg", "width": "320", "height": "320", "caption": FLICKR_CAPTION,
                        "original_img_id": 1, "sentence_id": 0,
                        "tokens_positive_eval": [[[0, 5]], [[12, 17]], [[23, 28]]]}],
            "annotations": [
                {"id": 1, "image_id": 7, "bbox": [0.0, 0.0, 40.0, 10.0], "tokens_positive": [[0, 5]]},
                {"id": 2, "image_id": 7, "bbox": [50.0, 50.0, 50.0, 10.0], "tokens_positive": [[12, 17]]},
                {"id": 3, "image_id": 7, "bbox": [200.0, 200.0, 60.0, 10.0], "tokens_positive": [[23, 28]]},
            ]}


FLICKR_TEXTS = [
    "<grounding><phrase>a man</phrase>" + obj(A),                      # hit at 1
    "<grounding>a man holds<phrase> a dog</phrase>" + obj(FAR, FAR, B),  # third box: hit at 5, not at 1
    # the second "a man" is another person (box C). The official rule takes the boxes of the FIRST phrase
    # with this text (A): a miss; span matching takes the phrase's own boxes: a hit
    "<grounding>a man holds a dog near<phrase> a man</phrase>" + obj(C),
]


def test_flickr_official_rules_by_hand():
    from kosmos.evaluate.formats.mdetr import coco_entries

    images, truth = coco_entries(flickr_json(), "flickr.json")
    assert images[0]["width"] == 320.0  # sizes as strings are read
    queries = grounding.flickr_queries(images, truth)
    assert [(q["id"], q["prefix"], q["phrase"]) for q in queries] == [
        ("7_0", "", "a man"), ("7_1", "a man holds", "a dog"), ("7_2", "a man holds a dog near", "a man")]
    assert queries[2]["boxes"] == [(0.0, 0.0, 40.0, 10.0)]  # the first "a man"'s box
    predictions = {f"7_{i}": {"text": text} for i, text in enumerate(FLICKR_TEXTS)}
    official = grounding.flickr_recall(predictions, queries)
    assert official == {"R@1_pct": pytest.approx(100 / 3), "R@5_pct": pytest.approx(200 / 3),
                        "R@10_pct": pytest.approx(200 / 3), "upper_bound_pct": pytest.approx(200 / 3), "total": 3, "no_box": 0, "missing_predictions": 0}
    by_span = grounding.flickr_recall(predictions, grounding.flickr_queries(images, truth, gt_boxes="span"))
    assert (by_span["R@1_pct"], by_span["R@5_pct"]) == (pytest.approx(200 / 3), 100.0)
    missing = grounding.flickr_recall({"7_0": predictions["7_0"]}, queries)
    assert missing["R@1_pct"] == pytest.approx(100 / 3) and missing["missing_predictions"] == 2


@pytest.mark.parametrize("answer, gts, expected", [
    ("yes", ["yes"] * 2 + ["no"] * 8, 0.6),                # (2 * 1/3 + 8 * 2/3) / 10
    ("the dog.", ["dog"] * 3 + ["cat"] * 7, 0.9),          # period and article removed: (3 * 2/3 + 7) / 10
    ("2,000", ["2000"] * 9 + ["x"], 1.0),                  # digit,digit comma: punctuation removed
    ("black and white", ["black-white"] * 4 + ["black & white"] * 6, 0.0),
    ("black white", ["black-white"] * 4 + ["x"] * 6, 1.0),  # differing gts get punctuation processing
])
def test_vqa_accuracy_by_hand_both_versions(answer, gts, expected):
    # split answers: both versions process the prediction and agree on these
    for version in ("2016", "2021"):
        assert vqa.vqa_question_accuracy(answer, gts, version) == pytest.approx(expected)


@pytest.mark.parametrize("answer, gts, v2016, v2021", [
    # unanimous answers: 2016 processes the prediction ("Two" -> "2"), 2021 only strips it
    ("Two", ["2"] * 10, 1.0, 0.0),
    ("Yes", ["yes"] * 10, 1.0, 0.0),
    (" yes\n", ["yes"] * 10, 1.0, 1.0),
    # split answers: 2021 also processes the ground truth (articles, number words); 2016 only its punctuation:
    # 2016: 8 "the dog" answers see 2 matching others (2/3), 2 "dog" answers see 1 (1/3): (16/3 + 2/3) / 10
    ("dog", ["the dog"] * 8 + ["dog"] * 2, 0.6, 1.0),
    ("2", ["two"] * 9 + ["3"], 0.0, 1.0),
])
def test_vqa_2016_and_2021_differ_by_hand(answer, gts, v2016, v2021):
    assert vqa.vqa_question_accuracy(answer, gts, "2016") == pytest.approx(v2016)
    assert vqa.vqa_question_accuracy(answer, gts, "2021") == pytest.approx(v2021)


def test_vqa_normalisation_rules():
    assert vqa.vqa_normalise_answer("An apple!") == "apple"
    assert vqa.vqa_normalise_answer("3.5") == "3.5"                # decimal point kept
    assert vqa.vqa_normalise_answer("yes, it is") == "yes it is"   # ", " -> removed
    assert vqa.vqa_process_punctuation("left/right") == "left right"


def test_vqa_accuracy_files_by_hand():
    questions = {"questions": [{"question_id": 1, "image_id": 5, "question": "How many?"},
                               {"question_id": 2, "image_id": 5, "question": "Is it?"}]}
    annotations = {"annotations": [
        {"question_id": 1, "answer_type": "number", "answers": [{"answer": "2", "answer_id": i} for i in range(10)]},
        {"question_id": 2, "answer_type": "yes/no",
         "answers": [{"answer": a, "answer_id": i} for i, a in enumerate(["yes"] * 2 + ["no"] * 8)]}]}
    results = [{"question_id": 1, "answer": "two"}, {"question_id": 2, "answer": "yes"}]
    result = vqa.vqa_accuracy(results, annotations, questions, "2016")
    assert result["accuracy_pct"] == 80.0 and result["per_answer_type_pct"] == {"number": 100.0, "yes/no": 60.0}
    # 2021: the unanimous "2" is compared with the unprocessed "two": 0
    result = vqa.vqa_accuracy(results, annotations, questions)
    assert result["accuracy_pct"] == 30.0 and result["per_answer_type_pct"] == {"number": 0.0, "yes/no": 60.0}
    with pytest.raises(ValueError, match="second answer"):
        vqa.vqa_accuracy(results + results[:1], annotations, questions)
    with pytest.raises(ValueError, match="not in the annotations"):
        vqa.vqa_accuracy([{"question_id": 9, "answer": "x"}], annotations, questions)


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("java") is None, reason="pycocoevalcap needs Java")
def test_cider_and_meteor_by_hand():
    # CIDEr-D: each candidate equals its only reference and the images share no n-gram (idf log 2 > 0):
    # cosine 1 for n = 1..4 -> 10 per image (x100); METEOR of exact matches is 1.
    result = captioning.caption_metrics({1: "a red cat sits quietly", 2: "blue dog runs very fast"},
                                     {1: ["a red cat sits quietly"], 2: ["blue dog runs very fast"]})
    assert result == {"METEOR_pct": 100.0, "CIDEr_pct": pytest.approx(1000.0)}
    # no word in common: both 0
    assert captioning.caption_metrics({1: "blue dog runs fast"}, {1: ["green bird flies high"]}) == {
        "METEOR_pct": 0.0, "CIDEr_pct": 0.0}
    with pytest.raises(ValueError, match="no references"):
        captioning.caption_metrics({3: "x"}, {1: ["y"]})


def test_java_missing_gives_a_clear_error(monkeypatch):
    monkeypatch.setattr(shutil, "which", lambda name: None)
    with pytest.raises(captioning.JavaMissingError, match="Java"):
        captioning.caption_metrics({1: "a"}, {1: ["a"]})
