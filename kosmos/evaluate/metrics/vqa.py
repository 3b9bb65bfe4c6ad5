"""VQA accuracy by GT-Vision-Lab/VQA ``PythonEvaluationTools/vqaEvaluation/vqaEval.py`` (2021 version by default,
or 2016): answer processing and min(1, matching other answers / 3). Accuracies are percent, keyed ``*_pct``."""
from __future__ import annotations

import re
from collections import defaultdict
from typing import Any, Sequence

VQA_EVALS = ("2021", "2016")

CONTRACTIONS = {
    "aint": "ain't", "arent": "aren't", "cant": "can't", "couldve": "could've", "couldnt": "couldn't",
    "couldn'tve": "couldn't've", "couldnt've": "couldn't've", "didnt": "didn't", "doesnt": "doesn't",
    "dont": "don't", "hadnt": "hadn't", "hadnt've": "hadn't've", "hadn'tve": "hadn't've", "hasnt": "hasn't",
    "havent": "haven't", "hed": "he'd", "hed've": "he'd've", "he'dve": "he'd've", "hes": "he's",
    "howd": "how'd", "howll": "how'll", "hows": "how's", "Id've": "I'd've", "I'dve": "I'd've", "Im": "I'm",
    "Ive": "I've", "isnt": "isn't", "itd": "it'd", "itd've": "it'd've", "it'dve": "it'd've", "itll": "it'll",
    "let's": "let's", "maam": "ma'am", "mightnt": "mightn't", "mightnt've": "mightn't've",
    "mightn'tve": "mightn't've", "mightve": "might've", "mustnt": "mustn't", "mustve": "must've",
    "neednt": "needn't", "notve": "not've", "oclock": "o'clock", "oughtnt": "oughtn't",
    "ow's'at": "'ow's'at", "'ows'at": "'ow's'at", "'ow'sat": "'ow's'at", "shant": "shan't",
    "shed've": "she'd've", "she'dve": "she'd've", "she's": "she's", "shouldve": "should've",
    "shouldnt": "shouldn't", "shouldnt've": "shouldn't've", "shouldn'tve": "shouldn't've",
    "somebody'd": "somebodyd", "somebodyd've": "somebody'd've", "somebody'dve": "somebody'd've",
    "somebodyll": "somebody'll", "somebodys": "somebody's", "someoned": "someone'd",
    "someoned've": "someone'd've", "someone'dve": "someone'd've", "someonell": "someone'll",
    "someones": "someone's", "somethingd": "something'd", "somethingd've": "something'd've",
    "something'dve": "something'd've", "somethingll": "something'll", "thats": "that's", "thered": "there'd",
    "thered've": "there'd've", "there'dve": "there'd've", "therere": "there're", "theres": "there's",
    "theyd": "they'd", "theyd've": "they'd've", "they'dve": "they'd've", "theyll": "they'll",
    "theyre": "they're", "theyve": "they've", "twas": "'twas", "wasnt": "wasn't", "wed've": "we'd've",
    "we'dve": "we'd've", "weve": "we've", "werent": "weren't", "whatll": "what'll", "whatre": "what're",
    "whats": "what's", "whatve": "what've", "whens": "when's", "whered": "where'd", "wheres": "where's",
    "whereve": "where've", "whod": "who'd", "whod've": "who'd've", "who'dve": "who'd've", "wholl": "who'll",
    "whos": "who's", "whove": "who've", "whyll": "why'll", "whyre": "why're", "whys": "why's",
    "wont": "won't", "wouldve": "would've", "wouldnt": "wouldn't", "wouldnt've": "wouldn't've",
    "wouldn'tve": "wouldn't've", "yall": "y'all", "yall'll": "y'all'll", "y'allll": "y'all'll",
    "yall'd've": "y'all'd've", "y'alld've": "y'all'd've", "y'all'dve": "y'all'd've", "youd": "you'd",
    "youd've": "you'd've", "you'dve": "you'd've", "youll": "you'll", "youre": "you're", "youve": "you've",
}
NUMBER_WORDS = {"none": "0", "zero": "0", "one": "1", "two": "2", "three": "3", "four": "4", "five": "5",
                "six": "6", "seven": "7", "eight": "8", "nine": "9", "ten": "10"}
ARTICLES = {"a", "an", "the"}
PUNCTUATION = [";", r"/", "[", "]", '"', "{", "}", "(", ")", "=", "+", "\\", "_", "-", ">", "<", "@", "`",
               ",", "?", "!"]
_PERIOD_STRIP = re.compile(r"(?!<=\d)(\.)(?!\d)")
_COMMA_STRIP = re.compile(r"(\d)(,)(\d)")


