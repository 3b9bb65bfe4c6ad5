"""Kosmos-2 as a grit detector: each noun chunk is grounded by the model the pipeline builds data for.

The built-in ``hf`` backend covers transformers' zero-shot object detectors (Grounding DINO, MM Grounding
DINO, OWLv2, OWL-ViT: ``AutoModelForZeroShotObjectDetection``). Kosmos-2 (``Kosmos2ForConditionalGeneration``)
is not one of them: it grounds a phrase by *writing* its box as two location tokens. This adapter asks it,
for every (image, chunk) pair, the question Kosmos-2 was trained to answer::

    <image>...</image><grounding><phrase> a dog</phrase><object>  ->  <patch_index_UL><patch_index_LR>

and decodes the two tokens it writes with Kosmos-2's own rule (transformers'
``patch_index_to_coordinate``, the one ``Kosmos2Processor.post_process_generation`` applies), which gives a
box normalised to the image, as grit wants it.

Decoding. Instead of free generation (which may write text, a second object or nothing, and with a padded
batch depends on its batch-mates), the two location tokens are chosen by constrained greedy decoding: the
upper-left token is the most probable of the 1,024 ``<patch_index_*>`` tokens after ``<object>``, the
lower-right one the most probable of those below and right of it. Two forward passes over the whole batch of
(image, chunk) rows, no cache; rows are left-padded, and Kosmos-2 numbers positions from the first real token,
so a row's result does not depend on its batch-mates. One box per chunk.

Score. The mean of the two location tokens' probabilities (softmax over the whole vocabulary, before the
constraint): close to 1 when the model is sure where the object is, low when it would rather not write a box
at all. It is not GLIP's score: calibrate the threshold with ``grit calibrate`` (docs/detectors.md) before a
large run.

Images. Kosmos-2 was trained on images resized to a square (224 x 224) without cropping, so that its
location tokens cover the whole picture; the adapter resizes each image to the processor's square size
itself (the processor then neither resizes nor crops it), whatever the saved processor's crop setting.

Use::

    grit run --input SHARDS --output DIR --detector examples.detectors.kosmos2_grounder:Kosmos2Grounder \\
             --model microsoft/kosmos-2-patch14-224 --box-threshold T      # T from grit calibrate

Options (``--detector-option key=value``): ``rows_per_pass`` (default 64: (image, chunk) rows per forward
pass; lower it on a small GPU). ``--dtype``: float16 on CUDA and float32 on CPU by default.
"""
from __future__ import annotations

import json
import os
from typing import Sequence

from grit_pipeline.detectors.base import Detection, Detector
from grit_pipeline.detectors.hf import resolve_device, resolve_dtype  # grit's own device/dtype spellings


