"""Grounding metrics by the official scripts' rules: REC accuracy (microsoft/unilm ``kosmos-2/evaluation/refcoco/
refexp_evaluate.py`` with its ``decode_string.py``) and Flickr30k Entities ANY-BOX recall
(``kosmos-2/evaluation/flickr_entities/flickr_entities_evaluate.py``). Every rate is percent, keyed ``*_pct``.

- REC: an ``<object>`` counts only when all its location groups are well formed, a box belongs to the expression
  when its phrase text equals the expression after ``str.strip()``, the FIRST such box must have IoU >= 0.5,
  computed in float32 (torch tensors built from Python floats); no box is a 0-area box (a miss).
- Flickr30k Entities: one query per ``tokens_positive_eval`` entry of MDETR's ``final_flickr_separateGT_*.json``
  (its first span); the ground truth of a phrase is the boxes of the FIRST phrase of the sentence with the same
  text; IoU in float64; R@k: any of the first k matching boxes has IoU >= 0.5 with any ground-truth box.
"""
from __future__ import annotations

import re
from typing import Any, Iterable, Sequence

Box = tuple[float, float, float, float]
PHRASE_MATCHES = ("exact", "normalised")   # official str.strip() equality | case/space/end-punctuation blind
IOU_DTYPES = ("float32", "float64")
FLICKR_GT_BOXES = ("phrase-text", "span")  # official: first phrase with the same text | the phrase's own span


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

    ``predictions``: an ``formats.predictions.Predictions`` (or a dict id -> {"text", optional "frame"});
    ``images`` / ``truth``: ``formats.mdetr.coco_entries`` of an MDETR ``finetune_refcoco*.json``. Also reports
    the official script's two other columns (``upper_bound_pct``: any matching box hits; ``mean_box_pct``: the
    mean of the matching boxes hits) and how many predictions were missing or gave no box for the expression."""
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

    return {"accuracy_pct": percent(hits), "hits": hits, "total": n, "no_box": no_box,
            "missing_predictions": missing, "upper_bound_pct": percent(upper), "mean_box_pct": percent(mean_hits)}


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
    return {"accuracy_pct": 100.0 * hits / n if n else 0.0, "hits": hits, "total": n, "mean_box": list(mean)}


# --------------------------------------------------------------------------- Flickr30k Entities

def flickr_queries(images: list[dict], truth: dict[Any, list[dict]], entities=None,
                   gt_boxes: str = "phrase-text") -> list[dict[str, Any]]:
    """One query per ``tokens_positive_eval`` entry of each sentence entry, in file order (the order of the
    released evaluation's prediction lines), with its ground-truth boxes (pixel xyxy) and the caption
    words before it. Query id: ``"{entry id}_{index}"``.

    Ground truth: from the Flickr30k Entities XML when ``entities`` (``formats.flickr30k_entities.FlickrEntities``) is given
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
    """ANY-BOX R@k (``R@k_pct``) over ALL queries (a missing prediction is a miss): a query is a hit at k when any of its
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
    return {**{f"R@{k}_pct": 100.0 * hits[k] / n if n else 0.0 for k in ks},
            "upper_bound_pct": 100.0 * upper / n if n else 0.0, "total": n, "no_box": no_box, "missing_predictions": missing}