def vqa_process_punctuation(text: str) -> str:
    """Official rule: a punctuation mark next to a space (or any, in a text with a digit,digit comma) is
    removed, otherwise replaced by a space; periods not inside numbers are removed."""
    out = text
    for p in PUNCTUATION:
        if (p + " " in text or " " + p in text) or _COMMA_STRIP.search(text) is not None:
            out = out.replace(p, "")
        else:
            out = out.replace(p, " ")
    return _PERIOD_STRIP.sub("", out, re.UNICODE)


def vqa_process_digit_article(text: str) -> str:
    """Official rule: lower case, number words -> digits, articles dropped, contractions restored."""
    words = []
    for word in text.lower().split():
        word = NUMBER_WORDS.get(word, word)
        if word not in ARTICLES:
            words.append(word)
    return " ".join(CONTRACTIONS.get(w, w) for w in words)


def vqa_normalise_answer(answer: str) -> str:
    """Whitespace cleaned, then punctuation, then number words / articles / contractions."""
    answer = answer.replace("\n", " ").replace("\t", " ").strip()
    return vqa_process_digit_article(vqa_process_punctuation(answer))


def vqa_question_accuracy(answer: str, gt_answers: Sequence, version: str = "2021") -> float:
    """Mean over the ten ground-truth answers of min(1, matching OTHER answers / 3), by ``vqaEval.py``.

    ``gt_answers``: the annotation's answer dicts (``{"answer", "answer_id", ...}``; as in the official code
    "other" means the dicts that differ from this one) or plain strings. ``version``:

    - ``"2021"`` (after GT-Vision-Lab/VQA commit a013f00, "Fixed processing answers bug"): answers are
      whitespace-cleaned; only when the ground-truth answers are not all the same are both the prediction and
      the ground truth processed (punctuation, then number words, articles, contractions);
    - ``"2016"``: the prediction is always processed; the ground truth gets only the punctuation processing,
      and only when its answers are not all the same.
    """
    if version not in VQA_EVALS:
        raise ValueError(f"vqa eval version must be one of {VQA_EVALS}, got {version!r}")
    gts = [dict(a) if isinstance(a, dict) else {"answer": a, "answer_id": i} for i, a in enumerate(gt_answers)]
    if version == "2016":
        predicted = vqa_normalise_answer(answer)
        if len({g["answer"] for g in gts}) > 1:
            for g in gts:
                g["answer"] = vqa_process_punctuation(g["answer"])
    else:
        for g in gts:
            g["answer"] = g["answer"].replace("\n", " ").replace("\t", " ").strip()
        predicted = answer.replace("\n", " ").replace("\t", " ").strip()
        if len({g["answer"] for g in gts}) > 1:
            for g in gts:
                g["answer"] = vqa_process_digit_article(vqa_process_punctuation(g["answer"]))
            predicted = vqa_process_digit_article(vqa_process_punctuation(predicted))
    scores = []
    for g in gts:
        others = [o for o in gts if o != g]
        scores.append(min(1.0, sum(o["answer"] == predicted for o in others) / 3.0))
    return sum(scores) / len(scores) if scores else 0.0


def vqa_accuracy(results: list[dict], annotations: dict, questions: dict, version: str = "2021") -> dict[str, Any]:
    """VQAv2 accuracy (percent, rounded to 2 places as vqaEval.py does) overall and by answer type.

    ``results``: the official results list ``[{"question_id", "answer"}]``; ``annotations`` / ``questions``:
    the official json files. A question without a result counts as wrong and is counted in ``missing`` (the
    official code refuses such a file); a result for an unknown question or a second result for one
    question is a ValueError."""
    by_qid = {a["question_id"]: a for a in annotations["annotations"]}
    answers = {}
    for index, r in enumerate(results):
        qid = r["question_id"]
        if qid not in by_qid:
            raise ValueError(f"results[{index}]: question_id {qid!r} is not in the annotations")
        if qid in answers:
            raise ValueError(f"results[{index}]: a second answer for question_id {qid!r}")
        answers[qid] = r["answer"]
    per_type: dict[str, list[float]] = defaultdict(list)
    scores = []
    for question in questions["questions"]:
        if question["question_id"] not in by_qid:
            raise ValueError(f"question {question['question_id']!r} has no annotation")
        ann = by_qid[question["question_id"]]
        score = vqa_question_accuracy(answers.get(question["question_id"], ""), ann["answers"], version)
        scores.append(score)
        per_type[ann.get("answer_type", "all")].append(score)
    n = len(scores)
    return {"accuracy_pct": round(100.0 * sum(scores) / n, 2) if n else 0.0, "total": n,
            "missing": sum(q["question_id"] not in answers for q in questions["questions"]),
            "per_answer_type_pct": {t: round(100.0 * sum(v) / len(v), 2) for t, v in sorted(per_type.items())},
            "vqa_eval": version}
