"""The Flickr30k Entities dataset folder (``Sentences/<id>.txt``, ``Annotations/<id>.xml``, ``<split>.txt``), read as
the dataset's own ``get_sentence_data`` / ``get_annotations`` read it."""
from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any


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
