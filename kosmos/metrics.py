"""Evaluation metrics (GRIT_SPEC section 6), computed from saved predictions.

REC accuracy and Flickr30k Entities ANY-BOX recall read MDETR-format annotations (COCO-style json: one
``images`` entry per expression / sentence, ``annotations`` with ``bbox`` = [x, y, w, h] in pixels).
VQA accuracy follows the official ``vqaEval.py`` normalisation and leave-one-out averaging. METEOR and CIDEr
use pycocoevalcap (its PTB tokenizer and METEOR need Java).
"""
from __future__ import annotations

import re
import shutil
from collections import defaultdict
from typing import Any, Iterable, Sequence

Box = tuple[float, float, float, float]


# --------------------------------------------------------------------------- boxes

def iou(a: Box, b: Box) -> float:
    """Intersection over union of two xyxy boxes."""
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def xywh_to_xyxy(box: Sequence[float]) -> Box:
    x, y, w, h = box
    return (x, y, x + w, y + h)


def to_pixels(box: Box, width: float, height: float, frame=(0.0, 0.0, 1.0, 1.0)) -> Box:
    """A normalised box in the model's view ``frame`` (x0, y0, w, h of the original image) -> pixels."""
    x0, y0, fw, fh = frame
    return ((x0 + box[0] * fw) * width, (y0 + box[1] * fh) * height,
            (x0 + box[2] * fw) * width, (y0 + box[3] * fh) * height)


def normalise_phrase(text: str) -> str:
    return " ".join(text.lower().split()).strip(" .,;:!?")


def phrase_boxes(text: str, phrase: str | None = None) -> list[Box]:
    """Boxes decoded from generated text, in order: those linked to a phrase equal to ``phrase`` (ignoring
    case, spacing and end punctuation), or all boxes when ``phrase`` is None. Parsed with the pipeline's
    parser."""
    from grit_pipeline.serialize import parse_grounded_text

    text = text.split("</image>")[-1]
    parsed = parse_grounded_text(text)
    if phrase is not None:
        wanted = normalise_phrase(phrase)
        matching = [b for e in parsed.entities for b in e.boxes
                    if normalise_phrase(parsed.caption[e.start:e.end]) == wanted]
        return matching
    return [b for e in parsed.entities for b in e.boxes]


# --------------------------------------------------------------------------- REC

def rec_accuracy(predictions: dict[Any, dict], annotations: dict, iou_threshold: float = 0.5) -> dict[str, Any]:
    """REC accuracy: hit when the FIRST box of the expression's phrase has IoU >= 0.5 with the ground truth;
    no prediction or no box is a miss. ``predictions`` maps image-entry id -> {"text", optional "frame"}."""
    gt = {a["image_id"]: a for a in annotations["annotations"]}
    hits = no_box = missing = 0
    images = annotations["images"]
    for image in images:
        pred = predictions.get(image["id"])
        if pred is None:
            missing += 1
            continue
        boxes = phrase_boxes(pred["text"], image.get("caption"))
        if not boxes:
            no_box += 1
            continue
        box = to_pixels(boxes[0], image["width"], image["height"], pred.get("frame") or (0, 0, 1, 1))
        if iou(box, xywh_to_xyxy(gt[image["id"]]["bbox"])) >= iou_threshold:
            hits += 1
    n = len(images)
    return {"accuracy": 100.0 * hits / n if n else 0.0, "hits": hits, "total": n,
            "no_box": no_box, "missing_predictions": missing}


def mean_box_accuracy(train_boxes: Iterable[Box], annotations: dict, iou_threshold: float = 0.5) -> dict:
    """Accuracy of always answering the mean normalised box of ``train_boxes`` (a baseline for REC)."""
    boxes = list(train_boxes)
    if not boxes:
        raise ValueError("no training boxes for the mean-box baseline")
    mean = tuple(sum(b[i] for b in boxes) / len(boxes) for i in range(4))
    gt = {a["image_id"]: a for a in annotations["annotations"]}
    hits = sum(
        iou(to_pixels(mean, im["width"], im["height"]), xywh_to_xyxy(gt[im["id"]]["bbox"])) >= iou_threshold
        for im in annotations["images"])
    n = len(annotations["images"])
    return {"accuracy": 100.0 * hits / n if n else 0.0, "hits": hits, "total": n, "mean_box": list(mean)}


# --------------------------------------------------------------------------- Flickr30k Entities

def flickr_queries(annotations: dict) -> list[dict[str, Any]]:
    """One query per phrase of each sentence entry (``tokens_positive_eval``), with its ground-truth boxes
    and the caption words before it; phrases without a box are skipped (ANY-BOX protocol).
    Query id: ``"{image_entry_id}_{phrase_index}"``."""
    by_image = defaultdict(list)
    for ann in annotations["annotations"]:
        by_image[ann["image_id"]].append(ann)
    queries = []
    for image in annotations["images"]:
        caption = image["caption"]
        for index, spans in enumerate(image.get("tokens_positive_eval") or []):
            spans = [tuple(s) for s in spans]
            boxes = [xywh_to_xyxy(a["bbox"]) for a in by_image[image["id"]]
                     if any(tuple(s) in spans or _overlaps(s, spans) for s in a.get("tokens_positive", []))]
            if not boxes or not spans:
                continue
            start, end = min(s[0] for s in spans), max(s[1] for s in spans)
            queries.append({"id": f"{image['id']}_{index}", "image": image, "phrase": caption[start:end],
                            "prefix": caption[:start].rstrip(), "boxes": boxes})
    return queries


