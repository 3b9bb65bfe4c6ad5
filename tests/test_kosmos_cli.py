"""kosmos command line: train -> predict -> score on toy data, every task's formats, synthetic RefCOCO."""
import json

import pytest

from kosmos.cli import main
from kosmos.toydata import write_toy_refcoco, write_toy_shards


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A tiny model trained for a few steps through `kosmos train`."""
    root = tmp_path_factory.mktemp("cli")
    write_toy_shards(root / "shards", num_shards=1, per_shard=8)
    code = main(["train", "--data", str(root / "shards"), "--output", str(root / "run"), "--steps", "2",
                 "--batch-size", "4", "--log-every", "1", "--checkpoint-every", "2", "--loader-workers", "0",
                 "--threads", "1", "--shuffle-buffer", "0"])
    assert code == 0
    return root


@pytest.fixture(scope="module")
def refcoco(trained):
    """MDETR RefCOCO json for 3 toy images (one expression each) and the image files."""
    return write_toy_refcoco(trained)


def run_json(capsys, argv):
    code = main(argv)
    out = capsys.readouterr().out.strip().splitlines()
    return code, (json.loads(out[-1]) if out else None)


def test_train_wrote_checkpoint_log_and_processor(trained):
    run = trained / "run"
    assert (run / "checkpoints" / "latest").read_text().strip() == "step_0000002"
    assert (run / "processor" / "tokenizer.json").exists()
    log = [json.loads(l) for l in (run / "train_log.jsonl").read_text().splitlines()]
    assert [e["step"] for e in log] == [1, 2] and all(e["tokens_per_s"] > 0 for e in log)


def test_predict_rec_then_score(trained, refcoco, capsys):
    pred = trained / "rec.jsonl"
    code, summary = run_json(capsys, ["predict", "rec", "--model", str(trained / "run"), "--images",
                                      str(trained / "images"), "--annotations", str(refcoco), "--output",
                                      str(pred), "--threads", "1"])
    assert code == 0 and summary["predictions"] == 3
    rows = [json.loads(l) for l in pred.read_text().splitlines()]
    assert [r["id"] for r in rows] == [10, 11, 12] or sorted(r["id"] for r in rows) == [10, 11, 12]
    expressions = {im["id"]: im["caption"] for im in json.loads(refcoco.read_text())["images"]}
    for row in rows:  # the official prompt, kept in the text so the phrase can be matched
        assert row["text"].startswith(f"<grounding><phrase> {expressions[row['id']]}</phrase>")
        assert row["frame"] == [0.0, 0.0, 1.0, 1.0]
    code, result = run_json(capsys, ["score", "rec", "--predictions", str(pred), "--annotations", str(refcoco)])
    assert code == 0 and result["task"] == "rec" and result["total"] == 3 and 0 <= result["accuracy_pct"] <= 100
    # a prediction file whose boxes are exactly right scores 100
    truth = json.loads(refcoco.read_text())
    from grit_pipeline.serialize import Entity, serialize_entities

    perfect = trained / "perfect.jsonl"
    with open(perfect, "w") as handle:
        for im, ann in zip(truth["images"], truth["annotations"]):
            x, y, w, h = ann["bbox"]
            box = (x / 96, y / 64, (x + w) / 96, (y + h) / 64)
            text = serialize_entities(im["caption"], [Entity(0, len(im["caption"]), [box])])
            handle.write(json.dumps({"id": im["id"], "text": text}) + "\n")
    code, result = run_json(capsys, ["score", "rec", "--predictions", str(perfect), "--annotations", str(refcoco)])
    assert result["accuracy_pct"] == 100.0


def test_predict_caption_vqa_reg_formats(trained, refcoco, capsys):
    captions = {"images": [{"id": 5, "file_name": "img0.jpg"}], "annotations": [{"image_id": 5, "caption": "x"}]}
    (trained / "captions.json").write_text(json.dumps(captions))
    code, _ = run_json(capsys, ["predict", "caption", "--model", str(trained / "run"), "--images",
                                str(trained / "images"), "--annotations", str(trained / "captions.json"),
                                "--output", str(trained / "cap.json"), "--threads", "1"])
    results = json.loads((trained / "cap.json").read_text())
    assert code == 0 and len(results) == 1 and set(results[0]) == {"image_id", "caption"}
    assert results[0]["image_id"] == 5 and "<" not in results[0]["caption"]

    questions = {"data_subtype": "val2014", "questions": [{"question_id": 42, "image_id": 1, "question": "What?"}]}
    (trained / "q.json").write_text(json.dumps(questions))
    (trained / "images" / "COCO_val2014_000000000001.jpg").write_bytes((trained / "images" / "img1.jpg").read_bytes())
    code, _ = run_json(capsys, ["predict", "vqa", "--model", str(trained / "run"), "--images",
                                str(trained / "images"), "--questions", str(trained / "q.json"),
                                "--output", str(trained / "vqa.json"), "--threads", "1"])
    results = json.loads((trained / "vqa.json").read_text())
    assert code == 0 and [set(r) for r in results] == [{"question_id", "answer"}] and results[0]["question_id"] == 42
    annotations = {"annotations": [{"question_id": 42, "answer_type": "other",
                                    "answers": [{"answer": results[0]["answer"] or "x", "answer_id": i}
                                                for i in range(10)]}]}
    (trained / "a.json").write_text(json.dumps(annotations))
    code, result = run_json(capsys, ["score", "vqa", "--predictions", str(trained / "vqa.json"),
                                     "--annotations", str(trained / "a.json"), "--questions", str(trained / "q.json")])
    assert code == 0 and result["total"] == 1

    code, _ = run_json(capsys, ["predict", "reg", "--model", str(trained / "run"), "--images",
                                str(trained / "images"), "--annotations", str(refcoco),
                                "--output", str(trained / "reg.jsonl"), "--threads", "1"])
    rows = [json.loads(l) for l in (trained / "reg.jsonl").read_text().splitlines()]
    assert code == 0 and len(rows) == 3
    # (the toy tokenizer never saw a capital I, so "It" decodes without it)
    assert all(r["text"].startswith("<phrase>") and "</phrase><object><patch_index_" in r["text"] for r in rows)
    from kosmos.predict import reg_prompt

    # the box cells of the prompt follow the released loader (the text the model was trained on)
    assert reg_prompt((0.1, 0.1, 0.5, 0.5)) == "<phrase> It</phrase><object><patch_index_0099><patch_index_0528></object> is"


def test_score_errors_are_clear(tmp_path, capsys):
    code = main(["score", "rec", "--predictions", str(tmp_path / "none.jsonl"), "--annotations", "x.json"])
    assert code == 2 and "no such file" in capsys.readouterr().err
    (tmp_path / "p.json").write_text("[]")
    (tmp_path / "a.json").write_text('{"annotations": []}')
    code = main(["score", "vqa", "--predictions", str(tmp_path / "p.json"), "--annotations", str(tmp_path / "a.json")])
    assert code == 2 and "--questions" in capsys.readouterr().err


def test_synthetic_truth_to_mdetr_refcoco(tmp_path, capsys):
    from grit_pipeline.synth.writer import write_synthetic_world

    write_synthetic_world(tmp_path / "synth", images=4, seed=11, shard_size=2)
    code, summary = run_json(capsys, ["synth-refcoco", "--synth", str(tmp_path / "synth"),
                                      "--output", str(tmp_path / "ref")])
    data = json.loads((tmp_path / "ref" / "finetune_refcoco_val.json").read_text())
    truth = [json.loads(l) for p in sorted((tmp_path / "synth" / "truth").glob("*.jsonl"))
             for l in p.read_text().splitlines() if l.strip()]
    objects = [(t, o) for t in truth for o in t["objects"]
               if sum(p["ref_exp"] == o["ref_exp"] for p in t["objects"]) == 1]  # one referent only
    assert code == 0 and summary["expressions"] == len(objects) == len(data["images"]) > 0
    for im, ann, (t, o) in zip(data["images"], data["annotations"], objects):
        assert ann["image_id"] == im["id"] and im["caption"] == t["caption"][o["ref_exp"][0]:o["ref_exp"][1]]
        x1, y1, x2, y2 = o["box"]
        assert ann["bbox"] == pytest.approx([x1 * t["width"], y1 * t["height"], (x2 - x1) * t["width"],
                                             (y2 - y1) * t["height"]], abs=1e-3)
        assert (tmp_path / "ref" / "images" / im["file_name"]).exists()


def test_batched_generation_equals_one_at_a_time(trained, refcoco):
    from kosmos.predict import build_queries, generate, load_model

    model, processor = load_model(str(trained / "run"), torch_device())
    annotations = json.loads(refcoco.read_text())
    for im in annotations["images"]:  # equal prompts -> one bucket of 3
        im["caption"] = "a red square"
    queries = build_queries("rec", str(trained / "images"), annotations)
    batched = {r["id"]: r["text"] for r in generate(model, processor, queries, batch_size=3)}
    single = {r["id"]: r["text"] for r in generate(model, processor, queries, batch_size=1)}
    assert batched == single and len(batched) == 3


def test_generation_from_an_interleaved_prompt(trained, refcoco):
    """Demonstrations before the query (several images in one sequence), batched like single-image prompts."""
    from kosmos.predict import Query, generate, load_model

    model, processor = load_model(str(trained / "run"), torch_device())
    images = sorted(str(p) for p in (trained / "images").iterdir())
    demos = (("image", images[0]), ("text", "An image of a red square."), ("image", images[1]),
             ("text", "An image of a blue circle."))
    queries = [Query(i, images[2], "An image of", "caption", segments=demos) for i in range(2)]
    queries.append(Query(9, images[2], "An image of", "caption"))  # zero-shot: its own bucket
    results = {r["id"]: r for r in generate(model, processor, queries, batch_size=2)}
    assert set(results) == {0, 1, 9}
    assert results[0]["generated"] == results[1]["generated"]  # same prompt, same greedy answer
    assert results[0]["text"].count("</image>") == 0  # the text after the last image only


def torch_device():
    import torch

    return torch.device("cpu")


@pytest.mark.parametrize("flags, message", [
    (["--location-loss-weight", "nan"], "--location-loss-weight must be a finite number > 0, got nan"),
    (["--max-minutes", "-1"], "--max-minutes must be a finite number > 0, got -1.0"),
    (["--eval-every", "-3"], "--eval-every must be a finite number >= 0, got -3"),
    (["--location-sigma", "inf"], "--location-sigma must be a finite number >= 0, got inf"),
    (["--threads", "0"], "--threads must be a finite number >= 1, got 0"),
    (["--betas", "0.9", "1.5"], "--betas must be two numbers in [0, 1)"),
])
def test_train_settings_out_of_range_are_one_line_errors(tmp_path, capsys, flags, message):
    # Checked before the data is even looked at: the data path here does not exist.
    code = main(["train", "--data", str(tmp_path / "none"), "--output", str(tmp_path / "run"), *flags])
    assert code != 0
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "run").exists()


def test_default_train_settings_pass_the_range_check():
    from kosmos.train import TrainConfig

    for preset in ("tiny", "small", "paper"):
        for init in (None, "some/model"):
            config = TrainConfig(data=["x"], output="y", preset=preset, init=init)
            assert config.number_problems() == [] and config.resolved().number_problems() == []


def test_e2e_worlds_of_another_seed_are_refused_not_reused(tmp_path):
    from kosmos.e2e import check_world_seed

    built = tmp_path / "synth"
    check_world_seed(tmp_path, 10, built)  # nothing built yet: the seed is recorded
    check_world_seed(tmp_path, 10, built)
    with pytest.raises(SystemExit, match="holds the worlds of seed 10, not 0"):
        check_world_seed(tmp_path, 0, built)
    unrecorded = tmp_path / "old"
    (unrecorded / "synth").mkdir(parents=True)  # worlds from before seeds were recorded: seed 0
    check_world_seed(unrecorded, 0, unrecorded / "synth")
    (unrecorded / "world_seed.txt").unlink()
    with pytest.raises(SystemExit, match="seed 0, not 3"):
        check_world_seed(unrecorded, 3, unrecorded / "synth")
