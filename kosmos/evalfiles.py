"""Reading evaluation files: prediction files (our JSON lines, fairseq ``H-`` lines) and the benchmarks'
annotation files (MDETR json, Flickr30k Entities ``Sentences/`` + ``Annotations/``), checked as they are read.

Every problem is a ``ValueError`` with one line that names the file and the line or entry, so that
``kosmos score`` can print it and exit non-zero instead of a traceback.
"""
from __future__ import annotations

import json
import math
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


def load_json(path, what: str = "file") -> Any:
    """``json.load`` with one-line errors (missing file, bad JSON, nesting too deep, oversize integers)."""
    try:
        with open(path, encoding="utf-8") as handle:
            return json.load(handle)
    except FileNotFoundError:
        raise ValueError(f"{what} {path}: no such file") from None
    except IsADirectoryError:
        raise ValueError(f"{what} {path}: is a directory, expected a json file") from None
    except (ValueError, UnicodeDecodeError) as error:
        raise ValueError(f"{what} {path}: not valid JSON ({error})") from None
    except RecursionError:
        raise ValueError(f"{what} {path}: not valid JSON (nested too deeply)") from None


@dataclass
class Predictions:
    """Prediction texts keyed by id. ``positional``: ids are 0-based positions in the benchmark's query order
    (fairseq ``H-`` lines), else the ids the annotation files give (our JSON lines)."""

    by_id: dict[Any, dict] = field(default_factory=dict)
    positional: bool = False
    lines: dict[Any, int] = field(default_factory=dict)  # id -> line number, for error messages

    def get(self, key, position: int):
        if self.positional:
            return self.by_id.get(position)
        for candidate in _id_variants(key):
            if candidate in self.by_id:
                return self.by_id[candidate]
        return None

    def unknown(self, known_keys, count: int) -> list[tuple[Any, int]]:
        """(id, line) of predictions that match no query."""
        if self.positional:
            return [(i, self.lines[i]) for i in self.by_id if not 0 <= i < count]
        known = {v for key in known_keys for v in _id_variants(key)}
        return [(i, self.lines[i]) for i in self.by_id if i not in known]


def _id_variants(key) -> list:
    # json round trips turn ids into strings or back: "12" and 12 name the same entry
    variants = [key, str(key)]
    if isinstance(key, str) and _is_small_number(key):
        variants.append(int(key))
    return variants


def _is_small_number(text: str) -> bool:
    return text.isascii() and text.isdigit() and len(text) <= 18


def read_predictions(path) -> Predictions:
    """Read a predictions file: JSON lines ``{"id", "text", optional "frame"}`` (``kosmos predict``) or the
    fairseq output of the released evaluation (``H-<n>\\t<score>\\t<text>`` lines; other lines ignored).

    A malformed line, a wrong type or a repeated id raises ValueError naming the line."""
    try:
        with open(path, encoding="utf-8") as handle:
            lines = handle.read().splitlines()
    except FileNotFoundError:
        raise ValueError(f"predictions {path}: no such file") from None
    except (UnicodeDecodeError, IsADirectoryError) as error:
        raise ValueError(f"predictions {path}: cannot read ({error})") from None
    if any(_is_hypothesis(line) is not None for line in lines):
        return _read_fairseq(path, lines)
    if not any(line.strip() for line in lines):
        raise ValueError(f"predictions {path}: empty (expected JSON lines or fairseq 'H-<n>' hypothesis lines)")
    out = Predictions()
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        where = f"predictions {path}:{number}"
        try:
            row = json.loads(line)
        except ValueError as error:
            raise ValueError(f"{where}: not JSON ({error})") from None
        except RecursionError:
            raise ValueError(f"{where}: not JSON (nested too deeply)") from None
        if not isinstance(row, dict):
            raise ValueError(f"{where}: expected a JSON object with 'id' and 'text', got {type(row).__name__}")
        if "id" not in row or "text" not in row:
            raise ValueError(f"{where}: prediction lines need 'id' and 'text', got keys {sorted(row)}")
        key = row["id"]
        if isinstance(key, bool) or not isinstance(key, (str, int)):
            raise ValueError(f"{where}: 'id' must be a string or an integer, got {type(key).__name__}")
        if not isinstance(row["text"], str):
            raise ValueError(f"{where}: 'text' must be a string, got {type(row['text']).__name__}")
        if row.get("generated") is not None and not isinstance(row["generated"], str):
            raise ValueError(f"{where}: 'generated' must be a string, got {type(row['generated']).__name__}")
        if row.get("frame") is not None:
            row = {**row, "frame": _frame(row["frame"], where)}
        if any(variant in out.by_id for variant in _id_variants(key)):
            raise ValueError(f"{where}: a second prediction for id {key!r:.60} (first on line "
                             f"{out.lines[next(v for v in _id_variants(key) if v in out.by_id)]})")
        out.by_id[key] = row
        out.lines[key] = number
    return out