def _overlaps(span, spans) -> bool:
    return any(span[0] < e and s < span[1] for s, e in spans)


def flickr_recall(predictions: dict[Any, dict], annotations: dict, ks=(1, 5, 10),
                  iou_threshold: float = 0.5) -> dict[str, Any]:
    """ANY-BOX R@k: a query is a hit at k when any of its first k predicted boxes has IoU >= 0.5 with any
    ground-truth box of the phrase."""
    queries = flickr_queries(annotations)
    hits = {k: 0 for k in ks}
    for query in queries:
        pred = predictions.get(query["id"])
        if pred is None:
            continue
        image = query["image"]
        frame = pred.get("frame") or (0, 0, 1, 1)
        boxes = [to_pixels(b, image["width"], image["height"], frame) for b in phrase_boxes(pred["text"], query["phrase"])]
        for k in ks:
            if any(iou(b, g) >= iou_threshold for b in boxes[:k] for g in query["boxes"]):
                hits[k] += 1
    n = len(queries)
    return {**{f"R@{k}": 100.0 * hits[k] / n if n else 0.0 for k in ks}, "total": n}


# --------------------------------------------------------------------------- VQA (official vqaEval.py rules)

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
    answer = answer.replace("\n", " ").replace("\t", " ").strip()
    return vqa_process_digit_article(vqa_process_punctuation(answer))


def vqa_question_accuracy(answer: str, gt_answers: Sequence[str]) -> float:
    """Mean over the leave-one-out subsets of the ground-truth answers of min(1, matches / 3)."""
    predicted = vqa_normalise_answer(answer)
    gts = list(gt_answers)
    if len(set(gts)) > 1:
        gts = [vqa_process_punctuation(g) for g in gts]
    scores = []
    for i in range(len(gts)):
        others = gts[:i] + gts[i + 1:]
        scores.append(min(1.0, sum(g == predicted for g in others) / 3.0))
    return sum(scores) / len(scores) if scores else 0.0


def vqa_accuracy(results: list[dict], annotations: dict, questions: dict) -> dict[str, Any]:
    """VQAv2 accuracy (percent) overall and by answer type. ``results``: [{"question_id", "answer"}];
    ``annotations``/``questions``: the official json files. Questions without a result count as wrong."""
    answers = {r["question_id"]: r["answer"] for r in results}
    by_qid = {a["question_id"]: a for a in annotations["annotations"]}
    per_type: dict[str, list[float]] = defaultdict(list)
    scores = []
    for question in questions["questions"]:
        ann = by_qid[question["question_id"]]
        score = vqa_question_accuracy(answers.get(question["question_id"], ""),
                                      [a["answer"] for a in ann["answers"]])
        scores.append(score)
        per_type[ann.get("answer_type", "all")].append(score)
    n = len(scores)
    return {"accuracy": round(100.0 * sum(scores) / n, 2) if n else 0.0, "total": n,
            "missing": sum(q["question_id"] not in answers for q in questions["questions"]),
            "per_answer_type": {t: round(100.0 * sum(v) / len(v), 2) for t, v in sorted(per_type.items())}}


# --------------------------------------------------------------------------- METEOR / CIDEr

class JavaMissingError(RuntimeError):
    pass


def require_java() -> None:
    if shutil.which("java") is None:
        raise JavaMissingError(
            "METEOR and the PTB tokenizer of pycocoevalcap run Java, and no `java` is on PATH. "
            "Install a JRE (e.g. `apt-get install openjdk-17-jre-headless`) and retry.")


def caption_metrics(candidates: dict[Any, str], references: dict[Any, list[str]],
                    metrics=("METEOR", "CIDEr")) -> dict[str, float]:
    """METEOR and CIDEr(-D) with pycocoevalcap (PTB-tokenized as the COCO caption evaluation does).
    Ids in ``candidates`` without references raise ValueError."""
    from pycocoevalcap.cider.cider import Cider
    from pycocoevalcap.tokenizer.ptbtokenizer import PTBTokenizer

    require_java()
    missing = set(candidates) - set(references)
    if missing:
        raise ValueError(f"{len(missing)} predictions have no references, e.g. {sorted(missing, key=str)[:3]}")
    ids = sorted(candidates, key=str)
    tokenizer = PTBTokenizer()
    gts = tokenizer.tokenize({i: [{"caption": r} for r in references[i]] for i in ids})
    res = tokenizer.tokenize({i: [{"caption": candidates[i]}] for i in ids})
    out = {}
    if "METEOR" in metrics:
        from pycocoevalcap.meteor.meteor import Meteor

        scorer = Meteor()
        try:
            out["METEOR"], _ = scorer.compute_score(gts, res)
        finally:
            _close_meteor(scorer)
    if "CIDEr" in metrics:
        out["CIDEr"], _ = Cider().compute_score(gts, res)
    return {k: round(100.0 * float(v), 2) for k, v in out.items()}


def _close_meteor(scorer) -> None:
    try:
        with scorer.lock:
            scorer.meteor_p.stdin.close()
            scorer.meteor_p.kill()
            scorer.meteor_p.wait()
    except Exception:
        pass
