"""Builders of tiny random-initialised zero-shot detectors (Grounding DINO, OWLv2) for tests.

Everything is built offline from small configs and a hand-written vocabulary, then ``save_pretrained``
to a directory, so tests load it through the same ``from_pretrained(DIR)`` path users take with a hub
checkpoint. Models are a few hundred kilobytes and run in well under a second per image on a CPU.

Reusable by any test::

    from hf_tiny import build_tiny_grounding_dino, build_tiny_owlv2   # tests/ is on sys.path under pytest
    model_dir = build_tiny_grounding_dino(tmp_path / "gdino")
"""
from __future__ import annotations

import json
from pathlib import Path

# Words the tiny tokenizers know. Everything else becomes [UNK] (BERT) or byte-level pieces (CLIP).
WORDS = (
    "a an the of in on with and at to by for from near under over red blue green white black small big "
    "dog hot cat man woman child car bus tree house field flowers flower grass sky road table chair cup "
    "ball bird boat horse sign street person people shirt hat wire hanger paper cover reads we heart our "
    "customers picture photo two three sitting standing next front"
).split()

# Grounding DINO hard-codes the bert-base-uncased ids of its delimiter tokens
# ([CLS]=101, [SEP]=102, "."=1012, "?"=1029; transformers' SPECIAL_TOKENS), so the tiny vocabulary keeps
# those ids: the model then splits the prompt into phrases exactly as it does with the real tokenizer.
_BERT_FIXED_IDS = {0: "[PAD]", 100: "[UNK]", 101: "[CLS]", 102: "[SEP]", 103: "[MASK]", 1012: ".", 1029: "?"}
BERT_VOCAB_SIZE = 1100


def write_bert_vocab(path: Path, size: int = BERT_VOCAB_SIZE) -> Path:
    """A WordPiece vocab.txt with bert-base-uncased's special ids and the words in WORDS (``size`` entries)."""
    tokens: dict[int, str] = dict(_BERT_FIXED_IDS)
    free = (i for i in range(size) if i not in _BERT_FIXED_IDS)
    fillers = list(WORDS) + [",", "!", "'", "-", "s", "##s", "##ing", "##ed"]
    for token in fillers:
        tokens[next(free)] = token
    for i in free:
        tokens[i] = f"[unused{i}]"
    path.write_text("\n".join(tokens[i] for i in range(size)) + "\n")
    return path


def tiny_bert_tokenizer(work_dir: Path, vocab_size: int = BERT_VOCAB_SIZE):
    from transformers import BertTokenizerFast

    vocab = write_bert_vocab(Path(work_dir) / "vocab.txt", vocab_size)
    # vocab= (not vocab_file=, which silently gives an all-[UNK] tokenizer in transformers 5)
    return BertTokenizerFast(vocab=str(vocab), do_lower_case=True, model_max_length=512)


def grounding_dino_config(max_text_len: int = 32, num_queries: int = 12, d_model: int = 32, mm: bool = False):
    """A Grounding DINO config a few hundred kB big: tiny Swin, tiny BERT, 1 encoder and 2 decoder layers.

    ``mm=True``: the same sizes as an MM Grounding DINO config.
    """
    from transformers import BertConfig, GroundingDinoConfig, MMGroundingDinoConfig, SwinConfig

    backbone = SwinConfig(
        image_size=64, patch_size=4, embed_dim=8, depths=[1, 1, 1], num_heads=[1, 1, 1], window_size=4,
        out_indices=[1, 2, 3],
    )
    text = BertConfig(
        vocab_size=BERT_VOCAB_SIZE, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
        intermediate_size=32, max_position_embeddings=max(64, max_text_len),
    )
    config_class = MMGroundingDinoConfig if mm else GroundingDinoConfig
    return config_class(
        backbone_config=backbone, text_config=text, d_model=d_model, num_queries=num_queries,
        encoder_layers=1, decoder_layers=2,  # decoder_layers >= 2: box-head weight tying needs it
        encoder_ffn_dim=32, decoder_ffn_dim=32, encoder_attention_heads=2, decoder_attention_heads=2,
        num_feature_levels=3, encoder_n_points=2, decoder_n_points=2, max_text_len=max_text_len,
    )


def build_tiny_grounding_dino(out_dir, *, max_text_len: int = 32, seed: int = 0,
                              image_size: tuple[int, int] = (64, 96)) -> Path:
    """Build a random tiny Grounding DINO + processor and save_pretrained both to ``out_dir``.

    ``max_text_len`` is the model's text limit in tokens (256 in the real models); keep it small to exercise
    prompt splitting. ``image_size`` is the processor's (shortest_edge, longest_edge).
    """
    return build_grounding_dino(out_dir, grounding_dino_config(max_text_len=max_text_len), seed=seed,
                                image_size=image_size)


def build_tiny_mm_grounding_dino(out_dir, *, max_text_len: int = 32, seed: int = 0,
                                 image_size: tuple[int, int] = (64, 96)) -> Path:
    """Build a random tiny MM Grounding DINO + processor and save_pretrained both to ``out_dir``."""
    return build_grounding_dino(out_dir, grounding_dino_config(max_text_len=max_text_len, mm=True), seed=seed,
                                image_size=image_size)


