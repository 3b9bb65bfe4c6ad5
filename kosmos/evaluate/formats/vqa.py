"""VQAv2's question and annotation jsons (``v2_OpenEnded_mscoco_*_questions.json``, ``v2_mscoco_*_annotations.json``)."""
from __future__ import annotations

from kosmos.evaluate.formats.common import load_json


def read_questions(path, what: str = "questions") -> dict:
    """The questions json, each question checked for ``question_id``, ``image_id`` and its text."""
    data = load_json(path, what)
    if not isinstance(data, dict) or not isinstance(data.get("questions"), list):
        raise ValueError(f"{what} {path}: expected the VQA questions json ('questions' list)")
    for index, q in enumerate(data["questions"]):
        if not isinstance(q, dict) or "question_id" not in q or "image_id" not in q or not isinstance(q.get("question"), str):
            raise ValueError(f"{what} {path}: questions[{index}] needs 'question_id', 'image_id' and a 'question' string")
    return data


def read_question_ids(path, what: str = "questions") -> dict:
    """The questions json as scoring needs it: every question has a ``question_id``."""
    data = load_json(path, what)
    if not isinstance(data, dict) or not isinstance(data.get("questions"), list) \
            or not all(isinstance(q, dict) and "question_id" in q for q in data["questions"]):
        raise ValueError(f"{what} {path}: expected the VQA questions json ('questions' list)")
    return data


def read_annotations(path, what: str = "annotations") -> dict:
    """The annotations json, each annotation checked for ``question_id`` and its ten ``answers``."""
    data = load_json(path, what)
    if not isinstance(data, dict) or not isinstance(data.get("annotations"), list):
        raise ValueError(f"{what} {path}: expected the VQA annotations json ('annotations' list)")
    for index, ann in enumerate(data["annotations"]):
        if not isinstance(ann, dict) or "question_id" not in ann or not isinstance(ann.get("answers"), list) \
                or not ann["answers"] or not all(isinstance(a, dict) and isinstance(a.get("answer"), str)
                                                 for a in ann["answers"]):
            raise ValueError(f"{what} {path}: annotations[{index}] needs 'question_id' and "
                             f"'answers' [{{'answer': str}}, ...]")
    return data
