"""`kosmos score` on the official file formats (MDETR json with sizes as strings, Flickr30k Entities XML,
fairseq H- lines, COCO / VQA results) and on hostile files: one clear line naming the problem, exit 2."""
import json

import pytest

from kosmos.cli import main
from test_kosmos_metrics import FLICKR_CAPTION, FLICKR_TEXTS, REC_CASES, flickr_json, rec_files


def write(path, value):
    path.write_text(value if isinstance(value, str) else json.dumps(value))
    return str(path)


def run(capsys, argv):
    code = main(argv)
    out, err = capsys.readouterr()
    return code, (json.loads(out) if code == 0 else None), err


@pytest.fixture
def rec(tmp_path):
    images, truth = rec_files()
    annotations = {"images": images, "annotations": [a for anns in truth.values() for a in anns]}
    return write(tmp_path / "finetune_refcoco_val.json", annotations)


def test_rec_from_json_lines_and_fairseq_lines_agree(tmp_path, capsys, rec):
    lines = [json.dumps({"id": i, "text": case[0]}) for i, case in enumerate(REC_CASES)]
    jsonl = write(tmp_path / "p.jsonl", "\n".join(lines) + "\n")
    code, by_id, _ = run(capsys, ["score", "rec", "--predictions", jsonl, "--annotations", rec])
    assert code == 0 and by_id["hits"] == 2 and by_id["missing_predictions"] == 1 and by_id["no_box"] == 2
    # rates in percent under *_pct keys, counts as counts (docs/evaluation.md)
    assert set(by_id) == {"task", "accuracy_pct", "upper_bound_pct", "mean_box_pct", "hits", "total", "no_box",
                          "missing_predictions"}
    assert by_id["accuracy_pct"] == pytest.approx(100 * by_id["hits"] / by_id["total"])
    # the released evaluation's output: fairseq S-/H-/D-/P- lines, H-<sample index>, any order
    fairseq = []
    for i, case in reversed(list(enumerate(REC_CASES))):
        fairseq += [f"S-{i}\t<image>x</image><grounding><phrase>the cat</phrase>", f"H-{i}\t-0.25\t{case[0]}",
                    f"D-{i}\t-0.25\t{case[0]}", f"P-{i}\t-0.1 -0.2"]
    h_lines = write(tmp_path / "eval.refcoco.val", "2026-01-01 | INFO | fairseq\n" + "\n".join(fairseq) + "\n")
    code, by_position, _ = run(capsys, ["score", "rec", "--predictions", h_lines, "--annotations", rec])
    assert code == 0 and by_position == by_id
    code, wide, _ = run(capsys, ["score", "rec", "--predictions", jsonl, "--annotations", rec,
                                 "--iou-dtype", "float64", "--phrase-match", "normalised"])
    assert code == 0 and wide["hits"] == 6  # the two float32 misses, the malformed object and "The cat"


@pytest.fixture
def flickr_dir(tmp_path):
    """A Flickr30k Entities folder with the one sentence of ``flickr_json``."""
    root = tmp_path / "flickr30k_entities"
    (root / "Sentences").mkdir(parents=True)
    (root / "Annotations").mkdir()
    (root / "Sentences" / "1.txt").write_text(
        "[/EN#11/people a man] holds [/EN#12/animals a dog] near [/EN#13/people a man]\n")
    objects = "".join(
        f"<object><name>{name}</name><bndbox><xmin>{x1}</xmin><ymin>{y1}</ymin><xmax>{x2}</xmax><ymax>{y2}</ymax>"
        "</bndbox></object>" for name, (x1, y1, x2, y2) in
        (("11", (0, 0, 40, 10)), ("12", (50, 50, 100, 60)), ("13", (200, 200, 260, 210))))
    scene = "<object><name>14</name><nobndbox>0</nobndbox><scene>1</scene></object>"
    (root / "Annotations" / "1.xml").write_text(
        f"<annotation><filename>1.jpg</filename><size><width>320</width><height>320</height><depth>3</depth>"
        f"</size>{objects}{scene}</annotation>")
    (root / "test.txt").write_text("1\n")
    return root


