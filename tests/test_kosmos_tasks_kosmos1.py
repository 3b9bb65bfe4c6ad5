"""The remaining Kosmos-1 tasks on tiny files in each benchmark's own format: classification with descriptions
(CUB-style groups), WebSRC (the release's dataset.csv + processed_data), VizWiz (its annotation json), Flickr30k
captioning from the Karpathy-split json: the paper's prompts, demonstrations (never the query, the same for a
seed), scores by hand, malformed files as one line, and the suite picking them up."""
from __future__ import annotations

import json
import random

import pytest
from PIL import Image, ImageDraw

from kosmos.tasks import Inputs, get_task


def picture(path, colour=(220, 30, 30)):
    image = Image.new("RGB", (48, 40), (245, 245, 245))
    ImageDraw.Draw(image).ellipse((8, 6, 30, 30), fill=colour)
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path)
    return path


def predictions(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    root = tmp_path_factory.mktemp("kosmos1")
    # CUB-style groups (JSON lines of our own)
    cub = root / "cub"
    group = {"id": "g1", "general_category": "the bird", "categories": [
        {"name": "indigo bunting", "description": "The indigo bunting is small and all blue.",
         "images": ["g1/indigo/1.png", "g1/indigo/2.png"]},
        {"name": "blue grosbeak", "description": "The blue grosbeak is blue with brown wing bars.",
         "images": ["g1/grosbeak/1.png"]}]}
    for category in group["categories"]:
        for name in category["images"]:
            picture(cub / name)
    (cub / "groups.jsonl").write_text(json.dumps(group) + "\n")
    # WebSRC v1.0: {domain}/{website}/dataset.csv, processed_data/{page}.png + .html
    site = root / "websrc" / "book" / "01"
    picture(site / "processed_data" / "0100001.png")
    (site / "processed_data" / "0100001.html").write_text(
        "<html><head><title>x</title><style>p {color: red}</style></head><body><h1>Dune</h1>"
        "<p>Publisher: <b>Ace Books</b></p><script>var a = 1;</script><p>Price: $9.99</p></body></html>")
    (site / "dataset.csv").write_text("question,id,element_id,answer_start,answer\n"
                                      "Who is the publisher?,bo010000100001,5,0,Ace Books\n"
                                      "What is the price?,bo010000100002,7,0,$9.99\n")
    # VizWiz: val.json / train.json, images in val/ and train/
    vizwiz = root / "vizwiz"
    for split, names in (("val", ("VizWiz_val_00000000.jpg", "VizWiz_val_00000001.jpg")),
                         ("train", ("VizWiz_train_00000000.jpg", "VizWiz_train_00000001.jpg", "VizWiz_train_00000002.jpg"))):
        entries = []
        for n, name in enumerate(names):
            picture(vizwiz / split / name)
            answers = ["red"] * 6 + ["dark red"] * 4 if n % 2 == 0 else ["unanswerable"] * 10
            entries.append({"image": name, "question": f"What colour is this {split} thing?",
                            "answers": [{"answer": a, "answer_confidence": "yes"} for a in answers],
                            "answer_type": "other" if n % 2 == 0 else "unanswerable", "answerable": int(n % 2 == 0)})
        (vizwiz / f"{split}.json").write_text(json.dumps(entries))
    # Flickr30k, Karpathy split json
    flickr = root / "flickr30k"
    images = []
    for n, split in enumerate(("train", "train", "train", "val", "test", "test")):
        picture(flickr / "flickr30k-images" / f"{1000 + n}.jpg")
        images.append({"filename": f"{1000 + n}.jpg", "imgid": n, "split": split, "sentids": [5 * n + k for k in range(2)],
                       "sentences": [{"raw": f"A dog number {n} runs.", "tokens": ["a", "dog"], "imgid": n},
                                     {"raw": f"Dog {n} running.", "tokens": ["dog"], "imgid": n}]})
    (flickr / "dataset_flickr30k.json").write_text(json.dumps({"images": images, "dataset": "flickr30k"}))
    return root


def test_classification_with_descriptions_prompts_and_score(world, tmp_path):
    inputs = Inputs(annotations=str(world / "cub" / "groups.jsonl"))
    described = get_task("classify-descriptions").queries(inputs)
    assert len(described) == 3
    query = described[0]
    assert query.prompt == "Question:what is the name of the bird in the picture? Answer:"
    assert query.segments == (("text", "The indigo bunting is small and all blue.\n"
                                       "The blue grosbeak is blue with brown wing bars."),)
    assert query.image_path == str(world / "cub" / "g1" / "indigo" / "1.png")
    names = get_task("classify-names").queries(inputs)
    assert names[0].segments == (("text", "indigo bunting\nblue grosbeak"),) and names[0].prompt == query.prompt
    rows = [{"id": described[0].id, "generated": " Indigo bunting.\nQuestion: what"},  # right
            {"id": described[1].id, "generated": " blue grosbeak"},                 # wrong
            ]                                                                        # third: missing
    result = get_task("classify-descriptions").score(predictions(tmp_path / "p.jsonl", rows), inputs)
    assert result == {"accuracy_pct": round(100 / 3, 2), "total": 3, "missing": 1}


def test_malformed_groups_are_one_line(tmp_path):
    bad = tmp_path / "groups.jsonl"
    bad.write_text(json.dumps({"general_category": "the bird", "categories": [
        {"name": "a", "description": "A.", "images": ["a.png"]}, {"name": "b", "images": ["b.png"]}]}) + "\n")
    with pytest.raises(ValueError, match=rf"^annotations {bad}:1: categories\[1\]: missing field 'description'"):
        get_task("classify-descriptions").queries(Inputs(annotations=str(bad)))
    bad.write_text('{"general_category": "the bird", "categories": []}\n')
    with pytest.raises(ValueError, match=rf"^annotations {bad}:1: a group needs at least two categories"):
        get_task("classify-names").queries(Inputs(annotations=str(bad)))
    bad.write_text('{"general_category": "the bird", "categories": []}\n\n{"x": 1\n')
    with pytest.raises(ValueError, match=rf"^annotations {bad}:3: not JSON"):
        get_task("classify-names").queries(Inputs(annotations=str(bad)))


def test_websrc_prompt_web_text_and_em_f1(world, tmp_path):
    inputs = Inputs(annotations=str(world / "websrc"))
    queries = get_task("websrc").queries(inputs)
    assert [q.id for q in queries] == ["bo010000100001", "bo010000100002"]
    assert queries[0].image_path == str(world / "websrc" / "book" / "01" / "processed_data" / "0100001.png")
    assert queries[0].prompt == (
        "Given the context below from web page, extract the answer from the given text like this: Qusestion: Who "
        "is the publisher of this book? Answer: Penguin Books Ltd. Context: Dune Publisher: Ace Books Price: $9.99 "
        "Q: Who is the publisher? A:")
    rows = [{"id": "bo010000100001", "generated": " the Ace Books\nQ: What"},  # EM 1 (articles dropped), F1 1
            {"id": "bo010000100002", "generated": " 9.99 dollars"}]            # EM 0, F1 2*(1/2*1)/(1/2+1) = 2/3
    result = get_task("websrc").score(predictions(tmp_path / "p.jsonl", rows), inputs)
    assert result == {"exact_match_pct": 50.0, "f1_pct": round(100 * (1 + 2 / 3) / 2, 2), "total": 2, "missing": 0}
    # the same questions from one website folder or its dataset.csv
    assert [q.prompt for q in get_task("websrc").queries(Inputs(annotations=str(world / "websrc" / "book" / "01")))] \
        == [q.prompt for q in queries]


def test_malformed_websrc_is_one_line(tmp_path):
    site = tmp_path / "book" / "01"
    site.mkdir(parents=True)
    (site / "dataset.csv").write_text("question,id,element_id,answer_start,answer\nWho?,bo0100001000,1,0,Ace\nWhat?,x1,1,0,y\n")
    with pytest.raises(ValueError, match=rf"^annotations {site / 'dataset.csv'}:3: 'id' 'x1' is not a WebSRC id"):
        get_task("websrc").queries(Inputs(annotations=str(tmp_path)))
    (site / "dataset.csv").write_text("question,id,element_id,answer_start,answer\nWho?,bo0100001000,1,0,Ace\n")
    with pytest.raises(ValueError, match=rf"^annotations {site / 'dataset.csv'}:2: no page .*0100001.html"):
        get_task("websrc").queries(Inputs(annotations=str(tmp_path)))


def test_vizwiz_prompts_demonstrations_and_accuracy(world, tmp_path):
    vizwiz = world / "vizwiz"
    inputs = Inputs(annotations=str(vizwiz / "val.json"), images=str(vizwiz / "val"), train=str(vizwiz / "train.json"),
                    train_images=str(vizwiz / "train"), shots=2)
    queries = get_task("vizwiz").queries(inputs)
    assert queries == get_task("vizwiz").queries(inputs)  # the same for the same seed
    query = queries[0]
    assert query.prompt == "Question: What colour is this val thing? Answer:"
    assert query.image_path == str(vizwiz / "val" / "VizWiz_val_00000000.jpg")
    texts = [v for k, v in query.segments if k == "text"]
    assert set(texts) <= {"Question: What colour is this train thing? Answer: red",
                          "Question: What colour is this train thing? Answer: unanswerable"} and len(texts) == 2
    assert all(v.startswith(str(vizwiz / "train")) for k, v in query.segments if k == "image")
    # demonstrations from the evaluation file itself never include the query
    for q in get_task("vizwiz").queries(inputs.with_(train=inputs.annotations, train_images=None, shots=1)):
        assert [v for k, v in q.segments if k == "image"] != [q.image_path]
    path = tmp_path / "answers.json"
    path.write_text(json.dumps([{"image": "VizWiz_val_00000000.jpg", "answer": "Dark red."}]))
    result = get_task("vizwiz").score(str(path), inputs)
    # "dark red" matches 4 answers: each of the 6 "red" rows sees 4 others -> 1, each "dark red" row sees 3 -> 1
    assert result["accuracy_pct"] == 50.0 and result["missing"] == 1
    assert result["per_answer_type_pct"] == {"other": 100.0, "unanswerable": 0.0}
    path.write_text(json.dumps([{"image": "nope.jpg", "answer": "x"}]))
    with pytest.raises(ValueError, match=rf"^predictions {path}: entry 0: image 'nope.jpg' is not in the annotations"):
        get_task("vizwiz").score(str(path), inputs)


def test_malformed_vizwiz_is_one_line(tmp_path):
    bad = tmp_path / "val.json"
    bad.write_text(json.dumps([{"image": "a.jpg", "question": "Q?", "answers": []},
                               {"image": "b.jpg", "question": "Q?", "answers": ["red"]}]))
    with pytest.raises(ValueError, match=rf"^annotations {bad}: entry 1: 'answers' must be a list of"):
        get_task("vizwiz").queries(Inputs(annotations=str(bad), images=str(tmp_path)))


def test_flickr30k_karpathy_queries_and_demonstrations(world):
    flickr = world / "flickr30k"
    inputs = Inputs(annotations=str(flickr / "dataset_flickr30k.json"), images=str(flickr / "flickr30k-images"), shots=2)
    queries = get_task("caption_flickr30k").queries(inputs)
    assert [q.id for q in queries] == [4, 5]  # the test split
    assert queries == get_task("caption_flickr30k").queries(inputs)
    for query in queries:
        assert query.prompt == "An image of"
        texts = [v for k, v in query.segments if k == "text"]
        # demonstrations: train images only (ids 0-2), their first sentence
        assert len(texts) == 2 and set(texts) <= {f"An image of a dog number {n} runs." for n in range(3)}
    # another trial draws with random.Random(f"{seed}/{trial}/{query id}")
    pool = [f"An image of a dog number {n} runs." for n in range(3)]
    for trial in (0, 1):
        drawn = get_task("caption_flickr30k").queries(inputs.with_(trial=trial))[0]
        assert [v for k, v in drawn.segments if k == "text"] == random.Random(f"1234/{trial}/4").sample(pool, 2)


def test_flickr30k_scores_against_every_sentence(world, tmp_path, monkeypatch):
    from kosmos.evaluate.metrics import captioning

    seen = {}

    def caption_metrics(candidates, references):  # METEOR/CIDEr themselves: test_kosmos_metrics.py
        seen.update(candidates=candidates, references=references)
        return {"METEOR_pct": 1.0, "CIDEr_pct": 2.0}

    monkeypatch.setattr(captioning, "caption_metrics", caption_metrics)
    flickr = world / "flickr30k"
    inputs = Inputs(annotations=str(flickr / "dataset_flickr30k.json"), images=str(flickr / "flickr30k-images"))
    path = tmp_path / "captions.json"
    path.write_text(json.dumps([{"image_id": 4, "caption": "a dog number 4 runs."}]))
    result = get_task("caption_flickr30k").score(str(path), inputs)
    assert result == {"METEOR_pct": 1.0, "CIDEr_pct": 2.0, "total": 1, "missing": 1}
    assert seen == {"candidates": {"4": "a dog number 4 runs."},
                    "references": {"4": ["A dog number 4 runs.", "Dog 4 running."],
                                   "5": ["A dog number 5 runs.", "Dog 5 running."]}}
    path.write_text(json.dumps([{"image_id": 0, "caption": "a dog"}]))  # a training image
    with pytest.raises(ValueError, match=rf"^predictions {path}: entry 0: image 0 is not in the test split"):
        get_task("caption_flickr30k").score(str(path), inputs)
    bad = tmp_path / "dataset_flickr30k.json"
    bad.write_text(json.dumps({"images": [{"filename": "1.jpg", "split": "test", "sentences": ["raw text"]}]}))
    with pytest.raises(ValueError, match=rf"^annotations {bad}: images\[0\]: 'sentences' must be a list of"):
        get_task("caption_flickr30k").queries(Inputs(annotations=str(bad), images=str(tmp_path)))


def test_the_suite_picks_up_the_four_tasks(world, tmp_path):
    import shutil

    from test_kosmos_rank import tiny_model

    from kosmos.cli import main

    model, processor = tiny_model()
    model.save_pretrained(tmp_path / "model")
    processor.save_pretrained(tmp_path / "model")
    data = tmp_path / "data"
    for name in ("cub", "websrc", "vizwiz"):  # flickr30k: find() below (its METEOR runs Java, slow here)
        shutil.copytree(world / name, data / name)
    code = main(["eval", "--suite", "kosmos1", "--data", str(data), "--model", str(tmp_path / "model"),
                 "--output", str(tmp_path / "out"), "--threads", "1", "--shots", "0", "1"])
    assert code == 0
    out = tmp_path / "out"
    for name, shots in (("classify-descriptions", [0]), ("classify-names", [0]), ("websrc", [0]), ("vizwiz", [0, 1])):
        summary = json.loads((out / f"{name}.json").read_text())
        assert [r["shots"] for r in summary["runs"]] == shots and summary["runs"][0]["items"] > 0
    assert "| websrc | f1_pct |" in (out / "results.md").read_text()
    found = get_task("caption_flickr30k").find(world)
    assert found.annotations == found.train == str(world / "flickr30k" / "dataset_flickr30k.json")
    assert found.images == str(world / "flickr30k" / "flickr30k-images")
