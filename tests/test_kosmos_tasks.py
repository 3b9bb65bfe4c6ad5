"""The task registry and the multiple-choice language tasks on tiny files in each benchmark's own format: rendered
prompts equal lm-evaluation-harness's, demonstrations exclude the query and repeat for a seed, partial scoring,
malformed files as one line naming file and line, and `kosmos eval` end to end."""
from __future__ import annotations

import csv
import json

import pytest

from kosmos.tasks import Inputs, get_task, registry

RECORDS = {
    "copa": ("val.jsonl", [
        {"premise": "The man turned on the faucet.", "choice1": "The toilet filled with water.",
         "choice2": "Water flowed from the spout.", "question": "effect", "label": 1, "idx": 0},
        {"premise": "My body cast a shadow over the grass.", "choice1": "The sun was rising.",
         "choice2": "The grass was cut.", "question": "cause", "label": 0, "idx": 1}]),
    "boolq": ("val.jsonl", [
        {"question": "is the sky blue", "passage": "The sky is blue.", "idx": 0, "label": True},
        {"question": "is grass red", "passage": "Grass is green.", "idx": 1, "label": False}]),
    "cb": ("val.jsonl", [
        {"premise": "It rained.", "hypothesis": "The ground is wet", "label": "entailment", "idx": 0},
        {"premise": "It is dry.", "hypothesis": "It rained", "label": "contradiction", "idx": 1}]),
    "piqa": ("valid.jsonl", [
        {"goal": "Open a jar", "sol1": "Twist the lid.", "sol2": "Eat the lid."},
        {"goal": "Dry hair", "sol1": "Use a towel.", "sol2": "Use a spoon."}]),
    "hellaswag": ("hellaswag_val.jsonl", [
        {"ind": 4, "activity_label": "Removing ice from car", "ctx_a": "Then, the man writes over the snow.",
         "ctx_b": "then", "endings": [", the man adds wax.", ", the man stops.", "the man leaves [title] he sits.", ", he sits."],
         "label": "3"},
        {"ind": 5, "activity_label": "Baking", "ctx_a": "A woman mixes flour.", "ctx_b": "she",
         "endings": ["bakes.", "sings.", "runs.", "sleeps."], "label": 0}]),
    "winogrande": ("dev.jsonl", [
        {"qID": "a1", "sentence": "The trophy does not fit into the suitcase because the _ is too large.",
         "option1": "trophy", "option2": "suitcase", "answer": "1"},
        {"qID": "a2", "sentence": "The trophy does not fit into the suitcase because the _ is too small.",
         "option1": "trophy", "option2": "suitcase", "answer": "2"}]),
    "wsc273": ("wsc273.jsonl", [
        {"text": "The city councilmen refused the demonstrators a permit because they feared violence.",
         "pronoun": "they", "pronoun_loc": 63, "quote": "they feared violence", "quote_loc": 63,
         "options": ["The city councilmen", "The demonstrators"], "label": 0, "source": "(Winograd 1972)"},
        {"text": "The city councilmen refused the demonstrators a permit because they advocated violence.",
         "pronoun": "they", "pronoun_loc": 63, "quote": "they advocated violence", "quote_loc": 63,
         "options": ["The city councilmen", "The demonstrators"], "label": 1, "source": "(Winograd 1972)"}]),
}
STORYCLOZE_HEADER = ["InputStoryid", "InputSentence1", "InputSentence2", "InputSentence3", "InputSentence4",
                     "RandomFifthSentenceQuiz1", "RandomFifthSentenceQuiz2", "AnswerRightEnding"]
STORYCLOZE_ROWS = [["s1", "Tom was hungry.", "He opened the fridge.", "It was empty.", "He went out.",
                    "He bought food.", "He flew to the moon.", "1"],
                   ["s2", "Ann had a test.", "She studied.", "She slept well.", "She woke early.",
                    "She failed badly.", "She passed.", "2"]]


