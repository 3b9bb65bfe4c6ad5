"""Instruction sources (Kosmos-2 instruction tuning, paper section 3 and Table 8), one class per format.

- ``llava``: LLaVA-Instruct json (a list, or jsonl) of ``{"id", "image", "conversations": [{"from", "value"}]}``
  with its image folder (``--llava-images``, default the json's folder): an image is looked up as ``NAME``,
  ``train2014/NAME``, ``COCO_train2014_NAME`` and ``train2014/COCO_train2014_NAME`` (LLaVA names COCO images
  ``000000033471.jpg``; COCO train2014 calls the same file ``COCO_train2014_000000033471.jpg``).
  ``--exclude-images FILE`` drops the listed images (e.g. the RefCOCO/+/g evaluation images).
- ``unnatural``: Unnatural Instructions jsonl as released: ``{"instruction", "instances": [{"instruction_with_input",
  "input", "output", ...}], "reformulations": [{"instruction", "instruction_with_input", "input", "output"}]}``;
  every instance and every reformulation is one single-turn sequence.
- ``flan``: FLAN-style jsonl ``{"inputs", "targets"}``: one single-turn sequence per line.
- ``grit_instruct``: `grit instruct` shards (``KEY.<image>`` + ``KEY.json`` with ``conversations``), release
  spelling only (the model's tokens); the image is used whole (square), so its location tokens stay valid.

Each conversation becomes one sequence with the conversation template of ``kosmos.conversation`` (the same one
``kosmos chat`` prompts with): instructions and human turns are inputs (label -100), answers are targets.
.jsonl files may be .gz or .zst compressed; a line longer than ``max_document_bytes`` is skipped.
"""
from __future__ import annotations

import json
import os
import re
from typing import Any, Iterator

from kosmos.conversation import conversation_segments, conversation_text, turns_of
from kosmos.sources.base import SampleError, Source, SourceError, count, decode_image
from kosmos.sources.grounded import TarFiles, check_plain_text

JSONL_PATTERNS = ("*.jsonl", "*.jsonl.gz", "*.jsonl.zst", "*.json")
MAX_IMAGE_BYTES = 50 << 20
_COCO_ID = re.compile(r"(\d{6,})\.[A-Za-z]+$")


def image_id(name: str) -> str:
    """What identifies an image across spellings: ``coco:33471`` for a COCO file name in either layout
    (``000000033471.jpg``, ``COCO_train2014_000000033471.jpg``), else the base name."""
    base = os.path.basename(str(name))
    match = _COCO_ID.search(base)
    return f"coco:{int(match.group(1))}" if match else base


def load_excluded(path: str) -> set[str]:
    """Image ids (``image_id``) listed in ``path``: a text file of names (one per line), a json list of names,
    or an MDETR/COCO annotation json (``images[].file_name``). ``SourceError`` when unreadable."""
    try:
        with open(path, "rb") as handle:
            data = handle.read()
    except OSError as error:
        raise SourceError(f"--exclude-images {path}: {error.strerror or error}") from None
    names: list[str] = []
    if path.endswith(".json"):
        try:
            parsed = json.loads(data)
        except ValueError as error:
            raise SourceError(f"--exclude-images {path}: not valid JSON ({error})") from None
        if isinstance(parsed, dict):
            names = [im.get("file_name", "") for im in parsed.get("images", []) if isinstance(im, dict)]
        elif isinstance(parsed, list):
            names = [str(n) for n in parsed]
    else:
        names = [line.strip() for line in data.decode("utf-8", "replace").splitlines() if line.strip()]
    return {image_id(n) for n in names if n}


def read_json_items(path: str, counters: dict[str, int], max_bytes: int) -> Iterator[dict[str, Any]]:
    """The objects of a json list file or a jsonl (.gz/.zst) file; bad lines counted as ``bad_json``."""
    from kosmos.sources.text import _open_binary, bounded_lines

    if path.endswith(".json"):
        try:
            with open(path, "rb") as handle:
                items = json.load(handle)
        except (OSError, ValueError, RecursionError) as error:
            raise SourceError(f"{path}: not a readable json list ({' '.join(str(error).split())[:160]})") from None
        if not isinstance(items, list):
            raise SourceError(f"{path}: a json list of conversations was expected, got {type(items).__name__}")
        for item in items:
            if isinstance(item, dict):
                yield item
            else:
                count(counters, "bad_json")
        return
    with _open_binary(path) as handle:
        for line in bounded_lines(handle, max_bytes, counters):
            if not line.strip():
                continue
            try:
                item = json.loads(line)
            except (ValueError, UnicodeDecodeError, RecursionError):
                count(counters, "bad_json")
                continue
            if isinstance(item, dict):
                yield item
            else:
                count(counters, "bad_json")