def test_flickr_on_mdetr_json_and_on_flickr30k_entities_xml(tmp_path, capsys, flickr_dir):
    annotations = write(tmp_path / "final_flickr_separateGT_test.json", flickr_json())  # sizes are strings
    predictions = write(tmp_path / "p.jsonl", "".join(json.dumps({"id": f"7_{i}", "text": t}) + "\n"
                                                        for i, t in enumerate(FLICKR_TEXTS)))
    expected = {"R@1_pct": pytest.approx(100 / 3), "R@5_pct": pytest.approx(200 / 3), "total": 3}
    code, from_json, _ = run(capsys, ["score", "flickr", "--predictions", predictions, "--annotations", annotations])
    assert code == 0 and from_json["ground_truth"] == "json" and expected.items() <= from_json.items()
    code, with_xml, _ = run(capsys, ["score", "flickr", "--predictions", predictions, "--annotations", annotations,
                                     "--flickr-entities", str(flickr_dir)])
    assert code == 0 and with_xml["ground_truth"] == "xml" and expected.items() <= with_xml.items()
    code, by_span, _ = run(capsys, ["score", "flickr", "--predictions", predictions, "--annotations", annotations,
                                    "--flickr-entities", str(flickr_dir), "--gt-boxes", "span"])
    assert code == 0 and by_span["R@1_pct"] == pytest.approx(200 / 3)
    # the folder alone: queries built from Sentences/ + Annotations/ in MDETR's order; H- lines by position
    h_lines = write(tmp_path / "eval.flickr.test", "".join(f"H-{i}\t-0.1\t{t}\n" for i, t in enumerate(FLICKR_TEXTS)))
    code, xml_only, _ = run(capsys, ["score", "flickr", "--predictions", h_lines, "--annotations", str(flickr_dir),
                                     "--split", "test"])
    assert code == 0 and expected.items() <= xml_only.items()
    from kosmos.tasks.flickr import flickr_source

    entries = flickr_source(str(flickr_dir), split="test")[0]
    assert [e["caption"] for e in entries] == [FLICKR_CAPTION]
    assert entries[0]["tokens_positive_eval"] == [[[0, 5]], [[12, 17]], [[23, 28]]]


def test_caption_duplicates_and_unknown_images_are_errors(tmp_path, capsys):
    annotations = write(tmp_path / "captions.json", {"annotations": [{"image_id": 1, "caption": "a dog"}]})
    twice = write(tmp_path / "twice.json", [{"image_id": 1, "caption": "a dog"}, {"image_id": 1, "caption": "a cat"}])
    code, _, err = run(capsys, ["score", "caption", "--predictions", twice, "--annotations", annotations])
    assert code == 2 and "entry 1: a second caption for image 1" in err
    unknown = write(tmp_path / "unknown.json", [{"image_id": 2, "caption": "a dog"}])
    code, _, err = run(capsys, ["score", "caption", "--predictions", unknown, "--annotations", annotations])
    assert code == 2 and "image 2 is not in the annotations" in err


def test_reg_references_drop_non_ascii_as_refer_does():
    images = [{"id": 0, "file_name": "a.jpg", "width": 10, "height": 10, "caption": "the café table"},
              {"id": 1, "file_name": "a.jpg", "width": 10, "height": 10, "caption": "naïve “left” man"}]
    truth = {0: [{"id": 5, "bbox": [0, 0, 1, 1]}], 1: [{"id": 5, "bbox": [0, 0, 1, 1]}]}
    # one object (same image, same annotation id): both expressions are its references, keyed by the first id
    from kosmos.tasks.reg import reg_references

    assert reg_references(images, truth) == {0: ["the caf table", "nave left man"]}
    assert reg_references(images, truth, keep_non_ascii=True) == {0: ["the café table", "naïve “left” man"]}


REC_LINE = json.dumps({"id": 0, "text": REC_CASES[2][0]})


@pytest.mark.parametrize("content, message", [
    ("5\n", ":1: expected a JSON object with 'id' and 'text', got int"),
    (REC_LINE + "\nnull\n", ":2: expected a JSON object with 'id' and 'text', got NoneType"),
    ('{"id": [1], "text": "x"}\n', ":1: 'id' must be a string or an integer, got list"),
    ('{"id": 0, "text": 5}\n', ":1: 'text' must be a string, got int"),
    ('{"id": 0, "text": "x", "frame": ["a", "b", "c", "d"]}\n', ":1: 'frame' must be four finite numbers"),
    ('{"id": 0, "text": "x", "frame": [0, 0, NaN, 1]}\n', ":1: 'frame' must be four finite numbers"),
    ('{"id": 0, "tex\n', ":1: not JSON"),
    ("[" * 100_000 + "\n", ":1: not JSON"),
    ('{"id": 99, "text": "x"}\n', ":1: id 99 is not in the annotations"),
    (REC_LINE + "\n" + REC_LINE + "\n", ":2: a second prediction for id 0 (first on line 1)"),
    ("no predictions here\n", ":1: not JSON"),
    ("\n\n", "empty (expected JSON lines or fairseq 'H-<n>' hypothesis lines)"),
    ("H-99\t0\tx\n", ":1: sample 99 is not in the annotations"),
])
def test_bad_prediction_lines_name_the_line(tmp_path, capsys, rec, content, message):
    predictions = write(tmp_path / "p.jsonl", content)
    code, _, err = run(capsys, ["score", "rec", "--predictions", predictions, "--annotations", rec])
    assert code == 2 and message in err and len(err.strip().splitlines()) == 1 and "Traceback" not in err


