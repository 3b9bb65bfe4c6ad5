"""Model presets built with transformers' ``Kosmos2Config`` (the paper's model, section 3, and the release's training configuration).

``paper`` is the 1.6B Kosmos-2 shape (ViT-L/14 at 224, 24-layer 2048-wide decoder, 64 latent queries);
``small`` is a ~42M-parameter model meant for one GPU; ``tiny`` (~0.6M) is for CPU tests and ``make e2e``.
``paper`` keeps Kosmos-2's resampler connector; ``small`` uses the linear connector (one image slot per ViT token,
see ``kosmos.modeling``), which learns to localise from scratch where the resampler does not, and ``tiny`` the
merged one (one slot per 2 x 2 ViT patches: a quarter of the decoder's image slots, so more steps per CPU minute)
with its location tokens starting as a 2D code of their cells.
The text vocabulary size is not part of a preset: it is the size of the tokenizer the model is built with.
"""
from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class Preset:
    """Sizes of a from-scratch Kosmos-2 plus the training defaults that go with them."""

    name: str
    image_size: int
    patch_size: int
    vision_hidden: int
    vision_layers: int
    vision_heads: int
    vision_ffn: int
    text_hidden: int
    text_layers: int
    text_heads: int
    text_ffn: int
    latent_query_num: int
    max_positions: int
    dropout: float
    tokenizer_vocab: int  # BPE vocabulary learnt from captions (before tag and patch-index tokens)
    connector: str = "linear"  # "linear" (one slot per ViT token), "merged" (one per 2 x 2) or "resampler"
    # how a from-scratch model's location-token embeddings start (kosmos.modeling.init_location_embeddings)
    location_embedding_init: str = "random"
    # training defaults (paper: lr 2e-4, 375 warm-up, 60k steps; scaled down for the small presets)
    lr: float = 2e-4
    warmup_steps: int = 375
    decay_fraction: float = 1.0  # the last part of the run over which the lr decays (1: all of it after warm-up)
    max_steps: int = 60_000
    batch_size: int = 8
    max_length: int = 128  # text tokens after the image slots
    # rows of each mixture source per grounded row when --mix gives no batch size; None: the paper's Table 7
    mixture_shares: dict | None = None
    # loss weight of each mixture source's targets when training from scratch (--source-weights overrides); 1 if absent
    mixture_loss_weights: dict | None = None
    # data options (DataConfig fields) of from-scratch pretraining when not given on the command line
    data_defaults: dict | None = None
    extra: dict = field(default_factory=dict)

    def vision_sizes(self) -> dict[str, int]:
        """The ViT's sizes under their ``Kosmos2VisionConfig`` (and ``CLIPVisionConfig``) names."""
        return dict(hidden_size=self.vision_hidden, intermediate_size=self.vision_ffn,
                    num_hidden_layers=self.vision_layers, num_attention_heads=self.vision_heads,
                    image_size=self.image_size, patch_size=self.patch_size)


# The small presets train on one CPU or GPU, where every image costs: image-caption pairs at a quarter of the grounded
# rows (the paper: as many) keep a tiny mixture step near 1.5x a GRIT-only step (2.5x at the paper's share; 2.0-2.1x
# fewer steps in the 10-minute studies, the loader beside the training); text and interleaved keep Table 7's share.
SMALL_MIXTURE_SHARES = {"grounded": 1.0, "captions": 0.25, "text": 93 / 1117, "interleaved": 47 / 1117}
# A text row fills its whole sequence with targets (a tiny preset's 256 against ~10 of a grounded row's), so at weight
# 1 one text and one interleaved row were about half of a step's objective and grounding learnt at half speed per
# step; at a quarter they are about a fifth, and the language target still holds (docs/companion.md).
SMALL_MIXTURE_LOSS_WEIGHTS = {"text": 0.25, "interleaved": 0.25}
# The tiny preset learns to localise in minutes on CPU only with every grounded sample carrying its boxes and a
# random part of the image in view, sides 0.75-1 of it: on three level-1 worlds of new seeds, 87.5-91.5% held-out REC
# in 8,500 steps (six runs, mean 89.6%) against 85.0-90.5% (mean 87.5%) with views down to 0.6, 80.5-83.0% down to
# 0.4, 80.0-87.0% with whole images and 76-85.5% with the released loader's 0.5 and whole images (docs/companion.md).
TINY_DATA_DEFAULTS = {"grounding_prob": 1.0, "zoom_min_scale": 0.75}
# With the merged connector a tiny CPU step costs about 0.6x (17 image slots in the decoder instead of 65). With
# transformers' random location rows it can start to localise late (held-out REC after 2,000 steps 64.5% / 10.0% on
# two new level-1 worlds; in one 10-minute `make e2e` run 2% at step 1,500 and 86.5% at the end); rows starting as
# the cells' 2D code start it at once (77.5% / 72.0%; the linear connector 75.0%). A mixture step costs about 2x, so
# a mixture run is early in its curve when a budget ends: there the code is what makes the merged connector work
# (96.5% on the `make e2e` world in 10 minutes, against 52.0% with random rows and 67.0% with the linear
# connector). In whole 10-minute GRIT-only runs the two inits are within the runs' spread (docs/companion.md).
TINY_CONNECTOR, TINY_LOCATION_EMBEDDING_INIT = "merged", "sincos2d"
# A 10-minute CPU run ends early in its curve: at the peak lr until the last 30% of it, then the linear decay, the
# tiny preset reached 90.5-93.5% held-out REC on four new level-1 worlds where a decay over the whole run (the
# paper's shape) reached 84.0-90.5% (docs/companion.md).
TINY_DECAY_FRACTION = 0.3

