"""Visual question answering (VQAv2 questions + annotations json; Kosmos-1 and Kosmos-2 section 4).
Few-shot: k ``(image, "Question: {q} Answer: {a}")`` demonstrations from the training split."""
from __future__ import annotations

import json
import os
from collections import Counter

from kosmos.evaluate.generate import Decoding, Query, clean_answer
from kosmos.tasks.base import Inputs, Task, atomic_write, first_existing

DECODING = Decoding("Question: {question} Answer:", max_new_tokens=10)
DEMONSTRATION = "Question: {question} Answer: {answer}"
STOPS = ("Question:", "Answer:")


def vqa_prompt(question: str) -> str:
    return DECODING.prompt.format(question=question.strip())


def demonstration_answer(annotation: dict) -> str:
    """VQAv2's ``multiple_choice_answer`` (the most frequent of the ten), else the most frequent answer."""
    if isinstance(annotation.get("multiple_choice_answer"), str):
        return annotation["multiple_choice_answer"]
    answers = [a["answer"] for a in annotation.get("answers", []) if isinstance(a, dict) and isinstance(a.get("answer"), str)]
    if not answers:
        raise ValueError(f"annotation of question {annotation.get('question_id')!r} has no answer")
    return Counter(answers).most_common(1)[0][0]


def _demonstration_pool(inputs: Inputs) -> list:
    from kosmos.evaluate.fewshot import document_key
    from kosmos.evaluate.formats.common import load_json
    from kosmos.evaluate.formats.vqa import read_questions

    if not inputs.train or not inputs.train_questions:
        raise ValueError(f"{inputs.shots}-shot VQA needs --train (training annotations json) and --train-questions")
    questions = read_questions(inputs.train_questions, "train questions")
    annotations = load_json(inputs.train, "train")
    if not isinstance(annotations, dict) or not isinstance(annotations.get("annotations"), list):
        raise ValueError(f"train {inputs.train}: expected the VQA annotations json ('annotations' list)")
    answers = {a.get("question_id"): demonstration_answer(a) for a in annotations["annotations"] if isinstance(a, dict)}
    subtype = questions.get("data_subtype", "train2014")
    folder = inputs.train_images or inputs.images
    return [(document_key(inputs.train_questions, q["question_id"]), (os.path.join(folder, inputs.image_template.format(data_subtype=subtype, image_id=q["image_id"])),
                                q["question"], answers[q["question_id"]]))
            for q in questions["questions"] if q["question_id"] in answers]


def queries_from(questions: dict, images_dir: str, pool=(), inputs: Inputs = Inputs()) -> list[Query]:
    """One query per question; ``pool``: ``(document_key(train questions, question id), (path, question,
    answer))`` demonstrations."""
    from kosmos.evaluate.fewshot import demonstrations, document_key

    subtype = questions.get("data_subtype", "val2014")
    out = []
    for q in questions["questions"]:
        segments = []
        query_key = document_key(inputs.questions, q["question_id"])
        for path, question, answer in demonstrations(pool, inputs.shots, inputs.seed, inputs.trial, q["question_id"],
                                                     query_key):
            segments += [("image", path), ("text", DEMONSTRATION.format(question=question.strip(), answer=answer))]
        image = os.path.join(images_dir, inputs.image_template.format(data_subtype=subtype, image_id=q["image_id"]))
        out.append(Query(q["question_id"], image, vqa_prompt(q["question"]), "vqa", tuple(segments)))
    return out


def queries(inputs: Inputs) -> list[Query]:
    from kosmos.evaluate.formats.vqa import read_questions

    questions = read_questions(inputs.questions, "questions")
    return queries_from(questions, inputs.images, _demonstration_pool(inputs) if inputs.shots else [], inputs)


def write(results: list, path, inputs: Inputs) -> None:
    stops = STOPS if inputs.shots else ()
    atomic_write(path, lambda h: json.dump(
        [{"question_id": r["id"], "answer": clean_answer(r["generated"], stops)} for r in results], h))


def score_vqa(predictions: str, annotations: str, questions: str, version: str = "2021") -> dict:
    """VQAv2 accuracy of an official results file (``[{"question_id", "answer"}]``)."""
    from kosmos.evaluate.formats.predictions import read_results_list
    from kosmos.evaluate.formats.vqa import read_annotations, read_question_ids
    from kosmos.evaluate.metrics.vqa import vqa_accuracy

    results = read_results_list(predictions, "question_id", "answer")
    return vqa_accuracy(results, read_annotations(annotations), read_question_ids(questions), version)


def score(predictions: str, inputs: Inputs) -> dict:
    if not inputs.questions:
        raise ValueError("vqa needs --questions (the official questions json) as well as --annotations")
    return score_vqa(predictions, inputs.annotations, inputs.questions, version=inputs.option("vqa_eval", "2021"))


def find(root):
    """Suite layout: ``vqa/questions.json``, ``vqa/annotations.json`` (+ ``train_questions.json``,
    ``train_annotations.json``), images in ``vqa/images``."""
    folder = root / "vqa"
    questions, annotations = first_existing(folder, "questions.json"), first_existing(folder, "annotations.json")
    if questions is None or annotations is None:
        return None
    train, train_q = first_existing(folder, "train_annotations.json"), first_existing(folder, "train_questions.json")
    return Inputs(annotations=str(annotations), questions=str(questions), images=str(folder / "images"),
                  train=str(train) if train else None, train_questions=str(train_q) if train_q else None)


TASK = Task(
    name="vqa", benchmark="VQAv2 (questions + annotations json)", mode="generate", prompt=DECODING.prompt,
    needs=("images", "questions"), metric="accuracy_pct", queries=queries, score=score, write=write,
    decoding=DECODING, shots=(0, 2, 4), suffix="json", find=find, shot_needs=("train", "train_questions"),
    demonstrations="train split (--train annotations, --train-questions): (image, 'Question: {q} Answer: {a}'), "
                   "a = multiple_choice_answer",
    notes="greedy; few-shot answers cut at a following 'Question:' / 'Answer:'")
