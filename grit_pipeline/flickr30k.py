"""Flickr30k Entities as grounding truth: the official ``Sentences/`` and ``Annotations/`` files -> truth lines.

The release (github.com/BryanPlummer/flickr30k_entities) has, per image id, ``Sentences/<id>.txt`` (five
captions, one a line, each annotated phrase marked ``[/EN#<entity id>/<type>[/<type>...] words]``) and
``Annotations/<id>.xml`` (image size; per ``<object>`` one or more ``<name>`` entity ids and either a
``<bndbox>`` in 1-based inclusive pixels or ``<nobndbox>1</nobndbox>``, ``<scene>1</scene>`` flags), and
``train.txt`` / ``val.txt`` / ``test.txt`` listing the image ids of each split.

One truth line per sentence, keyed ``<image id>_<sentence index>`` (rules documented in docs/detectors.md,
"Flickr30k Entities"):
- the caption is the sentence with the marks removed (words joined by one space, as the official
  ``get_sentence_data`` rebuilds it); each phrase is a span of it, found by position, never by text search;
- every box of a phrase's entity is an ``objects`` entry (``noun_chunk`` = ``ref_exp`` = the phrase);
- a phrase whose entity has no box and is a scene (``<scene>1</scene>`` or type ``scene``) is ``ignore``;
- any other phrase whose entity has no box (``nobndbox``, type ``notvisual``, or not in the XML) is ``absent``.
Marks nested inside a phrase, a phrase never closed and a malformed mark are refused with one line naming
the file and line. The same files also become input shards in img2dataset layout (``write_shards``), one
sample per sentence, so ``grit run`` reads Flickr30k like any download.
"""
from __future__ import annotations

import hashlib
import json
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

MARK_PREFIX = "[/EN#"
SCENE_TYPE = "scene"


class Flickr30kError(ValueError):
    """A Flickr30k Entities file that does not follow the official format (one line: file, line, what)."""


@dataclass(frozen=True)
class Phrase:
    """One marked phrase: character offsets in the plain sentence, its entity id and types."""

    start: int
    end: int
    entity_id: str
    types: tuple[str, ...]


@dataclass
class Annotation:
    """One ``Annotations/<id>.xml``: image size, boxes per entity id (normalised xyxy), scene / no-box ids."""

    width: int
    height: int
    boxes: dict[str, list[list[float]]] = field(default_factory=dict)
    scene: set[str] = field(default_factory=set)
    nobox: set[str] = field(default_factory=set)


def parse_sentence(line: str) -> tuple[str, list[Phrase]]:
    """The plain sentence of one ``Sentences`` line and its phrases; ValueError for a line that breaks the
    format (a mark inside a phrase, a phrase not closed, a mark without ``/EN#<id>/<type>``)."""
    words: list[str] = []
    phrases: list[Phrase] = []
    position = 0          # length of " ".join(words) so far
    open_mark: tuple[str, tuple[str, ...], int] | None = None
    for token in line.split():
        if token.startswith("["):
            if open_mark is not None:
                raise ValueError(f"nested phrase marks: {token!r} opens inside the phrase of entity {open_mark[0]}")
            if not token.startswith(MARK_PREFIX) or len(token.split("/")) < 3:
                raise ValueError(f"malformed phrase mark {token[:60]!r} (expected [/EN#<id>/<type> words])")
            parts = token.split("/")
            entity = parts[1][len("EN#"):]
            if not entity:
                raise ValueError(f"phrase mark {token[:60]!r} has no entity id")
            open_mark = (entity, tuple(p for p in parts[2:] if p), position + (1 if words else 0))
            continue
        closes = open_mark is not None and token.endswith("]")
        word = token[:-1] if closes else token
        if not word:
            raise ValueError("a phrase closes on an empty word")
        position += (1 if words else 0) + len(word)
        words.append(word)
        if closes:
            entity, types, start = open_mark
            phrases.append(Phrase(start, position, entity, types))
            open_mark = None
    if open_mark is not None:
        raise ValueError(f"the phrase of entity {open_mark[0]} is never closed")
    return " ".join(words), phrases


