"""Evaluation metrics (the Kosmos-2 paper's evaluation protocols, section 4), computed from saved predictions,
by the official scripts' rules.

Each default reproduces one official script (docs/evaluation.md lists them); stricter or more tolerant
variants are options:

- REC: microsoft/unilm ``kosmos-2/evaluation/refcoco/refexp_evaluate.py`` with its ``decode_string.py``:
  an ``<object>`` counts only when all its location groups are well formed, a box belongs to the expression
  when its phrase text equals the expression after ``str.strip()``, the FIRST such box must have IoU >= 0.5,
  computed in float32 (torch tensors built from Python floats); no box is a 0-area box (a miss).
- Flickr30k Entities: ``kosmos-2/evaluation/flickr_entities/flickr_entities_evaluate.py``: one query per
  ``tokens_positive_eval`` entry of MDETR's ``final_flickr_separateGT_*.json`` (its first span); the ground
  truth of a phrase is the boxes of the FIRST phrase of the sentence with the same text; IoU in float64;
  R@k: any of the first k matching boxes has IoU >= 0.5 with any ground-truth box.
- VQAv2: GT-Vision-Lab/VQA ``vqaEval.py``, in its 2021 version (default) or its 2016 version.
- Captions / REG: pycocoevalcap METEOR and CIDEr (PTB tokenizer and METEOR need Java); REG references
  drop non-ASCII characters as lichengunc/refer ``refEvaluation.py`` does.
"""
from __future__ import annotations

import re
import shutil
from collections import defaultdict
from typing import Any, Iterable, Sequence

Box = tuple[float, float, float, float]
PHRASE_MATCHES = ("exact", "normalised")   # official str.strip() equality | case/space/end-punctuation blind
IOU_DTYPES = ("float32", "float64")
FLICKR_GT_BOXES = ("phrase-text", "span")  # official: first phrase with the same text | the phrase's own span
VQA_EVALS = ("2021", "2016")


# --------------------------------------------------------------------------- boxes

def iou(a: Box, b: Box) -> float:
    """Intersection over union of two xyxy boxes (float64)."""
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def iou_matrix(predicted: Sequence[Box], truth: Sequence[Box], dtype: str = "float64"):
    """Pairwise IoU [len(predicted), len(truth)] as a list of lists, computed in ``dtype`` with
    ``torchvision.ops.box_iou`` (the boxes are rounded to ``dtype`` first, as ``torch.as_tensor`` of Python
    floats does in the official REC script). A 0/0 IoU (two 0-area boxes) is 0."""
    import torch
    from torchvision.ops import box_iou

    if dtype not in IOU_DTYPES:
        raise ValueError(f"iou dtype must be one of {IOU_DTYPES}, got {dtype!r}")
    torch_dtype = getattr(torch, dtype)
    values = box_iou(torch.tensor(list(predicted), dtype=torch_dtype).view(-1, 4),
                     torch.tensor(list(truth), dtype=torch_dtype).view(-1, 4))
    return torch.nan_to_num(values, nan=0.0).tolist()


def xywh_to_xyxy(box: Sequence[float]) -> Box:
    x, y, w, h = box
    return (x, y, x + w, y + h)


def to_pixels(box: Box, width: float, height: float, frame=(0.0, 0.0, 1.0, 1.0)) -> Box:
    """A normalised box in the model's view ``frame`` (x0, y0, w, h of the original image) -> pixels."""
    x0, y0, fw, fh = frame
    if tuple(frame) == (0.0, 0.0, 1.0, 1.0):  # the whole image: exactly the official ``x * width``
        return (box[0] * width, box[1] * height, box[2] * width, box[3] * height)
    return ((x0 + box[0] * fw) * width, (y0 + box[1] * fh) * height,
            (x0 + box[2] * fw) * width, (y0 + box[3] * fh) * height)


def normalise_phrase(text: str) -> str:
    return " ".join(text.lower().split()).strip(" .,;:!?")


_PAIR = r"<patch_index_\d+><patch_index_\d+>"
# The official decoder's pattern (decode_string.py): an optional phrase without '<' right before an object
# whose content is only well-formed location pairs joined by the delimiter; anything else is no match.
_OFFICIAL_OBJECT = re.compile(r"(?:(<phrase>([^<]+)</phrase>))?<object>((?:" + _PAIR
                              + r"</delimiter_of_multi_objects/>)*" + _PAIR + r")</object>")
_LOCATION = re.compile(r"<patch_index_(\d+)>")