def write_task_files(root) -> dict:
    """Every language task's files under ``root/TASK/`` (the suite layout); returns the evaluation file per task."""
    files = {}
    for name, (file_name, records) in RECORDS.items():
        folder = root / name
        folder.mkdir(parents=True, exist_ok=True)
        (folder / file_name).write_text("".join(json.dumps(r) + "\n" for r in records))
        files[name] = folder / file_name
    (root / "piqa" / "valid-labels.lst").write_text("0\n0\n")  # PIQA keeps its labels beside the records
    folder = root / "storycloze"
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / "cloze_test_val__spring2016.csv", "w", newline="") as handle:
        csv.writer(handle).writerows([STORYCLOZE_HEADER] + STORYCLOZE_ROWS)
    files["storycloze"] = folder / "cloze_test_val__spring2016.csv"
    return files


@pytest.fixture
def files(tmp_path):
    return write_task_files(tmp_path)


def rendered(name: str, path, shots: int = 0, **changes):
    task = get_task(name)
    inputs = Inputs(annotations=str(path), train=str(path), shots=shots, **changes)
    return [[(option.context[0][1], option.continuation) for option in item.options] for item in task.queries(inputs)]


def test_the_registry_is_the_one_task_list():
    names = list(registry())
    assert names[:5] == ["rec", "flickr", "reg", "caption", "vqa"]
    for name in ("storycloze", "hellaswag", "wsc273", "winogrande", "piqa", "boolq", "cb", "copa"):
        task = get_task(name)
        assert task.mode == "rank" and task.shots == (0, 1, 4) and task.metric == "acc_pct"
    from kosmos.cli import build_parser

    predict = build_parser()._subparsers._group_actions[0].choices["predict"]
    assert list(next(a for a in predict._actions if a.dest == "task").choices) == names
    with pytest.raises(ValueError, match="unknown task 'nope'"):
        get_task("nope")


def test_every_headline_metric_carries_its_unit():
    # docs/evaluation.md: every rate or score x 100 with a key ending in _pct; Java only where pycocoevalcap runs
    assert all(task.metric.endswith("_pct") for task in registry().values())
    assert {name for name, task in registry().items() if task.needs_java} == {"reg", "caption", "caption_flickr30k"}


def test_language_prompts_render_as_lm_evaluation_harness(files):
    assert rendered("copa", files["copa"])[0] == [
        ("The man turned on the faucet therefore", " the toilet filled with water."),
        ("The man turned on the faucet therefore", " water flowed from the spout.")]
    assert rendered("copa", files["copa"])[1][0][0] == "My body cast a shadow over the grass because"
    assert rendered("boolq", files["boolq"])[0] == [("The sky is blue.\nQuestion: is the sky blue?\nAnswer:", " no"),
                                                    ("The sky is blue.\nQuestion: is the sky blue?\nAnswer:", " yes")]
    assert [c for _, c in rendered("cb", files["cb"])[0]] == [" True", " False", " Neither"]
    assert rendered("cb", files["cb"])[0][0][0] == "It rained.\nQuestion: The ground is wet. True, False, or Neither?\nAnswer:"
    assert rendered("piqa", files["piqa"])[0][0] == ("Question: Open a jar\nAnswer:", " Twist the lid.")
    hellaswag = rendered("hellaswag", files["hellaswag"])[0]
    assert hellaswag[0][0] == "Removing ice from car: Then, the man writes over the snow. Then"
    assert [c for _, c in hellaswag] == [" , the man adds wax.", " , the man stops.", " the man leaves. he sits.", " , he sits."]
    story = rendered("storycloze", files["storycloze"])[0]
    assert story == [("Tom was hungry. He opened the fridge. It was empty. He went out.", " He bought food."),
                     ("Tom was hungry. He opened the fridge. It was empty. He went out.", " He flew to the moon.")]