def read_sentences(path: str | Path) -> list[tuple[str, list[Phrase]]]:
    """Every non-empty line of a ``Sentences/<id>.txt`` file, parsed (``parse_sentence``)."""
    out = []
    text = Path(path).read_text(encoding="utf-8")
    for number, line in enumerate(text.split("\n"), 1):
        if not line.strip():
            continue
        try:
            out.append(parse_sentence(line))
        except ValueError as error:
            raise Flickr30kError(f"{path}:{number}: {error}") from None
    return out


def read_annotation(path: str | Path) -> Annotation:
    """An ``Annotations/<id>.xml`` file. Boxes are 1-based inclusive pixels in the file; they become
    normalised xyxy ``[(xmin - 1) / W, (ymin - 1) / H, xmax / W, ymax / H]``, clipped to [0, 1]."""
    try:
        root = ET.parse(path).getroot()
        size = root.find("size")
        width, height = int(size.findtext("width")), int(size.findtext("height"))
        if width <= 0 or height <= 0:
            raise ValueError(f"image size {width}x{height}")
        annotation = Annotation(width, height)
        for obj in root.findall("object"):
            names = [name.text.strip() for name in obj.findall("name") if name.text and name.text.strip()]
            box = obj.find("bndbox")
            if box is not None:
                xmin, ymin, xmax, ymax = (int(box.findtext(tag)) for tag in ("xmin", "ymin", "xmax", "ymax"))
                normalised = [min(1.0, max(0.0, v)) for v in
                              ((xmin - 1) / width, (ymin - 1) / height, xmax / width, ymax / height)]
                for name in names:
                    annotation.boxes.setdefault(name, []).append(normalised)
                continue
            for name in names:
                if int(obj.findtext("scene") or 0) > 0:
                    annotation.scene.add(name)
                if int(obj.findtext("nobndbox") or 0) > 0:
                    annotation.nobox.add(name)
    except (ET.ParseError, AttributeError, TypeError, ValueError) as error:
        raise Flickr30kError(f"{path}: not a Flickr30k Entities annotation file ({error})") from None
    return annotation


def is_flickr30k_folder(path: str | Path) -> bool:
    """True for a folder holding the official ``Sentences/`` and ``Annotations/`` folders."""
    path = Path(path)
    return (path / "Sentences").is_dir() and (path / "Annotations").is_dir()


def image_ids(root: str | Path, split: str | None = None) -> list[str]:
    """The image ids of ``<split>.txt`` (file order), else of every ``Sentences/*.txt`` (numeric order)."""
    root = Path(root)
    if not is_flickr30k_folder(root):
        raise Flickr30kError(f"{root}: not a Flickr30k Entities folder (expected Sentences/ and Annotations/)")
    if split:
        listing = root / f"{split}.txt"
        if not listing.is_file():
            raise Flickr30kError(f"{root}: no {split}.txt image list for --split {split}")
        return [line.strip() for line in listing.read_text(encoding="utf-8").splitlines() if line.strip()]
    return sorted((p.stem for p in (root / "Sentences").glob("*.txt")),
                  key=lambda s: (not s.isdigit(), int(s) if s.isdigit() else 0, s))


def sample_key(image_id: str, sentence_index: int) -> str:
    """The key of one sentence's sample and truth line."""
    return f"{image_id}_{sentence_index}"


def sentence_truth(image_id: str, sentence_index: int, sentence: str, phrases: list[Phrase],
                   annotation: Annotation) -> dict:
    """The truth line (docs/evaluation.md, "The truth format") of one annotated sentence."""
    objects, absent, ignore = [], [], []
    for phrase in phrases:
        span = [phrase.start, phrase.end]
        boxes = annotation.boxes.get(phrase.entity_id)
        if boxes:
            for box in boxes:
                objects.append({"noun_chunk": span, "ref_exp": span, "box": [round(v, 6) for v in box],
                                "entity_id": phrase.entity_id, "phrase_type": "/".join(phrase.types)})
        elif phrase.entity_id in annotation.scene or SCENE_TYPE in phrase.types:
            ignore.append(span)
        else:
            absent.append(span)
    return {"key": sample_key(image_id, sentence_index), "caption": sentence, "width": annotation.width,
            "height": annotation.height, "objects": objects, "absent": absent, "ignore": ignore,
            "image_id": image_id, "sentence_index": sentence_index}


