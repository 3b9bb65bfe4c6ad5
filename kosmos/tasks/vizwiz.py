"""VizWiz VQA (Kosmos-1 section 4.2): the public annotation json (``val.json``: a list of ``{"image", "question",
"answers": [{"answer", "answer_confidence"}] x 10, "answer_type", "answerable"}``), images in a folder; the VQA
prompt "Question: {q} Answer:", greedy, open-ended. Few-shot: k ``(image, "Question: {q} Answer: {a}")``
demonstrations from the training split's json (``--train``), ``a`` its most frequent answer.

Metric: VQA accuracy (VizWiz's evaluation code is a copy of VQAv2's ``vqaEval.py``): the mean over the ten answers
of min(1, matching other answers / 3), answers processed by ``kosmos.evaluate.metrics.vqa.vqa_question_accuracy`` (the 2021
rules unless the ``vqa_eval`` option says 2016), percent; predictions are written in the challenge's result format
``[{"image", "answer"}]``."""
from __future__ import annotations

import json
import os
from collections import Counter

from kosmos.evaluate.generate import Query, clean_answer
from kosmos.tasks.base import Inputs, Task, atomic_write, first_existing
from kosmos.tasks.vqa import DECODING, DEMONSTRATION, STOPS, vqa_prompt


def read_annotations(path: str, what: str = "annotations") -> list[dict]:
    """The VizWiz json, checked: ``[{"image", "question", "answers": [str, ...], "answer_type"}]``."""
    from kosmos.evaluate.formats.common import load_json

    data = load_json(path, what)
    if not isinstance(data, list):
        raise ValueError(f"{what} {path}: expected the VizWiz json (a list of {{'image', 'question', 'answers'}})")
    out = []
    for index, entry in enumerate(data):
        where = f"{what} {path}: entry {index}"
        if not isinstance(entry, dict) or not isinstance(entry.get("image"), str) or not isinstance(entry.get("question"), str):
            raise ValueError(f"{where}: needs an 'image' and a 'question' string")
        answers = entry.get("answers", [])
        if not isinstance(answers, list) or not all(isinstance(a, dict) and isinstance(a.get("answer"), str) for a in answers):
            raise ValueError(f"{where}: 'answers' must be a list of {{'answer': str, ...}}")
        out.append({"image": entry["image"], "question": entry["question"], "answers": [a["answer"] for a in answers],
                    "answer_type": entry.get("answer_type", "all")})
    return out


def demonstration_answer(answers: list[str]) -> str:
    """The most frequent of the ten answers (the first of equals in file order)."""
    if not answers:
        raise ValueError("a demonstration needs answers")
    return Counter(answers).most_common(1)[0][0]


def queries(inputs: Inputs) -> list[Query]:
    from kosmos.evaluate.fewshot import demonstrations, document_key

    entries = read_annotations(inputs.annotations)
    pool = []
    if inputs.shots:
        if not inputs.train:
            raise ValueError(f"{inputs.shots}-shot VizWiz needs --train (the training split's json)")
        folder = inputs.train_images or inputs.images
        pool = [(document_key(inputs.train, e["image"]), (os.path.join(folder, e["image"]), e["question"], demonstration_answer(e["answers"])))
                for e in read_annotations(inputs.train, "train") if e["answers"]]
    out = []
    for entry in entries:
        segments = []
        query_key = document_key(inputs.annotations, entry["image"])
        for path, question, answer in demonstrations(pool, inputs.shots, inputs.seed, inputs.trial, entry["image"],
                                                     query_key):
            segments += [("image", path), ("text", DEMONSTRATION.format(question=question.strip(), answer=answer))]
        out.append(Query(entry["image"], os.path.join(inputs.images, entry["image"]), vqa_prompt(entry["question"]),
                         "vizwiz", tuple(segments)))
    return out


def write(results: list, path, inputs: Inputs) -> None:
    stops = STOPS if inputs.shots else ()
    atomic_write(path, lambda h: json.dump(
        [{"image": r["id"], "answer": clean_answer(r["generated"], stops)} for r in results], h))


def score(predictions: str, inputs: Inputs) -> dict:
    """Accuracy (percent, overall and per answer type); a question without an answer is wrong (``missing``);
    an answer for an image not in the annotations, or a second one, is an error naming the entry."""
    from kosmos.evaluate.formats.common import load_json
    from kosmos.evaluate.metrics.vqa import vqa_question_accuracy

    results = load_json(predictions, "predictions")
    if not isinstance(results, list):
        raise ValueError(f"predictions {predictions}: expected a JSON list of {{'image', 'answer'}}")
    version = inputs.option("vqa_eval", "2021")
    entries = read_annotations(inputs.annotations)
    known = {e["image"] for e in entries}
    answers: dict[str, str] = {}
    for index, row in enumerate(results):
        where = f"predictions {predictions}: entry {index}"
        if not isinstance(row, dict) or not isinstance(row.get("image"), str) or not isinstance(row.get("answer"), str):
            raise ValueError(f"{where}: expected an object with an 'image' and an 'answer' string")
        if row["image"] not in known:
            raise ValueError(f"{where}: image {row['image']!r} is not in the annotations")
        if row["image"] in answers:
            raise ValueError(f"{where}: a second answer for image {row['image']!r}")
        answers[row["image"]] = row["answer"]
    per_type: dict[str, list[float]] = {}
    scores = []
    for entry in entries:
        value = vqa_question_accuracy(answers.get(entry["image"], ""), entry["answers"], version) if entry["answers"] else 0.0
        scores.append(value)
        per_type.setdefault(entry["answer_type"], []).append(value)
    n = max(1, len(scores))
    return {"accuracy_pct": round(100 * sum(scores) / n, 2), "total": len(scores),
            "missing": sum(e["image"] not in answers for e in entries),
            "per_answer_type_pct": {t: round(100 * sum(v) / len(v), 2) for t, v in sorted(per_type.items())}}


def find(root):
    """Suite layout: ``DIR/vizwiz/val.json`` (+ ``train.json``), images in ``DIR/vizwiz/val/`` (and ``train/``)."""
    folder = root / "vizwiz"
    annotations = first_existing(folder, "val.json", "annotations.json")
    if annotations is None:
        return None
    train = first_existing(folder, "train.json")
    images = first_existing(folder, "val", "images") or folder
    train_images = first_existing(folder, "train")
    return Inputs(annotations=str(annotations), images=str(images), train=str(train) if train else None,
                  train_images=str(train_images) if train_images else None)


TASK = Task(
    name="vizwiz", benchmark="VizWiz VQA (the public annotation json)", mode="generate", prompt=DECODING.prompt,
    needs=("annotations", "images"), metric="accuracy_pct", queries=queries, score=score, write=write,
    decoding=DECODING, shots=(0, 2, 4), suffix="json", find=find,
    demonstrations="train split (--train, the training json): (image, 'Question: {q} Answer: {a}'), a = the most "
                   "frequent answer",
    notes="greedy; few-shot answers cut at a following 'Question:' / 'Answer:'")