def official_entities(text: str, grid: int = 32) -> list[tuple[str | None, Box]]:
    """(phrase text or None, normalised box) for each box of the generated text after ``</image>``, by the
    official decoder's rules: an object with any malformed location group gives no box at all."""
    from grit_pipeline.location import cells_to_box

    out = []
    for match in _OFFICIAL_OBJECT.finditer(text.split("</image>")[-1]):
        phrase = match.group(2) if match.group(1) else None
        for pair in match.group(3).split("</delimiter_of_multi_objects/>"):
            ul, lr = (int(v) for v in _LOCATION.findall(pair))
            out.append((phrase, cells_to_box(ul, lr, grid)))
    return out


def phrase_boxes(text: str, phrase: str | None = None, match: str = "exact", grid: int = 32) -> list[Box]:
    """Boxes decoded from generated text, in order: those linked to ``phrase`` (all when None).

    ``match="exact"``: the official decoder, phrase text equal after ``strip()``; ``"normalised"``: the
    pipeline's tolerant parser (a malformed group loses only itself), case, spacing and end punctuation
    ignored."""
    if match == "exact":
        return [box for name, box in official_entities(text, grid)
                if phrase is None or (name is not None and name.strip() == phrase.strip())]
    if match != "normalised":
        raise ValueError(f"phrase match must be one of {PHRASE_MATCHES}, got {match!r}")
    from grit_pipeline.serialize import parse_grounded_text

    parsed = parse_grounded_text(text.split("</image>")[-1], grid=grid)
    wanted = None if phrase is None else normalise_phrase(phrase)
    return [b for e in parsed.entities for b in e.boxes
            if wanted is None or normalise_phrase(parsed.caption[e.start:e.end]) == wanted]


# --------------------------------------------------------------------------- REC

def rec_accuracy(predictions, images: list[dict], truth: dict[Any, list[dict]], iou_threshold: float = 0.5,
                 match: str = "exact", iou_dtype: str = "float32") -> dict[str, Any]:
    """REC accuracy over ALL expressions (a missing prediction is a miss), by refexp_evaluate's rules.

    ``predictions``: an ``evalfiles.Predictions`` (or a dict id -> {"text", optional "frame"});
    ``images`` / ``truth``: ``evalfiles.coco_entries`` of an MDETR ``finetune_refcoco*.json``. Also reports
    the official script's two other columns (``upper_bound``: any matching box hits; ``mean_box``: the mean
    of the matching boxes hits) and how many predictions were missing or gave no box for the expression."""
    hits = upper = mean_hits = no_box = missing = 0
    for position, image in enumerate(images):
        pred = _lookup(predictions, image["id"], position)
        if pred is None:
            missing += 1
            continue
        boxes = _pixel_boxes(pred, image, image["caption"], match)
        if not boxes:
            no_box += 1
            continue
        gt = [xywh_to_xyxy(a["bbox"]) for a in truth.get(image["id"], [])][:1]
        if not gt:
            raise ValueError(f"expression {image['id']!r} has no ground-truth box in the annotations")
        ious = [row[0] for row in iou_matrix(boxes, gt, iou_dtype)]
        hits += ious[0] >= iou_threshold
        upper += max(ious) >= iou_threshold
        mean = tuple(sum(b[i] for b in boxes) / len(boxes) for i in range(4))
        mean_hits += iou_matrix([mean], gt, iou_dtype)[0][0] >= iou_threshold
    n = len(images)

    def percent(count):
        return 100.0 * count / n if n else 0.0

    return {"accuracy": percent(hits), "hits": hits, "total": n, "no_box": no_box, "missing_predictions": missing,
            "upper_bound": percent(upper), "mean_box": percent(mean_hits)}


def _pixel_boxes(prediction: dict, image: dict, phrase: str, match: str) -> list[Box]:
    """The prediction's boxes for ``phrase``, in pixels of the original image."""
    frame = prediction.get("frame") or (0.0, 0.0, 1.0, 1.0)
    return [to_pixels(b, image["width"], image["height"], frame)
            for b in phrase_boxes(prediction["text"], phrase, match)]


def _lookup(predictions, key, position: int):
    if hasattr(predictions, "positional"):
        return predictions.get(key, position)
    return predictions.get(key)


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