def test_partial_scoring_winogrande_and_wsc273(files):
    winogrande = rendered("winogrande", files["winogrande"])[0]
    assert winogrande == [("The trophy does not fit into the suitcase because the trophy", " is too large."),
                          ("The trophy does not fit into the suitcase because the suitcase", " is too large.")]
    wsc = rendered("wsc273", files["wsc273"])[0]
    assert wsc == [("The city councilmen refused the demonstrators a permit because the city councilmen",
                    " feared violence."),
                   ("The city councilmen refused the demonstrators a permit because the demonstrators",
                    " feared violence.")]
    # the answer is the option's context; acc only (every option continues with the same text)
    from kosmos.tasks.multiple_choice import score_docs, read_docs
    from kosmos.tasks.winogrande import parse

    docs = read_docs(str(files["winogrande"]), parse)
    predictions = files["winogrande"].with_name("p.jsonl")
    predictions.write_text(json.dumps({"id": "a1", "loglikelihoods": [-1.0, -2.0]}) + "\n"
                           + json.dumps({"id": "a2", "loglikelihoods": [-1.0, -2.0]}) + "\n")
    assert score_docs(str(predictions), docs) == {"acc_pct": 50.0, "total": 2, "missing": 0}


def test_demonstrations_exclude_the_query_and_repeat_for_a_seed(files):
    first = rendered("copa", files["copa"], shots=1)
    again = rendered("copa", files["copa"], shots=1)
    assert first == again
    # two documents: the only other one is each query's demonstration, answered, then a blank line
    assert first[0][0][0] == ("My body cast a shadow over the grass because the sun was rising.\n\n"
                              "The man turned on the faucet therefore")
    assert first[1][0][0].startswith("The man turned on the faucet therefore water flowed from the spout.\n\n")
    from kosmos.evaluate.fewshot import demonstrations

    pool = [(i, i) for i in range(50)]
    drawn = demonstrations(pool, 4, seed=1234, trial=0, query_id=7, query_key=7)
    assert drawn == demonstrations(pool, 4, seed=1234, trial=0, query_id=7, query_key=7) and 7 not in drawn
    assert drawn != demonstrations(pool, 4, seed=1234, trial=1, query_id=7, query_key=7)
    assert all(7 not in demonstrations(pool, 49, seed=s, trial=0, query_id=7, query_key=7) for s in range(5))
    with pytest.raises(ValueError, match="2 demonstrations asked for"):
        rendered("copa", files["copa"], shots=2)


def test_a_training_document_that_shares_the_query_idx_stays_a_candidate(tmp_path, files):
    # SuperGLUE's train and validation idx ranges overlap: train idx 0 is another document than validation idx 0,
    # and lm-evaluation-harness drops only the query document itself from its pool
    train = tmp_path / "train.jsonl"
    train.write_text(json.dumps({"premise": "The girl found a bug in her cereal.", "choice1": "She poured milk.",
                                 "choice2": "She lost her appetite.", "question": "effect", "label": 1,
                                 "idx": 0}) + "\n")
    task = get_task("copa")
    items = task.queries(Inputs(annotations=str(files["copa"]), train=str(train), shots=1))
    demonstration = "The girl found a bug in her cereal therefore she lost her appetite.\n\n"
    assert [item.options[0].context[0][1].startswith(demonstration) for item in items] == [True, True]
    # the same file as its own pool: the query (same file, same record) is left out, the other document drawn
    same = task.queries(Inputs(annotations=str(files["copa"]), train=str(files["copa"]), shots=1))
    assert same[0].options[0].context[0][1].startswith("My body cast a shadow over the grass because the sun")
    from kosmos.evaluate.fewshot import demonstrations, document_key

    pool = [(document_key(train, 0), "train 0"), (document_key(files["copa"], 1), "val 1")]
    assert sorted(demonstrations(pool, 2, 1234, 0, 0, document_key(files["copa"], 0))) == ["train 0", "val 1"]
    assert demonstrations(pool, 1, 1234, 0, 1, document_key(files["copa"], 1)) == ["train 0"]