class InstructionSource(Source):
    """Shared by the formats: ``conversations(raw)`` gives (key, turns, PIL image or None, image_mode) items."""

    patterns = JSONL_PATTERNS
    plain_text = True   # texts must not spell control tokens (grit_instruct's markup is meant)

    def list_files(self) -> list[str]:
        from kosmos.shards import expand_paths

        try:
            return expand_paths(self.spec.paths, self.patterns, f"{self.kind} files ({', '.join(self.patterns)})")
        except FileNotFoundError as error:
            raise SourceError(f"{self.spec.label}: {error}") from None

    def read(self, path: str, counters: dict[str, int]) -> Iterator[dict[str, Any]]:
        name = os.path.basename(path)
        for index, item in enumerate(read_json_items(path, counters, self.config.max_document_bytes)):
            yield {**item, "__key__": f"{name}:{index}"}

    def conversations(self, raw: dict[str, Any]) -> list[tuple[str, list[tuple[str, str]], Any, str]]:
        raise NotImplementedError

    def texts(self, raw: dict[str, Any]) -> list[str]:
        try:
            return [conversation_text(turns, self.config.conversation_template)
                    for _, turns, _, _ in self.conversations(raw, load_images=False)]
        except (SampleError, ValueError):
            return []

    def units(self, raw: dict[str, Any], epoch: int, counters: dict[str, int]) -> list[dict]:
        encoder, config = self.encoder, self.config
        rows, problems = [], []
        for key, turns, image, image_mode in self.conversations(raw):
            try:
                if self.plain_text:
                    for text in (t for pair in turns for t in pair):
                        check_plain_text(text, encoder.tokenizer, f"turn of {key!r}")
                pixels = None if image is None else encoder.pixels(image, image_mode)[0]
                segments = conversation_segments(turns, config.conversation_template, pixels)
                row = encoder.encode(segments, max_tokens=config.sequence_length)
            except SampleError as error:
                problems.append(error)
                continue
            row["key"] = key
            rows.append(row)
        if not rows:
            raise problems[0] if problems else SampleError("no_conversation", f"{raw.get('__key__')}: nothing to train on")
        for error in problems:  # bad conversations of an item whose others are kept: counted, not fatal
            count(counters, error.reason)
        return rows


def _pairs(raw: dict, key: str) -> list[tuple[str, str]]:
    try:
        return turns_of(raw.get("conversations"))
    except ValueError as error:
        raise SampleError("bad_conversation", f"{key}: {error}") from None


class LlavaSource(InstructionSource):
    kind = "llava"

    def __init__(self, spec, encoder, config):
        super().__init__(spec, encoder, config)
        self._excluded = load_excluded(config.exclude_images) if getattr(config, "exclude_images", None) else set()

    def check(self) -> None:
        super().check()
        for path in self.list_files()[:1]:
            for raw in self.read(path, {}):
                if "image" in raw:
                    self._image_path(path, raw["image"], raise_missing=True)
                return

    def read(self, path: str, counters: dict[str, int]) -> Iterator[dict[str, Any]]:
        for raw in super().read(path, counters):
            if self._excluded and isinstance(raw.get("image"), str) and image_id(raw["image"]) in self._excluded:
                count(counters, "excluded_image")
                continue
            yield {**raw, "__path__": path}

    def _image_path(self, json_path: str, name: str, raise_missing: bool = False) -> str | None:
        folder = self.config.llava_images or os.path.dirname(os.path.abspath(json_path))
        base = os.path.basename(name)
        candidates = [name, os.path.join("train2014", name)]
        if not base.startswith("COCO_"):
            candidates += [f"COCO_train2014_{base}", os.path.join("train2014", f"COCO_train2014_{base}")]
        for candidate in candidates:
            path = os.path.normpath(os.path.join(folder, candidate))
            if path.startswith(os.path.normpath(folder)) and os.path.isfile(path):
                return path
        if raise_missing:
            raise SourceError(f"{self.spec.label}: image {name!r} not found under {folder} (as NAME, train2014/NAME "
                              f"or COCO_train2014_NAME); give the COCO train2014 folder with --llava-images")
        return None

    def conversations(self, raw, load_images: bool = True):
        key = str(raw.get("id", raw.get("__key__")))
        turns = _pairs(raw, key)
        image = None
        if load_images and isinstance(raw.get("image"), str):
            path = self._image_path(raw.get("__path__", ""), raw["image"])
            if path is None:
                raise SampleError("missing_image", f"{key}: image {raw['image']!r} not found")
            if os.path.getsize(path) > MAX_IMAGE_BYTES:
                raise SampleError("image_too_large", f"{key}: {path}")
            with open(path, "rb") as handle:
                image = decode_image(handle.read(), key)
        return [(key, turns, image, self.config.image_mode)]