PRESETS: dict[str, Preset] = {
    "tiny": Preset(
        name="tiny", image_size=64, patch_size=8, vision_hidden=64, vision_layers=2, vision_heads=4,
        vision_ffn=128, text_hidden=128, text_layers=2, text_heads=4, text_ffn=256, latent_query_num=16,
        max_positions=256, dropout=0.0, tokenizer_vocab=400, lr=1e-3, warmup_steps=20, max_steps=400,
        batch_size=16, max_length=64, mixture_shares=SMALL_MIXTURE_SHARES,
        mixture_loss_weights=SMALL_MIXTURE_LOSS_WEIGHTS, data_defaults=TINY_DATA_DEFAULTS, connector=TINY_CONNECTOR,
        location_embedding_init=TINY_LOCATION_EMBEDDING_INIT, decay_fraction=TINY_DECAY_FRACTION,
    ),
    "small": Preset(
        name="small", image_size=224, patch_size=16, vision_hidden=384, vision_layers=6, vision_heads=6,
        vision_ffn=1536, text_hidden=512, text_layers=8, text_heads=8, text_ffn=2048, latent_query_num=64,
        max_positions=512, dropout=0.1, tokenizer_vocab=8000, lr=5e-4, warmup_steps=375, max_steps=20_000,
        batch_size=64, max_length=96, mixture_shares=SMALL_MIXTURE_SHARES,
        mixture_loss_weights=SMALL_MIXTURE_LOSS_WEIGHTS,
    ),
    "paper": Preset(
        name="paper", image_size=224, patch_size=14, vision_hidden=1024, vision_layers=24, vision_heads=16,
        vision_ffn=4096, text_hidden=2048, text_layers=24, text_heads=32, text_ffn=8192, latent_query_num=64,
        max_positions=2048, dropout=0.1, tokenizer_vocab=64000, connector="resampler", lr=2e-4, warmup_steps=375, max_steps=60_000,
        batch_size=64, max_length=128,
    ),
}


def get_preset(name: str) -> Preset:
    try:
        return PRESETS[name]
    except KeyError:
        raise ValueError(f"unknown preset {name!r}; choose one of {sorted(PRESETS)}") from None


def build_config(preset: Preset, vocab_size: int, pad_token_id: int = 1, bos_token_id: int = 0,
                 eos_token_id: int = 2, connector: str | None = None):
    """A ``Kosmos2Config`` of the preset's sizes for a tokenizer of ``vocab_size`` tokens.

    ``connector`` (default: the preset's): with ``linear`` or ``merged`` the image slots come from the ViT tokens
    (:func:`image_slots`), so ``latent_query_num`` is their number and the connector is recorded in the config."""
    from transformers import Kosmos2Config

    from kosmos.modeling import CONNECTORS

    connector = connector or preset.connector
    if connector not in CONNECTORS:
        raise ValueError(f"unknown connector {connector!r}; choose one of {CONNECTORS}")

    text = dict(
        vocab_size=vocab_size, embed_dim=preset.text_hidden, layers=preset.text_layers,
        attention_heads=preset.text_heads, ffn_dim=preset.text_ffn, max_position_embeddings=preset.max_positions,
        dropout=preset.dropout, attention_dropout=preset.dropout, pad_token_id=pad_token_id,
        bos_token_id=bos_token_id, eos_token_id=eos_token_id,
    )
    vision = preset.vision_sizes()
    slots = image_slots(preset.image_size, preset.patch_size, connector, preset.latent_query_num)
    if connector in ("linear", "merged"):
        return Kosmos2Config(text_config=text, vision_config=vision, latent_query_num=slots, connector=connector)
    return Kosmos2Config(text_config=text, vision_config=vision, latent_query_num=slots)


def image_slots(image_size: int, patch_size: int, connector: str, latent_query_num: int) -> int:
    """Image slots per image in the decoder: one per ViT token (``linear``: patches + class token), one per 2 x 2
    patches + the class token (``merged``), or the resampler's ``latent_query_num`` queries."""
    grid = image_size // patch_size
    if connector == "linear":
        return grid * grid + 1
    if connector == "merged":
        return (grid // 2) ** 2 + 1
    return latent_query_num


def build_model(preset: Preset, vocab_size: int, seed: int = 0, connector: str | None = None,
                vision_position_init: str = "sincos2d", **token_ids):
    """A from-scratch Kosmos-2 of the preset's connector (deterministic for a seed); the ViT's position
    embeddings start as ``vision_position_init`` (see ``kosmos.modeling.init_vision_positions``)."""
    import torch

    from kosmos.modeling import init_vision_positions, model_class

    torch.manual_seed(seed)
    config = build_config(preset, vocab_size, connector=connector, **token_ids)
    model = model_class(config)(config)
    init_vision_positions(model, vision_position_init)
    return model


def count_parameters(model) -> int:
    return sum(p.numel() for p in model.parameters())