def test_copa_under_both_harness_templates(files, tmp_path, capsys):
    task = get_task("copa")
    assert task.templates == ("harness-legacy", "harness-current")
    legacy = rendered("copa", files["copa"])
    assert rendered("copa", files["copa"], template="harness-legacy") == legacy
    assert [c for _, c in legacy[0]] == [" the toilet filled with water.", " water flowed from the spout."]
    current = rendered("copa", files["copa"], template="harness-current")
    assert [c for _, c in current[0]] == [" The toilet filled with water.", " Water flowed from the spout."]
    assert [ctx for ctx, _ in current[1]] == [ctx for ctx, _ in legacy[1]] == ["My body cast a shadow over the grass because"] * 2
    assert rendered("copa", files["copa"], shots=1, template="harness-current")[0][0][0].startswith(
        "My body cast a shadow over the grass because The sun was rising.\n\n")
    with pytest.raises(ValueError, match="no template 'x'"):
        rendered("copa", files["copa"], template="x")
    from kosmos.cli import main

    for name, template in (("copa", "harness-0.2"), ("boolq", "harness-current")):
        code = main(["predict", name, "--annotations", str(files[name]), "--template", template, "--model",
                     str(tmp_path / "no-model"), "--output", str(tmp_path / "p.jsonl")])
        err = capsys.readouterr().err
        assert code == 2 and f"--template {template}: the task's templates are" in err and len(err.splitlines()) == 1


def test_eval_checks_every_shot_count_before_the_first_query(tmp_path, capsys, files):
    from kosmos.cli import main

    # no model is there: a check that came after loading it, or after the 0-shot run, would fail otherwise
    out = tmp_path / "out"
    code = main(["eval", "copa", "--model", str(tmp_path / "no-model"), "--annotations", str(files["copa"]),
                 "--shots", "0", "1", "4", "--output", str(out)])
    err = capsys.readouterr().err
    assert code == 2 and err.strip() == "kosmos eval copa: 1-shot copa needs --train (demonstrations)"
    assert not out.exists()
    code = main(["eval", "vqa", "--model", str(tmp_path / "no-model"), "--annotations", str(files["copa"]),
                 "--questions", str(files["copa"]), "--images", str(tmp_path), "--train", str(files["copa"]),
                 "--shots", "0", "2", "--output", str(out)])
    err = capsys.readouterr().err
    assert code == 2 and err.strip() == "kosmos eval vqa: 2-shot vqa needs --train-questions (demonstrations)"
    code = main(["eval", "sst2", "--model", str(tmp_path / "no-model"), "--annotations", str(tmp_path),
                 "--shots", "0", "2", "--output", str(out)])
    err = capsys.readouterr().err
    assert code == 2 and "the task is zero-shot only" in err and len(err.splitlines()) == 1
    from kosmos.tasks.suite import evaluate_task

    with pytest.raises(ValueError, match="^4-shot copa needs --train"):
        evaluate_task("copa", None, None, Inputs(annotations=str(files["copa"])), out, shots=(0, 4))
    assert not out.exists()


