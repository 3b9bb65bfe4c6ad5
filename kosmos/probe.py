"""Image-sensitivity probe: does the model look at the image when it places a box?

For each referring expression, the model reads ``<grounding><phrase>{expression}</phrase><object>`` after its
image; the next token is the first location token (the box's top-left cell). The probe compares the
distribution over the 1,024 location tokens at that position for the expression's own image and for another
image (the next query's), with the text unchanged. A model that ignores the image gives the same distribution
for both (total variation 0); one that localises moves it (up to 1) and changes its top cell.
"""
from __future__ import annotations

import torch

from kosmos.images import prepare_image
from kosmos.sequence import Image, SequenceEncoder, Text
from kosmos.predict import rec_prompt


def first_location_logits(model, processor, image, expression: str) -> torch.Tensor:
    """Logits over the location tokens for the first token after ``<object>``."""
    slots = model.config.latent_query_num
    prompt = rec_prompt(expression) + "<object>"
    encoder = SequenceEncoder(processor, slots, model.config.vision_config.image_size)
    pixels = processor.image_processor(image, return_tensors="pt")["pixel_values"][0]  # already fitted
    item = encoder.encode([Image(pixels), Text(prompt)], add_eos=False)
    inputs = {k: item[k].unsqueeze(0).to(next(model.parameters()).device)
              for k in ("input_ids", "attention_mask", "image_embeds_position_mask")}
    inputs["pixel_values"] = item["pixel_values"].to(inputs["input_ids"].device)
    with torch.no_grad():
        logits = model(**inputs).logits[0, -1].float()
    ids = location_token_ids(processor.tokenizer)
    return logits[ids]


def location_token_ids(tokenizer) -> torch.Tensor:
    vocab = tokenizer.get_vocab()
    return torch.tensor([vocab[f"<patch_index_{i:04d}>"] for i in range(1024)])


def image_sensitivity(model, processor, queries: list[tuple[str, str]], image_mode: str = "square") -> dict:
    """``queries``: (image path, expression) pairs, at least two. Returns the mean total-variation distance
    between the first location token's distributions with the own and a swapped image, the mean absolute
    logit change, and the share of queries whose most likely cell changes."""
    from PIL import Image

    if len(queries) < 2:
        raise ValueError("the probe needs at least two queries (one image is swapped for another)")
    model.eval()
    size = model.config.vision_config.image_size
    images = []
    for path, _ in queries:
        with Image.open(path) as raw:
            images.append(prepare_image(raw.convert("RGB"), size, image_mode)[0])
    tv, logit_change, top_changed = [], [], 0
    for i, (_, expression) in enumerate(queries):
        own = first_location_logits(model, processor, images[i], expression)
        other = first_location_logits(model, processor, images[(i + 1) % len(images)], expression)
        tv.append(0.5 * (own.softmax(-1) - other.softmax(-1)).abs().sum().item())
        logit_change.append((own - other).abs().mean().item())
        top_changed += int(own.argmax() != other.argmax())
    n = len(queries)
    return {"queries": n, "mean_total_variation": round(sum(tv) / n, 4),
            "mean_abs_logit_change": round(sum(logit_change) / n, 4),
            "top_cell_changed_share": round(top_changed / n, 4)}


def refcoco_queries(annotations: dict, images_dir: str, limit: int = 50) -> list[tuple[str, str]]:
    """(image path, expression) pairs of an MDETR RefCOCO json, one per image entry."""
    import os

    return [(os.path.join(images_dir, im["file_name"]), im["caption"]) for im in annotations["images"][:limit]]
