"""Multimodal tasks on tiny files in each benchmark's format: few-shot captioning and VQA (demonstrations from the
training split, never the query, the same for a seed), Rendered SST-2, HatefulMemes, Raven IQ (P("Yes")), zero-shot
classification (generation and ranking), chain of thought: the paper's prompts, and `kosmos eval` on each."""
from __future__ import annotations

import json

import pytest
from PIL import Image, ImageDraw

from kosmos.tasks import Inputs, get_task

COLOURS = {"red": (220, 30, 30), "blue": (30, 60, 220), "green": (30, 180, 30)}


def shape(path, colour="red", kind="square", text=None):
    image = Image.new("RGB", (64, 48), (245, 245, 245))
    draw = ImageDraw.Draw(image)
    (draw.rectangle if kind == "square" else draw.ellipse)((10, 8, 40, 38), fill=COLOURS[colour])
    if text:
        draw.text((2, 2), text, fill=(0, 0, 0))
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path)
    return path


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    root = tmp_path_factory.mktemp("world")
    # COCO captions json (test and train splits) and VQAv2 questions/annotations
    for split, ids in (("test", (1, 2)), ("train", (11, 12, 13))):
        for i, colour in zip(ids, COLOURS):
            shape(root / "caption" / "images" / f"{i}.png", colour)
        data = {"images": [{"id": i, "file_name": f"{i}.png"} for i in ids],
                "annotations": [{"image_id": i, "id": 100 + i, "caption": f"A {c} square."} for i, c in zip(ids, COLOURS)]}
        (root / "caption" / ("annotations.json" if split == "test" else "train.json")).write_text(json.dumps(data))
    vqa = root / "vqa"
    for split, subtype, ids in (("", "val2014", (1, 2)), ("train_", "train2014", (3, 4, 5))):
        for i, colour in zip(ids, COLOURS):
            shape(vqa / "images" / f"COCO_{subtype}_{i:012d}.jpg", colour)
        questions = {"data_subtype": subtype, "questions": [{"question_id": 10 * i, "image_id": i,
                                                             "question": "What colour is it?"} for i in ids]}
        answers = {"annotations": [{"question_id": 10 * i, "multiple_choice_answer": c,
                                    "answers": [{"answer": c, "answer_id": k} for k in range(10)]}
                                   for i, c in zip(ids, COLOURS)]}
        (vqa / f"{split}questions.json").write_text(json.dumps(questions))
        (vqa / f"{split}annotations.json").write_text(json.dumps(answers))
    # Rendered SST-2 (class folders), HatefulMemes (dev.jsonl + img/), ImageNet-style folder, Raven items
    for label, sentence in (("positive", "a joy"), ("negative", "a bore")):
        for n in range(2):
            shape(root / "rendered-sst2" / "test" / label / f"{n}.png", "green", text=sentence)
    memes = root / "hatefulmemes"
    rows = []
    for n, label in enumerate((0, 1, 0, 1)):
        shape(memes / "img" / f"{n:05d}.png", "blue", text="meme")
        rows.append({"id": n, "img": f"img/{n:05d}.png", "label": label, "text": "meme"})
    (memes / "dev.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    for colour in ("red", "blue"):
        for n in range(2):
            shape(root / "imagenet" / "val" / f"n0{colour}" / f"{n}.png", colour, "circle")
    (root / "imagenet" / "classes.txt").write_text("blue circle\nred circle\n")
    raven = root / "raven"
    for name in ("1", "2", "3", "a", "b", "c", "d", "e", "f"):
        shape(raven / "q1" / f"{name}.png", "red" if name in "1a" else "green")
    item = {"id": "q1", "context": [f"q1/{n}.png" for n in "123"], "candidates": [f"q1/{n}.png" for n in "abcdef"],
            "answer": 0}
    (raven / "raven.jsonl").write_text(json.dumps(item) + "\n")
    return root


def test_few_shot_captioning_prompts_and_demonstrations(world):
    task = get_task("caption")
    inputs = Inputs(annotations=str(world / "caption" / "annotations.json"), images=str(world / "caption" / "images"),
                    train=str(world / "caption" / "train.json"), shots=2)
    queries = task.queries(inputs)
    assert queries == task.queries(inputs)  # the same for the same seed
    for query in queries:
        assert query.prompt == "An image of" and [k for k, _ in query.segments] == ["image", "text"] * 2
        texts = [v for k, v in query.segments if k == "text"]
        assert all(t in ("An image of a red square.", "An image of a blue square.", "An image of a green square.")
                   for t in texts)
        assert len({v for k, v in query.segments if k == "image"}) == 2
    # demonstrations from the evaluation file itself never include the query
    same = task.queries(inputs.with_(train=inputs.annotations, shots=1))
    for query in same:
        assert [v for k, v in query.segments if k == "image"] != [query.image_path]
    assert task.queries(inputs.with_(shots=0))[0].segments == ()


def test_few_shot_vqa_prompts(world):
    vqa = world / "vqa"
    inputs = Inputs(questions=str(vqa / "questions.json"), images=str(vqa / "images"), shots=2,
                    train=str(vqa / "train_annotations.json"), train_questions=str(vqa / "train_questions.json"))
    query = get_task("vqa").queries(inputs)[0]
    assert query.prompt == "Question: What colour is it? Answer:"
    texts = [v for k, v in query.segments if k == "text"]
    assert len(texts) == 2 and all(t.startswith("Question: What colour is it? Answer: ") for t in texts)
    assert all("train2014" in v for k, v in query.segments if k == "image")
    from kosmos.evaluate.generate import clean_answer

    assert clean_answer(" red Question: What colour", ("Question:", "Answer:")) == "red"


def test_ocr_free_prompts_and_p_yes(world):
    sst2 = get_task("sst2").queries(Inputs(annotations=str(world / "rendered-sst2" / "test")))
    assert len(sst2) == 4 and [o.continuation for o in sst2[0].options] == [" negative", " positive"]
    assert sst2[0].options[0].context[1] == ("text", "Question: what is the sentiment of the opinion? Answer:")
    memes = get_task("hatefulmemes").queries(Inputs(annotations=str(world / "hatefulmemes" / "dev.jsonl")))
    assert memes[0].options[0].context[1] == ("text", "Question: does this picture contain real hate speech? Answer:")
    assert [o.continuation for o in memes[0].options] == [" yes", " no"]
    raven = get_task("raven").queries(Inputs(annotations=str(world / "raven" / "raven.jsonl")))[0]
    assert len(raven.options) == 6 and {o.continuation for o in raven.options} == {" Yes"}
    context = raven.options[2].context
    assert context[0] == ("text", "Here are three images:") and [k for k, _ in context[1:4]] == ["image"] * 3
    assert context[4:] == (("text", "The following image is:"), ("image", str(world / "raven" / "q1" / "c.png")),
                           ("text", "Is it correct?"))
    # P("Yes") ranking: the candidate with the highest log-likelihood of " Yes" is the answer
    predictions = world / "raven_predictions.jsonl"
    predictions.write_text(json.dumps({"id": "q1", "loglikelihoods": [-0.5, -1, -2, -3, -4, -0.6]}) + "\n")
    result = get_task("raven").score(str(predictions), Inputs(annotations=str(world / "raven" / "raven.jsonl")))
    assert result == {"accuracy_pct": 100.0, "total": 1, "missing": 0}
    predictions.write_text(json.dumps({"id": "q1", "loglikelihoods": [-0.7, -1, -2, -3, -4, -0.6]}) + "\n")
    assert get_task("raven").score(str(predictions), Inputs(annotations=str(world / "raven" / "raven.jsonl")))["accuracy_pct"] == 0.0


def test_zero_shot_classification_prompts_and_names(world):
    inputs = Inputs(annotations=str(world / "imagenet" / "val"), class_names=str(world / "imagenet" / "classes.txt"))
    generation = get_task("classify").queries(inputs)
    assert [q.prompt for q in generation] == ["The photo of the"] * 4 and get_task("classify").decoding.num_beams == 2
    ranked = get_task("classify-rank").queries(inputs)[0]
    assert [o.continuation for o in ranked.options] == [" blue circle", " red circle"]
    predictions = world / "classify.jsonl"
    rows = [{"id": q.id, "generated": " Blue circle." if "blue" in q.id else " blue circle"} for q in generation]
    predictions.write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert get_task("classify").score(str(predictions), inputs)["accuracy_pct"] == 50.0


def test_malformed_raven_and_memes_files_are_one_line(world, tmp_path):
    bad = tmp_path / "raven.jsonl"
    bad.write_text('{"id": 1, "context": ["a.png", "b.png"], "candidates": ["c.png"], "answer": 0}\n')
    with pytest.raises(ValueError, match=f"annotations {bad}:1: 'context' must hold 3, 4 or 8 images"):
        get_task("raven").queries(Inputs(annotations=str(bad)))
    bad = tmp_path / "dev.jsonl"
    bad.write_text('{"id": 1, "img": "x.png", "label": 0}\n{"id": 2, "img": "y.png", "label": 3}\n')
    with pytest.raises(ValueError, match=f"annotations {bad}:2: label must be 0 or 1"):
        get_task("hatefulmemes").queries(Inputs(annotations=str(bad)))


def test_the_suite_on_multimodal_files(world, tmp_path):
    import shutil

    from test_kosmos_rank import tiny_model

    from kosmos.cli import main

    model, processor = tiny_model()
    model.save_pretrained(tmp_path / "model")
    processor.save_pretrained(tmp_path / "model")
    data = tmp_path / "data"
    for name in ("vqa", "rendered-sst2", "hatefulmemes", "imagenet", "raven"):
        shutil.copytree(world / name, data / name)
    code = main(["eval", "--suite", "kosmos1", "--data", str(data), "--model", str(tmp_path / "model"),
                 "--output", str(tmp_path / "out"), "--threads", "1", "--shots", "0", "2"])
    assert code == 0
    out = tmp_path / "out"
    for name in ("vqa", "sst2", "cot_sst2", "hatefulmemes", "classify", "classify-rank", "raven"):
        summary = json.loads((out / f"{name}.json").read_text())
        assert summary["runs"][0]["items"] > 0
    assert [r["shots"] for r in json.loads((out / "vqa.json").read_text())["runs"]] == [0, 2]
    assert [r["shots"] for r in json.loads((out / "sst2.json").read_text())["runs"]] == [0]  # zero-shot tasks
    cot = [json.loads(l) for l in (out / "cot_sst2" / "0shot_trial0.jsonl").read_text().splitlines()]
    assert all("rationale" in row and len(row["loglikelihoods"]) == 2 for row in cot)
    assert "| raven | accuracy_pct |" in (out / "results.md").read_text()