@pytest.mark.parametrize("name, line, message", [
    ("copa", '{"premise": "x.", "choice1": "a", "choice2": "b", "question": "why", "label": 0}',
     "question must be 'cause' or 'effect'"),
    ("boolq", '{"question": "q", "label": true}', "missing field 'passage'"),
    ("winogrande", '{"sentence": "no blank", "option1": "a", "option2": "b", "answer": "1"}', "no '_' blank"),
    ("hellaswag", "[1, 2]", "expected a JSON object"),
    ("cb", "{not json", "not JSON"),
])
def test_a_malformed_file_is_one_line_naming_file_and_line(tmp_path, capsys, name, line, message):
    from kosmos.cli import main

    good = json.dumps(RECORDS[name][1][0])
    path = tmp_path / "val.jsonl"
    path.write_text(good + "\n\n" + line + "\n")
    with pytest.raises(ValueError) as error:
        get_task(name).queries(Inputs(annotations=str(path)))
    assert str(error.value).startswith(f"annotations {path}:3: ") and message in str(error.value)
    (tmp_path / "p.jsonl").write_text("")
    code = main(["score", name, "--predictions", str(tmp_path / "p.jsonl"), "--annotations", str(path)])
    err = capsys.readouterr().err
    assert code == 2 and f"{path}:3: " in err and len(err.strip().splitlines()) == 1 and "Traceback" not in err


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    from test_kosmos_rank import tiny_model

    model, processor = tiny_model()
    root = tmp_path_factory.mktemp("tiny_model")
    model.save_pretrained(root)
    processor.save_pretrained(root)
    return root


def test_eval_a_language_task_over_shots_and_trials(tmp_path, capsys, files, model_dir):
    from kosmos.cli import main

    code = main(["eval", "copa", "--model", str(model_dir), "--annotations", str(files["copa"]), "--train",
                 str(files["copa"]), "--shots", "0", "1", "--trials", "2", "--output", str(tmp_path / "out"),
                 "--threads", "1"])
    assert code == 0
    summary = json.loads((tmp_path / "out" / "copa.json").read_text())
    assert summary["task"] == "copa" and summary["seed"] == 1234 and summary["metric"] == "acc_pct"
    assert [(r["shots"], r["trials"], r["items"]) for r in summary["runs"]] == [(0, 1, 2), (1, 2, 2)]
    for run in summary["runs"]:
        values = [t["acc_pct"] for t in run["per_trial"]]
        assert run["mean"] == pytest.approx(sum(values) / len(values)) and set(run["means"]) >= {"acc_pct", "acc_norm_pct"}
    rows = [json.loads(l) for l in (tmp_path / "out" / "copa" / "1shot_trial0.jsonl").read_text().splitlines()]
    assert [len(r["loglikelihoods"]) for r in rows] == [2, 2]
    # kosmos predict + kosmos score give the same numbers as eval's 0-shot run
    assert main(["predict", "copa", "--model", str(model_dir), "--annotations", str(files["copa"]),
                 "--output", str(tmp_path / "p.jsonl")]) == 0
    capsys.readouterr()
    assert main(["score", "copa", "--predictions", str(tmp_path / "p.jsonl"), "--annotations", str(files["copa"])]) == 0
    scored = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert scored["acc_pct"] == summary["runs"][0]["mean"]


def test_the_suite_runs_every_task_whose_files_are_present(tmp_path, files, model_dir):
    from kosmos.cli import main

    code = main(["eval", "--suite", "kosmos1", "--data", str(tmp_path), "--model", str(model_dir),
                 "--output", str(tmp_path / "suite"), "--threads", "1", "--shots", "0", "1"])
    assert code == 0
    out = tmp_path / "suite"
    for name in RECORDS:
        assert json.loads((out / f"{name}.json").read_text())["runs"][1]["shots"] == 1
    table = (out / "results.md").read_text().splitlines()
    assert table[0] == "| task | metric | 0-shot | 1-shot |" and len(table) == 2 + len(RECORDS) + 1
    assert (out / "shots.png").read_bytes()[:4] == b"\x89PNG"


def test_cross_modal_tasks_take_demonstrations_from_train_as_documented(tmp_path, capsys):
    from kosmos.cli import main

    out = tmp_path / "out"
    # few-shot memorycolor is allowed (its docs: --shots k with --train), so without --train it asks for it
    code = main(["eval", "memorycolor", "--model", str(tmp_path / "no-model"), "--annotations", str(tmp_path),
                 "--shots", "0", "2", "--output", str(out)])
    err = capsys.readouterr().err
    assert code == 2 and err.strip() == "kosmos eval memorycolor: 2-shot memorycolor needs --train (demonstrations)"