def _is_hypothesis(line: str) -> int | None:
    """The sample id of a fairseq-generate hypothesis line ("H-<sample id>\\t<score>\\t<text>"): as the
    official scripts read them, a line whose first tab field contains "H-" and ends in "-<digits>"."""
    first = line.split("\t")[0]
    last = first.split("-")[-1]
    return int(last) if "H-" in first and _is_small_number(last) else None


def _read_fairseq(path, lines: list[str]) -> Predictions:
    out = Predictions(positional=True)
    for number, line in enumerate(lines, 1):
        index = _is_hypothesis(line)
        if index is None:
            continue  # S-, T-, D-, P- lines and logging, skipped as the official scripts skip them
        if index in out.by_id:
            raise ValueError(f"predictions {path}:{number}: a second hypothesis for sample {index} "
                             f"(first on line {out.lines[index]})")
        out.by_id[index] = {"id": index, "text": line.split("\t")[-1]}
        out.lines[index] = number
    return out


def _frame(value, where: str) -> tuple[float, float, float, float]:
    if not isinstance(value, (list, tuple)) or len(value) != 4:
        raise ValueError(f"{where}: 'frame' must be four numbers [x0, y0, w, h], got {value!r:.60}")
    numbers = []
    for v in value:
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
            raise ValueError(f"{where}: 'frame' must be four finite numbers [x0, y0, w, h], got {value!r:.60}")
        numbers.append(float(v))
    if numbers[2] <= 0 or numbers[3] <= 0:
        raise ValueError(f"{where}: 'frame' width and height must be positive, got {value!r:.60}")
    return tuple(numbers)


# --------------------------------------------------------------------------- MDETR-style annotation json

def number(value, where: str) -> float:
    """A finite number, from a number or a numeric string (MDETR's Flickr json stores sizes as strings)."""
    if isinstance(value, bool):
        raise ValueError(f"{where}: expected a number, got {value!r}")
    try:
        out = float(value)
    except (TypeError, ValueError, OverflowError):
        raise ValueError(f"{where}: expected a number, got {value!r:.40}") from None
    if not math.isfinite(out):
        raise ValueError(f"{where}: expected a finite number, got {value!r:.40}")
    return out


def coco_entries(annotations, path, need_caption: bool = True) -> tuple[list[dict], dict[Any, list[dict]]]:
    """The ``images`` entries (sizes as floats) and the ``annotations`` by ``image_id`` (``bbox`` as four
    floats) of a COCO/MDETR-style json, checked."""
    if not isinstance(annotations, dict) or not isinstance(annotations.get("images"), list) \
            or not isinstance(annotations.get("annotations"), list):
        raise ValueError(f"annotations {path}: expected a JSON object with 'images' and 'annotations' lists")
    images = []
    for i, image in enumerate(annotations["images"]):
        where = f"annotations {path}: images[{i}]"
        if not isinstance(image, dict) or "id" not in image:
            raise ValueError(f"{where}: expected an object with 'id'")
        if isinstance(image["id"], (list, dict)):
            raise ValueError(f"{where}: 'id' must be a string or an integer")
        checked = {**image, "width": number(image.get("width"), f"{where}.width"),
                   "height": number(image.get("height"), f"{where}.height")}
        if checked["width"] <= 0 or checked["height"] <= 0:
            raise ValueError(f"{where}: width and height must be positive")
        if need_caption and not isinstance(image.get("caption"), str):
            raise ValueError(f"{where}: 'caption' must be a string")
        images.append(checked)
    by_image: dict[Any, list[dict]] = {}
    for i, ann in enumerate(annotations["annotations"]):
        where = f"annotations {path}: annotations[{i}]"
        if not isinstance(ann, dict) or "image_id" not in ann or isinstance(ann["image_id"], (list, dict)):
            raise ValueError(f"{where}: expected an object with 'image_id'")
        bbox = ann.get("bbox")
        if not isinstance(bbox, (list, tuple)) or len(bbox) != 4:
            raise ValueError(f"{where}: 'bbox' must be [x, y, w, h]")
        by_image.setdefault(ann["image_id"], []).append(
            {**ann, "bbox": [number(v, f"{where}.bbox") for v in bbox]})
    return images, by_image


# --------------------------------------------------------------------------- Flickr30k Entities files

