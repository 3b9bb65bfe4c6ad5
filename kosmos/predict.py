"""``kosmos predict``: generation with the official prompt and decoding settings per task (Kosmos-2 paper, section 4).

Every task reads the benchmark's own annotation files and writes what ``kosmos score`` reads:
JSON lines ``{"id", "text", "frame"}`` for rec / flickr / reg (``text`` is the generated text after
``</image>``, prompt included, with location tokens; ``frame`` is the region of the original image the model
saw, normalised x0, y0, w, h) and the official results files for caption (``[{"image_id", "caption"}]``)
and vqa (``[{"question_id", "answer"}]``).
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import torch

from kosmos.sequence import Image, SequenceEncoder, Text

TASKS = ("rec", "flickr", "reg", "caption", "vqa")


@dataclass(frozen=True)
class Decoding:
    prompt: str
    num_beams: int = 1
    no_repeat_ngram_size: int = 0
    max_new_tokens: int = 32


# Official prompts; decoding as the Kosmos-2 evaluation describes it (greedy unless noted).
DECODING = {
    "rec": Decoding("<grounding><phrase>{expression}</phrase>", no_repeat_ngram_size=3, max_new_tokens=16),
    "flickr": Decoding("<grounding>{prefix}<phrase>{phrase}</phrase>", no_repeat_ngram_size=3, max_new_tokens=16),
    "reg": Decoding("<phrase> It</phrase><object>{locations}</object> is", no_repeat_ngram_size=3,
                    max_new_tokens=20),
    "caption": Decoding("An image of", num_beams=5, no_repeat_ngram_size=3, max_new_tokens=30),
    "vqa": Decoding("Question: {question} Answer:", max_new_tokens=10),
}


def rec_prompt(expression: str) -> str:
    return DECODING["rec"].prompt.format(expression=expression.strip())


def flickr_prompt(prefix: str, phrase: str) -> str:
    # "<grounding>{prefix} <phrase>{phrase}</phrase>"; the space before the phrase goes inside the tag, as
    # the serializer writes training text, so the phrase tokenises as in training.
    prefix = prefix.strip()
    return DECODING["flickr"].prompt.format(prefix=prefix, phrase=(" " if prefix else "") + phrase.strip())


def reg_prompt(box) -> str:
    from grit_pipeline.location import HF_SPELLING, box_to_cells

    ul, lr = box_to_cells(box)
    return DECODING["reg"].prompt.format(locations=HF_SPELLING.location(ul) + HF_SPELLING.location(lr))


# --------------------------------------------------------------------------- queries per task

@dataclass
class Query:
    """One generation: ``prompt`` after the image at ``image_path``; or, with ``segments``, an interleaved prompt
    (``("text", str)`` and ``("image", path)`` items in order, e.g. few-shot demonstrations) followed by ``prompt``."""

    id: Any
    image_path: str | None
    prompt: str
    task: str
    segments: tuple = ()


def _image_path(images_dir: str, file_name: str) -> str:
    return os.path.join(images_dir, file_name)


def _clamp_box(box):
    x1, y1, x2, y2 = (min(max(v, 0.0), 1.0) for v in box)
    return (x1, y1, max(x2, x1 + 1e-6), max(y2, y1 + 1e-6))


def build_queries(task: str, images_dir: str, annotations: dict | str | None = None, questions: dict | None = None,
                  image_template: str = "COCO_{data_subtype}_{image_id:012d}.jpg") -> list[Query]:
    """The prompts of one task, from the benchmark's annotation files."""
    from kosmos.evalfiles import coco_entries
    from kosmos.metrics import flickr_queries, xywh_to_xyxy

    if task == "rec":
        return [Query(im["id"], _image_path(images_dir, im["file_name"]), rec_prompt(im["caption"]), task)
                for im in annotations["images"]]
    if task == "flickr":
        if isinstance(annotations, (str, os.PathLike)):  # a Flickr30k Entities folder
            from kosmos.score import flickr_source

            images, truth, entities = flickr_source(str(annotations))
        else:
            (images, truth), entities = coco_entries(annotations, "annotations"), None
        return [Query(q["id"], _image_path(images_dir, q["image"]["file_name"]),
                      flickr_prompt(q["prefix"], q["phrase"]), task) for q in flickr_queries(images, truth, entities)]
    if task == "reg":
        gt = {a["image_id"]: a for a in annotations["annotations"]}
        queries, seen = [], set()
        for im in annotations["images"]:
            ann = gt[im["id"]]
            obj = (im.get("original_img_id", im["file_name"]), ann.get("original_id", ann["id"]))
            if obj in seen:  # one query per object; its expressions are the references
                continue
            seen.add(obj)
            x1, y1, x2, y2 = xywh_to_xyxy(ann["bbox"])
            box = _clamp_box((x1 / im["width"], y1 / im["height"], x2 / im["width"], y2 / im["height"]))
            queries.append(Query(im["id"], _image_path(images_dir, im["file_name"]), reg_prompt(box), task))
        return queries
    if task == "caption":
        return [Query(im["id"], _image_path(images_dir, im["file_name"]), DECODING["caption"].prompt, task)
                for im in annotations["images"]]
    if task == "vqa":
        subtype = questions.get("data_subtype", "val2014")
        return [Query(q["question_id"],
                      _image_path(images_dir, image_template.format(data_subtype=subtype, image_id=q["image_id"])),
                      DECODING["vqa"].prompt.format(question=q["question"].strip()), task)
                for q in questions["questions"]]
    raise ValueError(f"unknown task {task!r}; choose one of {TASKS}")


