"""From-scratch Kosmos-2 tokenizer and processor.

A BPE tokenizer is learnt from captions with the ``tokenizers`` library (sentencepiece-style ``▁`` word
boundaries, as Kosmos-2's XLM-R tokenizer has), then Kosmos-2's tag tokens and the 1024 patch-index tokens
are added with the same ``AddedToken`` settings ``Kosmos2Processor`` uses. Ids 0-3 are ``<s> <pad> </s> <unk>``
like the released tokenizer, so ``Kosmos2Config``'s default bos/pad/eos ids hold and the processor's image
slots (``unk_token_id + 1`` onwards) are ordinary vocabulary ids, as in the release.
"""
from __future__ import annotations

from typing import Iterable

SPECIAL_TOKENS = ["<s>", "<pad>", "</s>", "<unk>"]
# Kosmos2Processor.tag_tokens, same order
TAG_TOKENS = [
    "</doc>", "<image>", "</image>", "</chunk>", "</line>", "<phrase>", "</phrase>", "<object>", "</object>",
    "</delimiter_of_multi_objects/>", "<grounding>",
]
NUM_PATCH_INDEX_TOKENS = 1024


def patch_index_tokens(n: int = NUM_PATCH_INDEX_TOKENS) -> list[str]:
    return [f"<patch_index_{i:04d}>" for i in range(n)]


def train_tokenizer(texts: Iterable[str], vocab_size: int = 8000, min_frequency: int = 1):
    """Learn a BPE tokenizer on ``texts`` and return it as a transformers fast tokenizer with Kosmos-2's
    special, tag and patch-index tokens."""
    from tokenizers import AddedToken, Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    core = Tokenizer(models.BPE(unk_token="<unk>"))
    core.normalizer = normalizers.NFKC()
    core.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="always")
    core.decoder = decoders.Metaspace(replacement="▁", prepend_scheme="always")
    trainer = trainers.BpeTrainer(
        vocab_size=max(vocab_size, len(SPECIAL_TOKENS) + 1), min_frequency=min_frequency,
        special_tokens=SPECIAL_TOKENS, show_progress=False,
    )
    core.train_from_iterator((t for t in texts if isinstance(t, str) and t), trainer=trainer)
    if core.get_vocab_size() <= len(SPECIAL_TOKENS):
        raise ValueError("no text to learn a tokenizer from")
    core.add_tokens([AddedToken(t, lstrip=True, rstrip=False, normalized=False)
                     for t in TAG_TOKENS + patch_index_tokens()])
    return PreTrainedTokenizerFast(
        tokenizer_object=core, bos_token="<s>", eos_token="</s>", unk_token="<unk>", pad_token="<pad>",
        padding_side="right",
    )


def build_image_processor(image_size: int):
    """CLIP-style preprocessing at ``image_size`` (resize shortest edge, centre crop, CLIP mean/std)."""
    from transformers import CLIPImageProcessor

    return CLIPImageProcessor(
        size={"shortest_edge": image_size}, crop_size={"height": image_size, "width": image_size},
        do_center_crop=True, do_resize=True, do_convert_rgb=True,
    )


def build_processor(tokenizer, image_size: int):
    """Wrap a tokenizer and an image processor of ``image_size`` in ``Kosmos2Processor``."""
    from transformers import Kosmos2Processor

    return Kosmos2Processor(build_image_processor(image_size), tokenizer,
                            num_patch_index_tokens=NUM_PATCH_INDEX_TOKENS)


def load_processor(path):
    from transformers import Kosmos2Processor

    return Kosmos2Processor.from_pretrained(str(path))


def check_processor(processor, latent_query_num: int) -> None:
    """Raise ValueError unless the processor's tokenizer has every token Kosmos-2 needs and room for the
    image slots."""
    tok = processor.tokenizer
    vocab = tok.get_vocab()
    missing = [t for t in TAG_TOKENS + patch_index_tokens() if t not in vocab]
    if missing:
        raise ValueError(f"tokenizer lacks {len(missing)} Kosmos-2 tokens, e.g. {missing[:3]}")
    if tok.unk_token_id is None or tok.unk_token_id + latent_query_num >= len(tok):
        raise ValueError("tokenizer too small for the image slots (ids unk+1 .. unk+latent_query_num)")