def parse_sentence_line(line: str) -> dict[str, Any]:
    """One line of a Flickr30k Entities ``Sentences/<id>.txt`` file: the plain sentence and its phrases
    (``[/EN#<id>/<type>... words]`` markup), as the dataset's own ``get_sentence_data`` reads it."""
    words: list[str] = []
    phrases = []
    current: list[str] | None = None
    for token in line.split():
        if current is not None:
            if token.endswith("]"):
                token = token[:-1]
                current.append(token)
                phrases[-1]["phrase"] = " ".join(current)
                current = None
            else:
                current.append(token)
            words.append(token)
        elif token.startswith("["):
            parts = token.split("/")
            if len(parts) < 2:
                raise ValueError(f"phrase markup {token!r} has no '/EN#<id>' part")
            phrases.append({"first_word_index": len(words), "phrase_id": parts[1][3:], "phrase_type": parts[2:],
                            "phrase": ""})
            current = []
        else:
            words.append(token)
    return {"sentence": " ".join(words), "phrases": phrases}


def read_sentences(path: Path) -> list[dict[str, Any]]:
    out = []
    for number, line in enumerate(Path(path).read_text(encoding="utf-8").split("\n"), 1):
        if not line:
            continue
        try:
            out.append(parse_sentence_line(line))
        except ValueError as error:
            raise ValueError(f"{path}:{number}: {error}") from None
    return out


def read_box_annotations(path: Path) -> dict[str, Any]:
    """A Flickr30k Entities ``Annotations/<id>.xml``: image size and the boxes of each phrase id
    (pixel [xmin, ymin, xmax, ymax], one list entry per box)."""
    try:
        root = ET.parse(path).getroot()
        size = root.find("size")
        width, height = int(size.findtext("width")), int(size.findtext("height"))
        boxes: dict[str, list[list[int]]] = {}
        for obj in root.findall("object"):
            box = obj.find("bndbox")
            if box is None:
                continue
            corners = [int(box.findtext(tag)) for tag in ("xmin", "ymin", "xmax", "ymax")]
            for name in obj.findall("name"):
                boxes.setdefault(name.text, []).append(corners)
    except (ET.ParseError, AttributeError, TypeError, ValueError) as error:
        raise ValueError(f"{path}: not a Flickr30k Entities annotation file ({error})") from None
    return {"width": width, "height": height, "boxes": boxes}


class FlickrEntities:
    """A Flickr30k Entities folder (``Sentences/``, ``Annotations/``, optional ``<split>.txt``), read lazily."""

    def __init__(self, root, split: str | None = None):
        self.root = Path(root)
        if not (self.root / "Sentences").is_dir() or not (self.root / "Annotations").is_dir():
            raise ValueError(f"Flickr30k Entities {root}: expected Sentences/ and Annotations/ folders")
        self.split = split
        self._sentences: dict[str, list] = {}
        self._boxes: dict[str, dict] = {}

    def image_ids(self) -> list[str]:
        """The split's image ids (``<split>.txt``), else every annotated image, sorted."""
        if self.split:
            listing = self.root / f"{self.split}.txt"
            if not listing.exists():
                raise ValueError(f"Flickr30k Entities {self.root}: no {self.split}.txt image list")
            return [line.strip() for line in listing.read_text().splitlines() if line.strip()]
        return sorted((p.stem for p in (self.root / "Annotations").glob("*.xml")),
                      key=lambda s: (not s.isdigit(), int(s) if s.isdigit() else 0, s))

    def sentences(self, image_id) -> list[dict]:
        """The parsed ``Sentences/<image_id>.txt``."""
        return self._read(self._sentences, "Sentences", f"{image_id}.txt", read_sentences)

    def annotation(self, image_id) -> dict:
        """The parsed ``Annotations/<image_id>.xml``."""
        return self._read(self._boxes, "Annotations", f"{image_id}.xml", read_box_annotations)

    def _read(self, cache: dict, folder: str, name: str, reader):
        if name not in cache:
            path = self.root / folder / name
            if not path.exists():
                raise ValueError(f"Flickr30k Entities {self.root}: no {folder}/{name}")
            cache[name] = reader(path)
        return cache[name]


def flickr_sentence_entries(entities: FlickrEntities) -> list[dict[str, Any]]:
    """MDETR-style sentence entries built from the Flickr30k Entities files themselves, in MDETR's order
    (split image list, then sentences): ``tokens_positive_eval`` lists the phrases that have boxes."""
    entries = []
    for image_id in entities.image_ids():
        annotation = entities.annotation(image_id)
        for sentence_id, sentence in enumerate(entities.sentences(image_id)):
            words = sentence["sentence"].split()
            positives = []
            for phrase in sentence["phrases"]:
                if phrase["phrase_id"] in annotation["boxes"]:
                    first = phrase["first_word_index"]
                    begin = sum(len(w) for w in words[:first]) + first
                    positives.append([[begin, begin + len(phrase["phrase"])]])
            entries.append({"id": f"{image_id}_{sentence_id}", "file_name": f"{image_id}.jpg",
                            "width": float(annotation["width"]), "height": float(annotation["height"]),
                            "caption": sentence["sentence"], "original_img_id": image_id,
                            "sentence_id": sentence_id, "tokens_positive_eval": positives})
    return entries