# --------------------------------------------------------------------------- generation

def load_model(path: str, device: torch.device):
    """Model + processor from a checkpoint's ``model`` dir, a training output dir (its latest checkpoint),
    a checkpoint dir, or any ``save_pretrained`` directory."""
    import pickle

    from transformers import Kosmos2Processor

    from grit_pipeline.safe_load import UnsafeFileError
    from kosmos.checkpoint import latest_checkpoint
    from kosmos.modeling import load_pretrained

    root = Path(path)
    if (root / "checkpoints").is_dir():
        root = latest_checkpoint(root / "checkpoints") or root
    if (root / "model").is_dir():
        root = root / "model"
    try:
        # safetensors only: a pytorch_model.bin is a pickle, and loading one could run code.
        model = load_pretrained(root, use_safetensors=True).to(device).eval()
        processor = Kosmos2Processor.from_pretrained(str(root))
    except (OSError, ValueError, pickle.UnpicklingError) as error:
        raise UnsafeFileError(f"cannot load a model from {root} (safetensors weights only): "
                              f"{' '.join(str(error).split())[:300]}") from None
    return model, processor


def generate(model, processor, queries: list[Query], batch_size: int = 16, image_mode: str = "square",
             device=None, progress=None) -> Iterator[dict[str, Any]]:
    """Generate for each query with its task's decoding settings. Queries of one task are batched by equal
    prompt length, so no padding ever shifts Kosmos-2's position ids."""
    from PIL.Image import open as Image_open

    device = device or next(model.parameters()).device
    image_size = model.config.vision_config.image_size
    slots = model.config.latent_query_num
    encoder = SequenceEncoder(processor, slots, image_size, image_mode)

    def pixels(path: str):
        with Image_open(path) as raw:
            return encoder.pixels(raw.convert("RGB"))

    def encode(query: Query):
        """The query's prompt as one row (no </s>); the frame is its last image's."""
        segments, frame = [], (0.0, 0.0, 1.0, 1.0)
        items = list(query.segments) + ([("image", query.image_path)] if query.image_path else [])
        for kind, value in items:
            if kind == "image":
                tensor, frame = pixels(value)
                segments.append(Image(tensor))
            else:
                segments.append(Text(value))
        return encoder.encode(segments + [Text(query.prompt)], add_eos=False), frame

    # Bucket by (task, prompt length in tokens, images): equal lengths need no padding. Images are loaded per batch.
    buckets: dict[tuple, list[Query]] = {}
    for query in queries:
        length = sum(len(encoder.text_ids(v)) if k == "text" else encoder.image_length() for k, v in query.segments)
        length += len(processor.tokenizer(query.prompt, add_special_tokens=False)["input_ids"])
        images = sum(k == "image" for k, _ in query.segments) + int(bool(query.image_path))
        buckets.setdefault((query.task, length, images), []).append(query)
    done = 0
    for (task, _, _), bucket in buckets.items():
        settings = DECODING[task]
        for start in range(0, len(bucket), batch_size):
            chunk, frames, items = bucket[start:start + batch_size], [], []
            for query in chunk:
                item, frame = encode(query)
                items.append(item)
                frames.append(frame)
            lengths = {item["input_ids"].numel() for item in items}
            if len(lengths) != 1:  # cannot happen unless the tokenizer is context-dependent; stay correct
                raise RuntimeError(f"prompts of one bucket encode to different lengths {sorted(lengths)}")
            inputs = {name: torch.stack([item[name] for item in items]).to(device) for name in
                      ("input_ids", "attention_mask", "image_embeds_position_mask")}
            inputs["pixel_values"] = torch.cat([item["pixel_values"] for item in items]).to(device)
            with torch.no_grad():
                output = model.generate(
                    **inputs, max_new_tokens=settings.max_new_tokens, num_beams=settings.num_beams,
                    no_repeat_ngram_size=settings.no_repeat_ngram_size or None, do_sample=False,
                    use_cache=True, pad_token_id=processor.tokenizer.pad_token_id,
                    eos_token_id=processor.tokenizer.eos_token_id)
            prompt_len = inputs["input_ids"].size(1)
            texts = processor.batch_decode(output, skip_special_tokens=True)
            continuations = processor.batch_decode(output[:, prompt_len:], skip_special_tokens=True)
            for query, frame, text, continuation in zip(chunk, frames, texts, continuations):
                yield {"id": query.id, "text": processor.post_process_generation(text, cleanup_and_extract=False),
                       "generated": continuation, "frame": [round(v, 6) for v in frame]}
            done += len(chunk)
            if progress:
                progress(done, len(queries))


def clean_answer(text: str) -> str:
    """The generated continuation as a caption / answer: tags removed, first line, stripped."""
    import re

    text = re.sub(r"<[^>]*>", "", text)
    return text.strip().split("\n")[0].strip()


def write_predictions(task: str, results: list[dict], path: str | Path) -> None:
    """Atomically write JSON lines (rec/flickr/reg) or the official results json (caption/vqa)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + f".tmp-{os.getpid()}")
    with open(tmp, "w") as handle:
        if task == "caption":
            json.dump([{"image_id": r["id"], "caption": clean_answer(r["generated"])} for r in results], handle)
        elif task == "vqa":
            json.dump([{"question_id": r["id"], "answer": clean_answer(r["generated"])} for r in results], handle)
        else:
            for r in results:
                handle.write(json.dumps(r) + "\n")
    os.replace(tmp, path)