def image_truth(root: str | Path, image_id: str) -> list[dict]:
    """The truth lines of every sentence of one image."""
    root = Path(root)
    sentences_path, annotation_path = root / "Sentences" / f"{image_id}.txt", root / "Annotations" / f"{image_id}.xml"
    for path in (sentences_path, annotation_path):
        if not path.is_file():
            raise Flickr30kError(f"{root}: no {path.parent.name}/{path.name} for image {image_id}")
    annotation = read_annotation(annotation_path)
    return [sentence_truth(image_id, i, sentence, phrases, annotation)
            for i, (sentence, phrases) in enumerate(read_sentences(sentences_path))]


def iter_truth(root: str | Path, split: str | None = None, limit: int | None = None) -> Iterator[tuple[str, list[dict]]]:
    """``(image id, truth lines of its sentences)`` for the split's images (at most ``limit`` images)."""
    ids = image_ids(root, split)
    for image_id in ids[:limit] if limit is not None else ids:
        yield image_id, image_truth(root, image_id)


def load_truth(root: str | Path, split: str | None = None) -> dict[str, dict]:
    """Truth lines by key, for ``grit_pipeline.evaluate.load_truth``."""
    return {line["key"]: line for _, lines in iter_truth(root, split) for line in lines}


def write_truth(root: str | Path, output: str | Path, split: str | None = None, limit: int | None = None) -> dict:
    """The converter: every sentence's truth line into one ``.jsonl`` file; returns counts."""
    output = Path(output)
    output.parent.mkdir(parents=True, exist_ok=True)
    counts = {"images": 0, "sentences": 0, "objects": 0, "absent": 0, "ignore": 0}
    tmp = output.with_name(output.name + ".tmp")
    with open(tmp, "w", encoding="utf-8") as handle:
        for _, lines in iter_truth(root, split, limit):
            counts["images"] += 1
            for line in lines:
                handle.write(json.dumps(line, sort_keys=True) + "\n")
                counts["sentences"] += 1
                for name in ("objects", "absent", "ignore"):
                    counts[name] += len(line[name])
    tmp.replace(output)
    return {"output": str(output), **counts}


def write_shards(root: str | Path, images: str | Path, output: str | Path, split: str | None = None,
                 limit: int | None = None, shard_size: int = 1000) -> dict:
    """Input shards in img2dataset layout from a Flickr30k image folder (``<id>.jpg``) and the sentences:
    one sample per sentence (key ``<image id>_<sentence index>``, the image's bytes, the plain sentence as
    caption), ``shard_size`` samples per shard, and ``truth/NNNNN.jsonl`` beside them. Images missing from
    the folder are skipped and counted."""
    from grit_pipeline.synth.writer import write_img2dataset_shard

    if shard_size < 1:
        raise ValueError("shard_size must be >= 1")
    images, output = Path(images), Path(output)
    if not images.is_dir():
        raise Flickr30kError(f"image folder not found: {images}")
    output.mkdir(parents=True, exist_ok=True)
    summary = {"output": str(output), "images": 0, "samples": 0, "shards": 0, "missing_images": 0,
               "missing_examples": []}
    pending_samples: list[dict] = []
    pending_truth: list[str] = []

    def flush() -> None:
        name = f"{summary['shards']:05d}"
        write_img2dataset_shard(output, name, pending_samples, pending_truth, {"flickr30k": str(root)})
        summary["shards"] += 1
        pending_samples.clear()
        pending_truth.clear()

    for image_id, lines in iter_truth(root, split, limit):
        path = images / f"{image_id}.jpg"
        if not path.is_file():
            summary["missing_images"] += 1
            if len(summary["missing_examples"]) < 5:
                summary["missing_examples"].append(str(path))
            continue
        jpeg = path.read_bytes()
        digest = hashlib.sha256(jpeg).hexdigest()
        summary["images"] += 1
        for line in lines:
            width, height = line["width"], line["height"]
            meta = {"url": f"flickr30k/{image_id}.jpg", "caption": line["caption"], "key": line["key"],
                    "status": "success", "error_message": None, "width": width, "height": height,
                    "original_width": width, "original_height": height, "exif": "{}", "sha256": digest}
            pending_samples.append({"meta": meta, "jpeg": jpeg})
            pending_truth.append(json.dumps(line, sort_keys=True))
            summary["samples"] += 1
            if len(pending_samples) >= shard_size:
                flush()
    if pending_samples:
        flush()
    summary["truth"] = str(output / "truth")
    return summary
