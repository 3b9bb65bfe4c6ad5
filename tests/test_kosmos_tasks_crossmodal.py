"""Kosmos-1's cross-modal transfer tasks (RelativeSize, MemoryColor, ColorTerms) on tiny files in each dataset's
public format: the paper's prompts, the 11 colours as candidates, acc and acc_norm by hand (ties to the first
candidate), a tiny random model's argmax, malformed files as one line naming file and line, and the suite picking
them up."""
from __future__ import annotations

import json

import pytest

from kosmos.tasks import Inputs, get_task, task_names

COLOURS = ["red", "white", "green", "yellow", "blue", "black", "brown", "orange", "pink", "grey", "purple"]
# rows as the public files have them (Norlund et al.'s MemoryColor as VaLM distributes it: note "the " with its
# space, an empty descriptor, "Gray" spelt the other way and capitalised)
MEMORY_COLOR = ("Index,Descriptor,Item,Color\n"
                "2,the ,ocean,blue\n"
                "3,,grass,green\n"
                "8,the inside of a,pineapple,yellow\n"
                "37,an,elephant,Gray\n")
COLOR_TERMS = "object,color\nash,grey\ncoal,black\nsky,blue\n"
SIZE_PAIRS = "sofa cat\n\nelephant butterfly\n"


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """The suite layout: DIR/memorycolor/, DIR/colorterms/, DIR/relativesize/."""
    root = tmp_path_factory.mktemp("crossmodal")
    for folder, name, text in (("memorycolor", "memory_color_data.csv", MEMORY_COLOR),
                               ("colorterms", "color-concrete-objects.csv", COLOR_TERMS),
                               ("relativesize", "sizePairsFull.txt", SIZE_PAIRS)):
        (root / folder).mkdir()
        (root / folder / name).write_text(text)
    return root


def files(world) -> dict:
    return {"memorycolor": world / "memorycolor" / "memory_color_data.csv",
            "colorterms": world / "colorterms" / "color-concrete-objects.csv",
            "relativesize": world / "relativesize" / "sizePairsFull.txt",
            "relativesize-both": world / "relativesize" / "sizePairsFull.txt"}


def rendered(name, path, shots=0):
    """Each item as (id, [context + continuation of every option])."""
    items = get_task(name).queries(Inputs(annotations=str(path), train=str(path), shots=shots))
    return [(item.id, ["".join(text for kind, text in o.context) + o.continuation for o in item.options])
            for item in items]


def predictions(path, rows):
    path.write_text("".join(json.dumps({"id": i, "loglikelihoods": lls}) + "\n" for i, lls in rows))
    return str(path)


def test_registered_zero_shot_rank_tasks():
    for name in ("relativesize", "relativesize-both", "memorycolor", "colorterms"):
        assert name in task_names()
        task = get_task(name)
        assert (task.mode, task.metric, task.shots) == ("rank", "acc_pct", (0,))


def test_colour_prompts_and_candidates_are_the_papers(world):
    paths = files(world)
    memory = rendered("memorycolor", paths["memorycolor"])
    assert [i for i, _ in memory] == ["2", "3", "8", "37"]  # the file's Index
    assert [texts[COLOURS.index(c)] for (_, texts), c in zip(memory, ["blue", "green", "yellow", "grey"])] == [
        "The color of the ocean is? blue", "The color of grass is? green",
        "The color of the inside of a pineapple is? yellow", "The color of an elephant is? grey"]
    assert memory[0][1] == [f"The color of the ocean is? {c}" for c in COLOURS]
    terms = rendered("colorterms", paths["colorterms"])
    assert terms == [(str(line), [f"The color of {noun} is? {c}" for c in COLOURS])
                     for line, noun in ((2, "ash"), (3, "coal"), (4, "sky"))]  # id: the line number
    # the right answers (Doc.gold) as the files say, "Gray" read as "grey"
    from kosmos.tasks import colorterms, memorycolor
    from kosmos.tasks.multiple_choice import read_docs

    assert [COLOURS[d.gold] for d in read_docs(str(paths["memorycolor"]), memorycolor.parse)] == [
        "blue", "green", "yellow", "grey"]
    assert [COLOURS[d.gold] for d in read_docs(str(paths["colorterms"]), colorterms.parse)] == ["grey", "black", "blue"]


def test_relative_size_prompts(world):
    path = files(world)["relativesize"]
    assert rendered("relativesize", path) == [
        ("1", ["Is sofa larger than cat? No", "Is sofa larger than cat? Yes"]),
        ("3", ["Is elephant larger than butterfly? No", "Is elephant larger than butterfly? Yes"])]
    assert [i for i, _ in rendered("relativesize-both", path)] == ["1", "1r", "3", "3r"]
    assert rendered("relativesize-both", path)[1] == ("1r", ["Is cat larger than sofa? No", "Is cat larger than sofa? Yes"])
    # few-shot comes with the multiple-choice machinery: the demonstration is the other pair, answered
    one_shot = rendered("relativesize", path, shots=1)
    assert one_shot[0][1][1] == "Is elephant larger than butterfly? Yes\n\nIs sofa larger than cat? Yes"


