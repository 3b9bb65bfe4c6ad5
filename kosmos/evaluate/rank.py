"""Ranking candidates by log-likelihood, with the context they share encoded once.

A :class:`RankItem` has options, each a context (``("text", str)`` / ``("image", path)`` segments) and a
continuation whose tokens are scored. Multiple choice (lm-evaluation-harness) is one context with several
continuations; partial scoring (Winogrande) and P("Yes") (Raven IQ) are several contexts with one continuation.
The scorer works on tokens, whatever the task: the longest run of tokens (images included, compared by file)
that every option of an item starts with is run once through the decoder with a KV cache, the cache is
repeated for the options, and only each option's remainder is run, all options in one batch. Image embeddings
are computed once per distinct image of the item. With ``shared_prefix=False`` every option is one whole
sequence (the baseline the benchmark compares with; the scores agree to float tolerance, tested).

The context and the continuation are tokenised separately (the continuation's leading space is part of it);
with the sentencepiece-style tokenizers of Kosmos-2 a word after a space tokenises the same either way.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Iterator

import torch

from kosmos.evaluate.generate import ImageCache
from kosmos.sequence import Image, SequenceEncoder, Text


@dataclass(frozen=True)
class Option:
    context: tuple          # ("text", str) / ("image", path) segments, in order
    continuation: str       # the scored text (lm-evaluation-harness: target delimiter + choice)


@dataclass
class RankItem:
    id: Any
    options: list[Option]
    meta: dict = field(default_factory=dict)  # what the task keeps beside the scores (choice lengths, ...)


@dataclass
class EncodedOption:
    ids: list[int]
    keys: list              # per position: None (text) or (image file, slot index)
    first_scored: int       # position of the continuation's first token
    images: list[str]       # image files in slot order


def encode_option(encoder: SequenceEncoder, option: Option, pixels: ImageCache, contexts: dict | None = None
                  ) -> EncodedOption:
    """An option as ``<s>`` context continuation (no ``</s>``), with the image behind every slot position.
    ``contexts`` caches encoded contexts (the options of a multiple-choice item share theirs)."""
    encoded = contexts.get(option.context) if contexts is not None else None
    if encoded is None:
        segments, images = [], []
        for kind, value in option.context:
            if kind == "image":
                segments.append(Image(pixels(value)[0]))
                images.append(value)
            else:
                segments.append(Text(value))
        row = encoder.encode(segments, add_eos=False)
        ids = row["input_ids"].tolist()
        keys: list = [None] * len(ids)
        slot_positions = [i for i, m in enumerate(row["image_embeds_position_mask"].tolist()) if m]
        per_image = encoder.num_image_tokens
        for n, position in enumerate(slot_positions):
            keys[position] = (images[n // per_image], n % per_image)
        encoded = (ids, keys, images)
        if contexts is not None:
            contexts[option.context] = encoded
    ids, keys, images = encoded
    continuation = encoder.text_ids(option.continuation)
    if not continuation:
        raise ValueError(f"empty continuation {option.continuation!r}")
    return EncodedOption(ids + continuation, keys + [None] * len(continuation), len(ids), images)


def shared_prefix_length(options: list[EncodedOption]) -> int:
    """Tokens every option starts with (same id and same image behind a slot), up to the first scored token."""
    limit = min(o.first_scored for o in options)
    first = options[0]
    for length in range(limit):
        token = (first.ids[length], first.keys[length])
        if any((o.ids[length], o.keys[length]) != token for o in options[1:]):
            return length
    return limit


def _embed_rows(model, options: list[EncodedOption], image_embeds: dict[str, torch.Tensor], device) -> list[torch.Tensor]:
    """Input embeddings (before Kosmos-2's embedding scale, as ``inputs_embeds`` expects) of each option, the
    image embeddings written into the slots."""
    embed = model.get_input_embeddings()
    rows = []
    for option in options:
        row = embed(torch.tensor(option.ids, device=device))
        slots = [(p, k) for p, k in enumerate(option.keys) if k is not None]
        if slots:
            row = row.clone()
            positions = torch.tensor([p for p, _ in slots], device=device)
            row[positions] = torch.stack([image_embeds[f][i] for _, (f, i) in slots]).to(row.dtype)
        rows.append(row)
    return rows


def _cache_keyword(model) -> str:
    import inspect

    # transformers renamed the decoder's past_key_values to cache (the old name warns until it goes)
    return "cache" if "cache" in inspect.signature(model.text_model.forward).parameters else "past_key_values"


def _decode(model, embeds: torch.Tensor, mask: torch.Tensor, cache=None):
    out = model.text_model(inputs_embeds=embeds, attention_mask=mask, use_cache=cache is not None,
                           **{_cache_keyword(model): cache})
    return out.logits.float()


def score_options(model, encoder: SequenceEncoder, options: list[EncodedOption], pixels: ImageCache,
                  shared_prefix: bool = True) -> list[dict]:
    """``{"loglikelihood", "greedy", "tokens"}`` of each option's continuation (one item)."""
    from kosmos.modeling import image_embeddings

    device = next(model.parameters()).device
    files = list(dict.fromkeys(f for o in options for f in o.images))
    image_embeds = {}
    if files:
        stacked = image_embeddings(model, torch.stack([pixels(f)[0] for f in files]).to(device))
        image_embeds = dict(zip(files, stacked))
    rows = _embed_rows(model, options, image_embeds, device)
    prefix = shared_prefix_length(options) if shared_prefix and len(options) > 1 else 0
    prefix_logits, cache = None, None
    if prefix:
        from transformers import DynamicCache

        cache = DynamicCache()
        prefix_logits = _decode(model, rows[0][:prefix].unsqueeze(0),
                                torch.ones((1, prefix), dtype=torch.long, device=device), cache)[0]
        cache.batch_repeat_interleave(len(options))
    rests = [row[prefix:] for row in rows]
    width = max(r.size(0) for r in rests)
    embeds = torch.zeros((len(rests), width, rows[0].size(1)), dtype=rows[0].dtype, device=device)
    mask = torch.zeros((len(rests), prefix + width), dtype=torch.long, device=device)
    for n, rest in enumerate(rests):  # right padding: no real token ever sees a pad (causal attention)
        embeds[n, :rest.size(0)] = rest
        mask[n, :prefix + rest.size(0)] = 1
    logits = _decode(model, embeds, mask, cache)
    results = []
    for n, option in enumerate(options):
        targets = option.ids[option.first_scored:]
        # the logit predicting position p sits at p - 1: in the prefix's output for p - 1 < prefix
        previous = [logits[n, p - 1 - prefix] if p - 1 >= prefix else prefix_logits[p - 1]
                    for p in range(option.first_scored, len(option.ids))]
        log_probs = torch.log_softmax(torch.stack(previous), dim=-1)
        target = torch.tensor(targets, device=device)
        total = float(log_probs.gather(1, target[:, None]).sum())
        greedy = bool((log_probs.argmax(dim=-1) == target).all())
        results.append({"loglikelihood": total, "greedy": greedy, "tokens": len(targets)})
    return results


def rank(model, processor, items: list[RankItem], shared_prefix: bool = True, image_mode: str = "square",
         progress=None) -> Iterator[dict]:
    """Score every option of every item: ``{"id", "loglikelihoods", "greedy", "tokens", **item.meta}``."""
    encoder = SequenceEncoder(processor, model.config.latent_query_num, model.config.vision_config.image_size,
                              image_mode)
    pixels = ImageCache(encoder)
    for done, item in enumerate(items, 1):
        contexts: dict = {}
        encoded = [encode_option(encoder, option, pixels, contexts) for option in item.options]
        with torch.no_grad():
            scores = score_options(model, encoder, encoded, pixels, shared_prefix)
        yield {"id": item.id, "loglikelihoods": [s["loglikelihood"] for s in scores],
               "greedy": [s["greedy"] for s in scores], "tokens": [s["tokens"] for s in scores], **item.meta}
        if progress:
            progress(done, len(items))