class UnnaturalSource(InstructionSource):
    kind = "unnatural"

    def conversations(self, raw, load_images: bool = True):
        key = raw["__key__"]
        out = []
        instruction = raw.get("instruction")
        for i, instance in enumerate(raw.get("instances") or []):
            question = _instance_question(instruction, instance)
            if question and isinstance(instance.get("output"), str) and instance["output"].strip():
                out.append((f"{key}:i{i}", [(question, instance["output"].strip())], None, "square"))
        for i, reform in enumerate(raw.get("reformulations") or []):
            if not isinstance(reform, dict):
                continue
            question = _instance_question(reform.get("instruction"), reform)
            if question and isinstance(reform.get("output"), str) and reform["output"].strip():
                out.append((f"{key}:r{i}", [(question, reform["output"].strip())], None, "square"))
        if not out:
            raise SampleError("bad_instruction", f"{key}: no instance with an instruction and an output")
        return out


def _instance_question(instruction: Any, instance: Any) -> str | None:
    """The instruction applied to the instance's input: the release's ``instruction_with_input`` when there,
    else the instruction, a blank line and the input."""
    if not isinstance(instance, dict):
        return None
    if isinstance(instance.get("instruction_with_input"), str) and instance["instruction_with_input"].strip():
        return instance["instruction_with_input"].strip()
    if not isinstance(instruction, str) or not instruction.strip():
        return None
    given = instance.get("input")
    return instruction.strip() + (f"\n\n{given.strip()}" if isinstance(given, str) and given.strip() else "")


class FlanSource(InstructionSource):
    kind = "flan"

    def conversations(self, raw, load_images: bool = True):
        key = raw["__key__"]
        inputs, targets = raw.get("inputs"), raw.get("targets")
        if not (isinstance(inputs, str) and inputs.strip() and isinstance(targets, str) and targets.strip()):
            raise SampleError("bad_instruction", f"{key}: needs text 'inputs' and 'targets'")
        return [(key, [(inputs.strip(), targets.strip())], None, "square")]


class GritInstructSource(TarFiles, InstructionSource):
    kind = "grit_instruct"
    plain_text = False

    def check(self) -> None:
        super().check()
        from kosmos.shards import raw_samples

        for raw in raw_samples(self.list_files()[0], {}):
            entry = _entry(raw)
            if entry.get("format", "hf") != "hf":
                raise SourceError(f"{self.spec.label}: {self.list_files()[0]} is in the {entry.get('format')} "
                                  "spelling; the model's tokens are the release's: rebuild with `grit instruct "
                                  "--text-format hf`")
            if "conversations" not in entry:
                raise SourceError(f"{self.spec.label}: {self.list_files()[0]} holds no conversations (not "
                                  "`grit instruct` output)")
            return

    def conversations(self, raw, load_images: bool = True):
        from grit_pipeline.tar_reader import IMAGE_EXTENSIONS

        entry = _entry(raw)
        key = str(entry.get("key", raw.get("__key__")))
        if entry.get("format", "hf") != "hf":
            raise SampleError("paper_spelling", f"{key}: written in the paper spelling")
        turns = _pairs(entry, key)
        image = None
        if load_images:
            data = next((raw[e] for e in IMAGE_EXTENSIONS if e in raw), None)
            if data is None:
                raise SampleError("missing_image", f"{key}: no image member")
            image = decode_image(data, key)
        # The answers' location tokens refer to the whole image: it is fitted square, never cropped.
        return [(key, turns, image, "square")]


def _entry(raw: dict[str, Any]) -> dict[str, Any]:
    try:
        entry = json.loads(raw["json"])
    except (KeyError, ValueError, UnicodeDecodeError):
        raise SampleError("bad_json", f"{raw.get('__key__')}: no readable .json member") from None
    if not isinstance(entry, dict):
        raise SampleError("bad_json", f"{raw.get('__key__')}: json is not an object")
    return entry


INSTRUCTION_SOURCES = (LlavaSource, UnnaturalSource, FlanSource, GritInstructSource)