def test_accuracy_by_hand(world, tmp_path):
    paths = files(world)
    low = [-10.0] * 11

    def lls(**values):
        row = list(low)
        for colour, value in values.items():
            row[COLOURS.index(colour)] = value
        return row

    rows = [("2", lls(blue=-1.0)),                     # right by acc and acc_norm
            ("3", lls(red=-3.0, green=-4.0)),          # acc: red (-3 > -4); acc_norm: green (-0.8 > -1.0), right
            ("8", lls(pink=-4.0, yellow=-4.0)),        # acc: a tie, the first of the candidates (yellow) wins
            ("37", lls(pink=-4.0, grey=-4.0))]         # a tie again: pink comes first, wrong
    inputs = Inputs(annotations=str(paths["memorycolor"]))
    result = get_task("memorycolor").score(predictions(tmp_path / "m.jsonl", rows), inputs)
    # acc_norm: 8 -> yellow -4/6 vs pink -4/4: yellow; 37 -> pink -1.0 vs grey -1.0: pink
    assert result == {"acc_pct": 50.0, "acc_norm_pct": 75.0, "total": 4, "missing": 0}
    # a missing prediction counts as wrong
    result = get_task("colorterms").score(predictions(tmp_path / "c.jsonl", [("4", lls(blue=-0.5))]),
                                          Inputs(annotations=str(paths["colorterms"])))
    assert result == {"acc_pct": 33.33, "acc_norm_pct": 33.33, "total": 3, "missing": 2}
    # RelativeSize: [No, Yes]; a tie counts as No (VaLM counts Yes only when P(Yes) > P(No))
    pairs = Inputs(annotations=str(paths["relativesize"]))
    result = get_task("relativesize").score(predictions(tmp_path / "r.jsonl", [("1", [-2.0, -1.0]), ("3", [-1.0, -1.0])]),
                                            pairs)
    assert result["acc_pct"] == 50.0
    # always Yes: 100% asked one way, 50% asked both ways
    always_yes = [(i, [-2.0, -1.0]) for i in ("1", "1r", "3", "3r")]
    assert get_task("relativesize").score(predictions(tmp_path / "y.jsonl", always_yes), pairs)["acc_pct"] == 100.0
    assert get_task("relativesize-both").score(predictions(tmp_path / "y.jsonl", always_yes), pairs)["acc_pct"] == 50.0


@pytest.mark.parametrize("name, text, message", [
    ("memorycolor", MEMORY_COLOR + "40,,lavender,teal\n",
     r":6: colour 'teal' is not one of the 11 basic colours \(red, white,"),
    ("memorycolor", "Index,Descriptor,Thing,Color\n1,a,sunflower,yellow\n", r":2: missing field 'Item'"),
    ("colorterms", "object,color\nash,grey\n,black\n", r":3: the object is empty"),
    ("relativesize", "sofa cat\nfire truck cat\n",
     r":2: expected two objects, the larger then the smaller, got 'fire truck cat'"),
])
def test_a_malformed_file_is_one_line_naming_file_and_line(tmp_path, name, text, message):
    bad = tmp_path / "bad.csv"
    bad.write_text(text)
    with pytest.raises(ValueError, match=rf"^annotations {bad}{message}") as error:
        get_task(name).queries(Inputs(annotations=str(bad)))
    assert "\n" not in str(error.value)


def test_the_suite_runs_them_with_a_tiny_model(world, tmp_path):
    """`kosmos eval --suite kosmos1` finds the three folders; each task's acc is the argmax of the log-likelihoods
    the tiny random model gave, against the files' answers."""
    from test_kosmos_rank import tiny_model

    from kosmos.cli import main

    model, processor = tiny_model()
    model.save_pretrained(tmp_path / "model")
    processor.save_pretrained(tmp_path / "model")
    out = tmp_path / "out"
    assert main(["eval", "--suite", "kosmos1", "--data", str(world), "--model", str(tmp_path / "model"),
                 "--output", str(out), "--threads", "1"]) == 0
    answers = {"memorycolor": {"2": "blue", "3": "green", "8": "yellow", "37": "grey"},
               "colorterms": {"2": "grey", "3": "black", "4": "blue"},
               "relativesize": {"1": "Yes", "3": "Yes"},
               "relativesize-both": {"1": "Yes", "1r": "No", "3": "Yes", "3r": "No"}}
    for name, gold in answers.items():
        summary = json.loads((out / f"{name}.json").read_text())
        assert [(r["shots"], r["items"]) for r in summary["runs"]] == [(0, len(gold))]
        rows = [json.loads(line) for line in (out / name / "0shot_trial0.jsonl").read_text().splitlines()]
        candidates = ["No", "Yes"] if name.startswith("relativesize") else COLOURS
        hits = 0
        for row in rows:
            lls = row["loglikelihoods"]
            assert len(lls) == len(candidates) and len(set(lls)) > 1  # scored, not constant
            best = max(range(len(lls)), key=lambda i: (lls[i], -i))
            hits += candidates[best] == gold[str(row["id"])]
        assert summary["runs"][0]["mean"] == round(100 * hits / len(gold), 2)
    table = (out / "results.md").read_text()
    for name in answers:
        assert f"| {name} | acc_pct |" in table