@pytest.mark.parametrize("annotations, message", [
    ([], "expected a JSON object with 'images' and 'annotations' lists"),
    ({"images": [5], "annotations": []}, "images[0]: expected an object with 'id'"),
    ({"images": [{"id": 0, "width": "wide", "height": 1, "caption": "x"}], "annotations": []},
     "images[0].width: expected a number, got 'wide'"),
    ({"images": [{"id": 0, "width": 10, "height": 10, "caption": 3}], "annotations": []},
     "images[0]: 'caption' must be a string"),
    ({"images": [], "annotations": [{"image_id": 0, "bbox": [float("nan"), 0, 1, 1]}]},
     "annotations[0].bbox: expected a finite number"),
    ({"images": [], "annotations": [{"image_id": 0, "bbox": ["1", "2"]}]}, "annotations[0]: 'bbox' must be [x, y, w, h]"),
])
def test_bad_annotation_files_are_one_line_errors(tmp_path, capsys, annotations, message):
    predictions = write(tmp_path / "p.jsonl", REC_LINE + "\n")
    path = write(tmp_path / "a.json", json.dumps(annotations))
    code, _, err = run(capsys, ["score", "rec", "--predictions", predictions, "--annotations", path])
    assert code == 2 and message in err and len(err.strip().splitlines()) == 1


@pytest.mark.parametrize("results, message", [
    ([{"question_id": 1, "answer": 2}], "entry 0: 'answer' must be a string, got int"),
    ([{"question_id": [1], "answer": "2"}], "entry 0: 'question_id' must be a string or an integer"),
    ([5], "entry 0: expected an object with 'question_id' and 'answer'"),
    ({"question_id": 1}, "expected a JSON list"),
])
def test_bad_vqa_results_are_one_line_errors(tmp_path, capsys, results, message):
    questions = write(tmp_path / "q.json", {"questions": [{"question_id": 1, "image_id": 1, "question": "?"}]})
    annotations = write(tmp_path / "a.json", {"annotations": [
        {"question_id": 1, "answers": [{"answer": "2", "answer_id": i} for i in range(10)]}]})
    predictions = write(tmp_path / "r.json", results)
    code, _, err = run(capsys, ["score", "vqa", "--predictions", predictions, "--annotations", annotations,
                                "--questions", questions])
    assert code == 2 and message in err and len(err.strip().splitlines()) == 1
    good = write(tmp_path / "good.json", [{"question_id": 1, "answer": "two"}])
    for version, accuracy in (("2016", 100.0), ("2021", 0.0)):
        code, result, _ = run(capsys, ["score", "vqa", "--predictions", good, "--annotations", annotations,
                                       "--questions", questions, "--vqa-eval", version])
        assert code == 0 and result["accuracy_pct"] == accuracy and result["vqa_eval"] == version


def test_predict_flickr_queries_from_the_xml_folder_match_the_json(flickr_dir):
    from kosmos.predict import build_queries

    from_xml = build_queries("flickr", "images", str(flickr_dir))
    from_json = build_queries("flickr", "images", flickr_json())
    assert [q.id for q in from_xml] == ["1_0_0", "1_0_1", "1_0_2"]
    assert [(q.prompt, q.image_path) for q in from_xml] == [(q.prompt, q.image_path) for q in from_json]
    assert from_xml[2].prompt == "<grounding>a man holds a dog near<phrase> a man</phrase>"


@pytest.mark.parametrize("task", ["caption", "reg", "caption_flickr30k"])
def test_without_java_caption_and_reg_say_so_in_one_line_before_any_model(tmp_path, capsys, monkeypatch, task):
    import shutil

    which = shutil.which
    monkeypatch.setattr(shutil, "which", lambda name, *args, **kw: None if name == "java" else which(name, *args, **kw))
    annotations = write(tmp_path / "annotations.json", {"images": [], "annotations": []})
    predictions = write(tmp_path / "p.json", [])
    code, _, err = run(capsys, ["score", task, "--predictions", predictions, "--annotations", annotations])
    assert code == 2 and len(err.strip().splitlines()) == 1
    assert err.startswith(f"kosmos score {task}: ") and "apt-get install default-jre-headless" in err
    # no model is there: the line comes before loading one (or building any query)
    code, _, err = run(capsys, ["eval", task, "--model", str(tmp_path / "no-model"), "--annotations", annotations,
                                "--images", str(tmp_path), "--output", str(tmp_path / "out")])
    assert code == 2 and len(err.strip().splitlines()) == 1 and "default-jre-headless" in err
    assert not (tmp_path / "out").exists()


def test_without_java_the_suite_names_the_tasks_that_need_it(tmp_path, capsys, monkeypatch):
    import shutil

    monkeypatch.setattr(shutil, "which", lambda name, *args, **kw: None)
    (tmp_path / "data" / "caption").mkdir(parents=True)
    write(tmp_path / "data" / "caption" / "annotations.json", {"images": [], "annotations": []})
    code, _, err = run(capsys, ["eval", "--suite", "kosmos1", "--data", str(tmp_path / "data"), "--model",
                                str(tmp_path / "no-model"), "--output", str(tmp_path / "out")])
    assert code == 2 and err.startswith("kosmos eval caption: ") and "default-jre-headless" in err
    # a suite without caption tasks needs no Java: it goes on (here to the missing model)
    from kosmos.cli import _java_problem
    from kosmos.tasks import get_task

    assert _java_problem("eval", [get_task("rec"), get_task("copa")]) is None