class Kosmos2Grounder(Detector):
    """Ground each phrase with ``Kosmos2ForConditionalGeneration`` (one box per phrase, constrained decoding)."""

    name = "kosmos2"

    def __init__(self, model: str | None = None, device: str = "auto", dtype: str | None = None,
                 batch_size: int = 8, rows_per_pass: int | str = 64, **unused):
        self.check_options(model=model, dtype=dtype, rows_per_pass=rows_per_pass)
        import torch
        from transformers import AutoProcessor, Kosmos2ForConditionalGeneration

        self.device = torch.device(resolve_device(device))
        self.dtype = resolve_dtype(dtype, str(self.device))  # float16 on CUDA, float32 on CPU by default
        self.rows_per_pass = int(rows_per_pass)
        self.processor = AutoProcessor.from_pretrained(model)
        self.processor.tokenizer.padding_side = "left"  # rows of one image come back left-padded alike
        self.model = Kosmos2ForConditionalGeneration.from_pretrained(model, dtype=self.dtype).to(self.device).eval()
        tokenizer = self.processor.tokenizer
        count = int(self.processor.num_patch_index_tokens)
        self.per_side = int(round(count ** 0.5))
        self.patch_ids = torch.tensor(tokenizer.convert_tokens_to_ids([f"<patch_index_{i:04d}>" for i in range(count)]),
                                      device=self.device)
        # lower-right candidates of each upper-left patch: those in no row above and no column left of it
        cells = torch.arange(count, device=self.device)
        rows, cols = cells // self.per_side, cells % self.per_side
        self.allowed_after = (rows[None, :] >= rows[:, None]) & (cols[None, :] >= cols[:, None])
        self.pad_id = tokenizer.pad_token_id
        image_processor = self.processor.image_processor
        crop = getattr(image_processor, "crop_size", None) or {}
        size = getattr(image_processor, "size", None) or {}
        self.side = int(crop.get("height") or size.get("height") or size.get("shortest_edge") or 224)

    @classmethod
    def check_options(cls, model: str | None = None, dtype: str | None = None, rows_per_pass: int | str = 64,
                      **unused) -> None:
        """The driver's check, before any worker starts (no weights loaded): a model is named, and is a local
        folder holding a Kosmos-2 ``config.json`` or a hub id (in the local cache when HF_HUB_OFFLINE is set);
        the dtype and ``rows_per_pass`` are valid. One-line ValueError otherwise."""
        if not model:
            raise ValueError("kosmos2: give the model with --model DIR_OR_HUB_ID "
                             "(e.g. microsoft/kosmos-2-patch14-224)")
        resolve_dtype(dtype, "cpu")  # raises on an unknown spelling
        try:
            if int(rows_per_pass) < 1:
                raise ValueError
        except (TypeError, ValueError):
            raise ValueError(f"kosmos2: rows_per_pass must be an integer >= 1, got {rows_per_pass!r}") from None
        model = str(model)
        looks_local = (os.path.exists(model) or model.startswith((".", "/", "~")) or model.count("/") > 1
                       or model.endswith("/"))
        if looks_local:
            config_file = os.path.join(os.path.expanduser(model), "config.json")
        else:
            from huggingface_hub import constants, try_to_load_from_cache

            cached = try_to_load_from_cache(model, "config.json")
            if not isinstance(cached, str):
                if constants.HF_HUB_OFFLINE:
                    raise ValueError(f"kosmos2: --model {model} is not in the local Hugging Face cache and "
                                     "HF_HUB_OFFLINE is set")
                return  # fetched by each worker
            config_file = cached
        try:
            with open(config_file, encoding="utf-8") as handle:
                model_type = json.load(handle).get("model_type")
        except (OSError, ValueError, AttributeError) as error:
            raise ValueError(f"kosmos2: --model {model}: no readable config.json ({type(error).__name__})") from None
        if model_type != "kosmos-2":
            raise ValueError(f"kosmos2: --model {model} is a {model_type!r} model, not Kosmos-2")

    def detect(self, images: Sequence, phrases: Sequence[Sequence[str]]) -> list[list[Detection]]:
        import torch
        from PIL import Image

        if len(images) != len(phrases):
            raise ValueError(f"{len(images)} images but {len(phrases)} phrase lists")
        rows = []  # (image index, phrase index, encoded row)
        pixel_values = []
        for i, (image, image_phrases) in enumerate(zip(images, phrases)):
            if not image_phrases:
                pixel_values.append(None)
                continue
            square = image.convert("RGB").resize((self.side, self.side), Image.BICUBIC)
            prompts = [f"<grounding><phrase> {_clean(p)}</phrase><object>" for p in image_phrases]
            encoded = self.processor(images=[square] * len(prompts), text=prompts)
            pixel_values.append(torch.as_tensor(encoded["pixel_values"][0]))
            for j in range(len(prompts)):
                rows.append((i, j, encoded["input_ids"][j], encoded["attention_mask"][j],
                             encoded["image_embeds_position_mask"][j]))
        out: list[list[Detection]] = [[] for _ in images]
        if not rows:
            return out
        with torch.inference_mode():
            wanted = [i for i, values in enumerate(pixel_values) if values is not None]
            stacked = torch.stack([pixel_values[i] for i in wanted]).to(self.device, self.dtype)
            features = self.model.get_image_features(stacked, return_dict=True).pooler_output
            embeds = {i: features[k] for k, i in enumerate(wanted)}
            for start in range(0, len(rows), self.rows_per_pass):
                chunk = rows[start:start + self.rows_per_pass]
                boxes = self._ground_rows(chunk, torch.stack([embeds[i] for i, *_ in chunk]))
                for (i, j, *_), (box, score) in zip(chunk, boxes):
                    out[i].append(Detection(j, box, score))
        return out

    def _ground_rows(self, rows, image_embeds):
        """(normalised box, score) of each row: two constrained greedy steps over the location tokens."""
        import torch
        from transformers.models.kosmos2.processing_kosmos2 import patch_index_to_coordinate

        length = max(len(ids) for _, _, ids, _, _ in rows)
        pad = [length - len(ids) for _, _, ids, _, _ in rows]
        input_ids = torch.tensor([[self.pad_id] * p + list(ids) for p, (_, _, ids, _, _) in zip(pad, rows)])
        attention = torch.tensor([[0] * p + list(mask) for p, (_, _, _, mask, _) in zip(pad, rows)])
        positions = torch.tensor([[0] * p + list(m) for p, (_, _, _, _, m) in zip(pad, rows)], dtype=torch.bool)
        input_ids, attention, positions = (t.to(self.device) for t in (input_ids, attention, positions))

        def location_log_probs(ids, mask, image_mask):
            logits = self.model(input_ids=ids, attention_mask=mask, image_embeds=image_embeds,
                                image_embeds_position_mask=image_mask, logits_to_keep=1).logits[:, -1]
            return torch.log_softmax(logits.float(), dim=-1)[:, self.patch_ids]  # rows x 1024 patch tokens

        first = location_log_probs(input_ids, attention, positions)
        upper_left = first.argmax(dim=-1)
        step = torch.ones_like(upper_left)[:, None]
        second = location_log_probs(torch.cat([input_ids, self.patch_ids[upper_left][:, None]], dim=1),
                                    torch.cat([attention, step], dim=1),
                                    torch.cat([positions, torch.zeros_like(positions[:, :1])], dim=1))
        second = second.masked_fill(~self.allowed_after[upper_left], float("-inf"))
        lower_right = second.argmax(dim=-1)
        p_first = first.gather(1, upper_left[:, None]).exp()[:, 0]
        p_second = second.gather(1, lower_right[:, None]).exp()[:, 0]
        results = []
        for ul, lr, a, b in zip(upper_left.tolist(), lower_right.tolist(), p_first.tolist(), p_second.tolist()):
            x1, y1, x2, y2 = patch_index_to_coordinate(ul, lr, self.per_side)
            box = tuple(min(1.0, max(0.0, float(v))) for v in (x1, y1, x2, y2))
            results.append((box, min(1.0, max(0.0, (a + b) / 2))))
        return results


def _clean(phrase: str) -> str:
    """A chunk as plain text inside ``<phrase>...</phrase>``: no tag tokens, one line."""
    return " ".join(phrase.replace("<", " ").replace(">", " ").split())