def build_grounding_dino(out_dir, config, *, seed: int = 0, image_size: tuple[int, int] = (800, 1333)) -> Path:
    """Random-initialised (MM) Grounding DINO of any config + a processor with a generated BERT vocabulary."""
    import torch
    from transformers import (GroundingDinoForObjectDetection, GroundingDinoImageProcessor, GroundingDinoProcessor,
                              MMGroundingDinoForObjectDetection)

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)
    model_class = (MMGroundingDinoForObjectDetection if config.model_type == "mm-grounding-dino"
                   else GroundingDinoForObjectDetection)
    model = model_class(config).eval()
    tokenizer = tiny_bert_tokenizer(out_dir, config.text_config.vocab_size)
    image_processor = GroundingDinoImageProcessor(
        size={"shortest_edge": image_size[0], "longest_edge": image_size[1]}
    )
    processor = GroundingDinoProcessor(image_processor=image_processor, tokenizer=tokenizer)
    model.save_pretrained(out_dir)
    processor.save_pretrained(out_dir)
    return out_dir


# --- OWLv2 ---------------------------------------------------------------------------------------------

def write_clip_vocab(out_dir: Path, size: int | None = None) -> tuple[Path, Path]:
    """A byte-level BPE vocab.json + merges.txt: all 256 byte symbols (plain and word-final) + WORDS.

    With ``size``, filler entries pad the vocabulary so that <|startoftext|>/<|endoftext|> get ids
    size-2/size-1, as in CLIP's real 49408-entry vocabulary.
    """
    from transformers.convert_slow_tokenizer import bytes_to_unicode

    symbols = list(bytes_to_unicode().values())
    vocab: dict[str, int] = {}
    for s in symbols:
        vocab.setdefault(s, len(vocab))
    for s in symbols:
        vocab.setdefault(s + "</w>", len(vocab))
    merges: list[str] = []
    for word in WORDS:
        # merge left to right: w o r d</w> -> wo r d</w> -> wor d</w> -> word</w>
        pieces = list(word[:-1]) + [word[-1] + "</w>"]
        current = pieces[0]
        for piece in pieces[1:]:
            merge = f"{current} {piece}"
            current = current + piece
            if merge not in merges:
                merges.append(merge)
            vocab.setdefault(current, len(vocab))
    if size is not None:
        for i in range(len(vocab), size - 2):
            vocab[f"<|filler{i}|>"] = i
    vocab.setdefault("<|startoftext|>", len(vocab))
    vocab.setdefault("<|endoftext|>", len(vocab))
    vocab_path = Path(out_dir) / "vocab.json"
    merges_path = Path(out_dir) / "merges.txt"
    vocab_path.write_text(json.dumps(vocab))
    merges_path.write_text("#version: 0.2\n" + "\n".join(merges) + "\n")
    return vocab_path, merges_path


def tiny_clip_tokenizer(work_dir: Path, vocab_size: int | None = None):
    from transformers import CLIPTokenizer

    vocab, merges = write_clip_vocab(Path(work_dir), vocab_size)
    return CLIPTokenizer(vocab=str(vocab), merges=str(merges), model_max_length=16, pad_token="!")


def owlv2_config(vocab_size: int, image_size: int = 64, patch_size: int = 16):
    from transformers import Owlv2Config

    return Owlv2Config(
        text_config=dict(
            vocab_size=vocab_size, hidden_size=16, intermediate_size=32, num_hidden_layers=1,
            num_attention_heads=2, max_position_embeddings=16, bos_token_id=vocab_size - 2,
            eos_token_id=vocab_size - 1, pad_token_id=0,
        ),
        vision_config=dict(
            hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2,
            image_size=image_size, patch_size=patch_size,
        ),
        projection_dim=16,
    )


def build_tiny_owlv2(out_dir, *, seed: int = 0, image_size: int = 64) -> Path:
    """Build a random tiny OWLv2 + processor and save_pretrained both to ``out_dir``."""
    return build_owlv2(out_dir, None, seed=seed, image_size=image_size)


def build_owlv2(out_dir, config=None, *, seed: int = 0, image_size: int = 64) -> Path:
    """Random-initialised OWLv2 (``config`` None: the tiny one) + a processor with a generated CLIP vocabulary.

    A given ``config`` must have text bos/eos ids vocab_size-2/vocab_size-1 (CLIP's layout).
    """
    import torch
    from transformers import Owlv2ForObjectDetection, Owlv2ImageProcessor, Owlv2Processor

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    tokenizer = tiny_clip_tokenizer(out_dir, None if config is None else config.text_config.vocab_size)
    if config is None:
        config = owlv2_config(len(tokenizer), image_size=image_size)
    torch.manual_seed(seed)
    model = Owlv2ForObjectDetection(config).eval()
    side = config.vision_config.image_size
    image_processor = Owlv2ImageProcessor(size={"height": side, "width": side})
    processor = Owlv2Processor(image_processor=image_processor, tokenizer=tokenizer)
    model.save_pretrained(out_dir)
    processor.save_pretrained(out_dir)
    return out_dir