def flickr_queries(images: list[dict], truth: dict[Any, list[dict]], entities=None,
                   gt_boxes: str = "phrase-text") -> list[dict[str, Any]]:
    """One query per ``tokens_positive_eval`` entry of each sentence entry, in file order (the order of the
    released evaluation's prediction lines), with its ground-truth boxes (pixel xyxy) and the caption
    words before it. Query id: ``"{entry id}_{index}"``.

    Ground truth: from the Flickr30k Entities XML when ``entities`` (``evalfiles.FlickrEntities``) is given
    (as the official script does), else from the json's ``annotations``. ``gt_boxes="phrase-text"`` (official)
    takes the boxes of the first phrase of the sentence whose text equals this phrase's; ``"span"`` the
    boxes linked to this phrase's own span."""
    if gt_boxes not in FLICKR_GT_BOXES:
        raise ValueError(f"gt boxes must be one of {FLICKR_GT_BOXES}, got {gt_boxes!r}")
    queries = []
    for image in images:
        caption = image["caption"]
        positives = _positive_spans(image)
        for index, spans in enumerate(positives):
            start, end = spans[0]
            phrase = caption[start:end]
            if entities is not None:
                boxes = _xml_boxes(entities, image, (start, end), phrase, by_text=gt_boxes == "phrase-text")
            else:
                source = index if gt_boxes == "span" else next(
                    i for i, other in enumerate(positives) if caption[other[0][0]:other[0][1]] == phrase)
                wanted = {tuple(s) for s in positives[source]}
                boxes = [xywh_to_xyxy(a["bbox"]) for a in truth.get(image["id"], [])
                         if any(isinstance(t, (list, tuple)) and tuple(t) in wanted
                                for t in a.get("tokens_positive") or [])]
            if not boxes:
                raise ValueError(f"sentence entry {image['id']!r}: phrase {phrase!r} has no ground-truth box")
            queries.append({"id": f"{image['id']}_{index}", "image": image, "phrase": phrase,
                            "prefix": caption[:start].rstrip(), "boxes": boxes})
    return queries


def _positive_spans(image: dict) -> list[list[tuple[int, int]]]:
    positives = image.get("tokens_positive_eval") or []
    caption = image["caption"]
    if not isinstance(positives, list):
        raise ValueError(f"sentence entry {image.get('id')!r}: tokens_positive_eval is not a list")
    out = []
    for index, spans in enumerate(positives):
        try:
            checked = [(int(s), int(e)) for s, e in spans]
        except (TypeError, ValueError, OverflowError):
            checked = []
        if not checked or not all(0 <= s < e <= len(caption) for s, e in checked):
            raise ValueError(f"sentence entry {image.get('id')!r}: tokens_positive_eval[{index}] is not a list of "
                             f"[start, end] spans inside the caption")
        out.append(checked)
    return out


def _xml_boxes(entities, image: dict, span: tuple[int, int], phrase: str, by_text: bool) -> list[Box]:
    """Boxes of the XML phrase (of sentence ``sentence_id`` of image ``original_img_id``) with the text
    ``phrase``: the first such phrase (``by_text``, official) or the one starting at ``span``."""
    image_id, sentence_id = image.get("original_img_id"), image.get("sentence_id")
    sentences = entities.sentences(image_id)
    try:
        sentence = sentences[int(sentence_id)] if int(sentence_id) >= 0 else None
    except (TypeError, ValueError, IndexError):
        sentence = None
    if sentence is None:
        raise ValueError(f"sentence entry {image['id']!r}: no sentence {sentence_id!r} for image {image_id!r}")
    boxes = entities.annotation(image_id)["boxes"]
    words = sentence["sentence"].split()
    for candidate in sentence["phrases"]:
        if candidate["phrase_id"] not in boxes:
            continue
        first = candidate["first_word_index"]
        begin = sum(len(w) for w in words[:first]) + first
        if candidate["phrase"] == phrase and (by_text or begin == span[0]):
            return [tuple(float(v) for v in box) for box in boxes[candidate["phrase_id"]]]
    raise ValueError(f"sentence {sentence_id} of image {image_id}: no phrase {phrase!r} with boxes in the "
                     f"Flickr30k Entities files")