# --------------------------------------------------------------------------- benchmark record files

def read_records(path, what: str = "data") -> list[tuple[str, dict]]:
    """``(where, record)`` of a benchmark file (``where`` names the file and the line, row or entry): JSON lines (``.jsonl``), a JSON list (``.json``),
    CSV with a header row (``.csv``, ``.tsv``) or parquet. Every problem is one line naming the file and line."""
    import csv

    path = Path(path)
    if not path.exists():
        raise ValueError(f"{what} {path}: no such file")
    if path.is_dir():
        raise ValueError(f"{what} {path}: is a directory, expected a file")
    suffix = path.suffix.lower()
    if suffix == ".parquet":
        import pyarrow.parquet as pq

        try:
            rows = pq.read_table(path).to_pylist()
        except Exception as error:  # noqa: BLE001 - pyarrow raises several kinds for a bad file
            raise ValueError(f"{what} {path}: not a parquet file ({' '.join(str(error).split())[:200]})") from None
        return [(f"{what} {path}: row {n}", row) for n, row in enumerate(rows, 1)]
    try:
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as error:
        raise ValueError(f"{what} {path}: not UTF-8 text ({error})") from None
    if suffix in (".csv", ".tsv"):
        reader = csv.DictReader(text.splitlines(), delimiter="\t" if suffix == ".tsv" else ",")
        return [(f"{what} {path}:{number}", dict(row)) for number, row in enumerate(reader, 2)]
    if suffix == ".json":
        value = load_json(path, what)
        if isinstance(value, dict) and isinstance(value.get("data"), list):
            value = value["data"]
        if not isinstance(value, list):
            raise ValueError(f"{what} {path}: expected a JSON list of objects")
        for index, row in enumerate(value):
            if not isinstance(row, dict):
                raise ValueError(f"{what} {path}: entry {index}: expected an object, got {type(row).__name__}")
        return [(f"{what} {path}: entry {index}", row) for index, row in enumerate(value)]
    out = []
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except (ValueError, RecursionError) as error:
            raise ValueError(f"{what} {path}:{number}: not JSON ({str(error)[:120]})") from None
        if not isinstance(row, dict):
            raise ValueError(f"{what} {path}:{number}: expected a JSON object, got {type(row).__name__}")
        out.append((f"{what} {path}:{number}", row))
    return out


def record_field(record: dict, name: str, where: str, kind=str):
    """``record[name]`` checked to be of ``kind`` (a type or tuple of types), else a one-line error at ``where``."""
    if name not in record:
        raise ValueError(f"{where}: missing field {name!r} (has {sorted(record)[:8]})")
    value = record[name]
    if not isinstance(value, kind) or isinstance(value, bool) and bool not in (kind if isinstance(kind, tuple) else (kind,)):
        names = "/".join(k.__name__ for k in (kind if isinstance(kind, tuple) else (kind,)))
        raise ValueError(f"{where}: field {name!r} must be {names}, got {value!r:.60}")
    return value


IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".gif")


def read_loglikelihoods(path) -> dict[str, list]:
    """A ranking task's predictions jsonl as {id (as text): its candidates' log-likelihoods}."""
    return {str(record_field(r, "id", w, (str, int))): record_field(r, "loglikelihoods", w, list)
            for w, r in read_records(path, "predictions")}


def read_labelled_images(path, images_dir=None, what: str = "annotations") -> list[dict]:
    """``[{"id", "image", "label"}]`` from an image folder with one subfolder per class (``CLASS/x.png``; the id is
    the path inside the folder) or a JSON list / JSON lines of ``{"image", "label"}`` (images relative to
    ``images_dir``, default the file's folder). Sorted by id for folders, file order otherwise."""
    path = Path(path)
    if path.is_dir():
        out = [{"id": str(p.relative_to(path)), "image": str(p), "label": p.parent.name}
               for p in sorted(path.glob("*/*")) if p.suffix.lower() in IMAGE_SUFFIXES]
        if not out:
            raise ValueError(f"{what} {path}: no images in class subfolders (CLASS/NAME.jpg)")
        return out
    base = Path(images_dir) if images_dir else path.parent
    out = []
    for where, record in read_records(path, what):
        image = record_field(record, "image", where)
        label = record_field(record, "label", where, (str, int))
        out.append({"id": record.get("id", image), "image": str(base / image), "label": label})
    return out