def flickr_recall(predictions, queries: list[dict], ks=(1, 5, 10), iou_threshold: float = 0.5,
                  match: str = "exact", iou_dtype: str = "float64") -> dict[str, Any]:
    """ANY-BOX R@k over ALL queries (a missing prediction is a miss): a query is a hit at k when any of its
    first k predicted boxes for the phrase has IoU >= 0.5 with any ground-truth box; ``upper_bound``: any
    predicted box (the official script's k = -1)."""
    hits = {k: 0 for k in ks}
    upper = no_box = missing = 0
    for position, query in enumerate(queries):
        pred = _lookup(predictions, query["id"], position)
        if pred is None:
            missing += 1
            continue
        boxes = _pixel_boxes(pred, query["image"], query["phrase"], match)
        if not boxes:
            no_box += 1
            continue
        best = [max(row) for row in iou_matrix(boxes, query["boxes"], iou_dtype)]
        for k in ks:
            hits[k] += max(best[:k]) >= iou_threshold
        upper += max(best) >= iou_threshold
    n = len(queries)
    return {**{f"R@{k}": 100.0 * hits[k] / n if n else 0.0 for k in ks},
            "upper_bound": 100.0 * upper / n if n else 0.0, "total": n, "no_box": no_box, "missing_predictions": missing}


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
    return {"accuracy": round(100.0 * sum(scores) / n, 2) if n else 0.0, "total": n,
            "missing": sum(q["question_id"] not in answers for q in questions["questions"]),
            "per_answer_type": {t: round(100.0 * sum(v) / len(v), 2) for t, v in sorted(per_type.items())},
            "vqa_eval": version}


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


# --------------------------------------------------------------------------- in-context (Kosmos-1) metrics

def best_choice(values: Sequence[float]) -> int:
    """The index of the highest value; ties go to the first."""
    return max(range(len(values)), key=lambda i: (values[i], -i))


def ranked_accuracy(rows: Sequence[dict], loglikelihoods: dict[str, list], is_right) -> dict:
    """Accuracy (percent) of ranked predictions (``{id: log-likelihoods}``): ``is_right(row, lls)`` judges one item;
    an item without a prediction counts as wrong and as ``missing``."""
    hits = missing = 0
    for row in rows:
        lls = loglikelihoods.get(str(row["id"]))
        if lls is None:
            missing += 1
            continue
        hits += bool(is_right(row, lls))
    return {"accuracy": round(100 * hits / len(rows), 2) if rows else 0.0, "total": len(rows), "missing": missing}


def multiple_choice(loglikelihoods: Sequence[float], choice_lengths: Sequence[int], gold: int) -> dict[str, float]:
    """lm-evaluation-harness's ``acc`` (the choice with the highest summed log-likelihood is right) and ``acc_norm``
    (the same after dividing each log-likelihood by its choice's length in characters); ties go to the first."""
    normalised = [ll / max(n, 1) for ll, n in zip(loglikelihoods, choice_lengths)]
    return {"acc": float(best_choice(list(loglikelihoods)) == gold), "acc_norm": float(best_choice(normalised) == gold)}


def roc_auc(scores: Sequence[float], labels: Sequence[int]) -> float:
    """Area under the ROC curve: the probability that a positive scores above a negative, ties counting half
    (the Mann-Whitney statistic, equal to sklearn's ``roc_auc_score``)."""
    positives = [s for s, y in zip(scores, labels) if y]
    negatives = [s for s, y in zip(scores, labels) if not y]
    if not positives or not negatives:
        raise ValueError("ROC AUC needs at least one positive and one negative item")
    ordered = sorted((s, i) for i, s in enumerate(scores))
    ranks = [0.0] * len(scores)
    start = 0
    while start < len(ordered):  # average ranks over ties
        end = start
        while end + 1 < len(ordered) and ordered[end + 1][0] == ordered[start][0]:
            end += 1
        for position in range(start, end + 1):
            ranks[ordered[position][1]] = (start + end) / 2 + 1
        start = end + 1
    positive_rank_sum = sum(r for r, y in zip(ranks, labels) if y)
    n_pos, n_neg = len(positives), len(negatives)
    return (positive_rank_sum - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg)


def squad_normalise(text: str) -> str:
    """SQuAD v1.1 ``normalize_answer``: lower case, punctuation and articles removed, whitespace collapsed."""
    import string

    text = "".join(ch for ch in text.lower() if ch not in set(string.punctuation))
    text = re.sub(r"\b(a|an|the)\b", " ", text)
    return " ".join(text.split())


def squad_em_f1(prediction: str, answers: Sequence[str]) -> tuple[float, float]:
    """Exact match and token F1 of a prediction, the maximum over the reference answers (SQuAD v1.1 script,
    which WebSRC's evaluation follows)."""
    from collections import Counter

    def f1(pred: str, truth: str) -> float:
        p, t = squad_normalise(pred).split(), squad_normalise(truth).split()
        common = sum((Counter(p) & Counter(t)).values())
        if common == 0:
            return 0.0
        precision, recall = common / len(p), common / len(t)
        return 2 * precision * recall / (precision + recall)

    em = max(float(squad_normalise(prediction) == squad_normalise(a)) for a in answers)
    return em, max(f1(prediction, a) for a in answers)
