"""Kosmos-2 with a choice of image connector, and one loader for every model ``kosmos`` writes or reads.

``resampler`` is Kosmos-2's own connector (transformers' ``Kosmos2ImageToTextProjection``: a perceiver
resampler whose ``latent_query_num`` learnt queries attend over the ViT tokens). ``linear`` maps every ViT token
(class token included) to the text width with one linear layer, so each image slot is one image patch and
position reaches the decoder directly; ``latent_query_num`` is then the number of ViT tokens.

``merged`` is the linear connector over 2 x 2 blocks of patch tokens (their features side by side, one linear
layer; the class token by its own): a quarter of the slots, each still made of the fine patches' features.

Trained from scratch on small data, the resampler's attention starts (and stays) uniform: every slot is the
whole-image mean and the model never learns where things are. The linear connectors learn to localise within
minutes on CPU, so the small presets use them (``tiny`` the merged one: its decoder then reads 17 image slots
instead of 65, and a CPU step costs about 0.6x); the ``paper`` preset keeps the resampler and stays a plain
``Kosmos2ForConditionalGeneration``. A linear- or merged-connector model is saved with its ``"connector"`` in its
``config.json`` and must be loaded with :func:`load_pretrained` (or the class below).
"""
from __future__ import annotations

import math
from pathlib import Path

import torch
from torch import nn
from transformers import Kosmos2Config, Kosmos2ForConditionalGeneration

CONNECTORS = ("linear", "merged", "resampler")
# How a from-scratch ViT's position embeddings start: transformers' random normal (std 0.02, so weak beside the
# patch content, ~0.3), or a fixed-frequency 2D sine-cosine code of each patch's centre (as MAE's fixed embedding)
# at the patch content's scale, which the model goes on learning. Measured on the level-1 world (tiny preset,
# 3,000 steps): held-out REC 77% with sincos2d vs 63% random; 21% vs 1% after 1,000 steps.
VISION_POSITION_INITS = ("sincos2d", "random")
SINCOS_RMS = 0.3


class LinearConnector(nn.Module):
    """One image slot per ViT token: a linear map of the (L2-normalised) token features to the text width."""

    def __init__(self, config: Kosmos2Config):
        super().__init__()
        self.dense = nn.Linear(config.vision_config.hidden_size, config.text_config.embed_dim)

    def forward(self, features: torch.Tensor):
        # same contract as Kosmos2ImageToTextProjection: (image embeddings, attention weights)
        return self.dense(features), None


class MergedConnector(nn.Module):
    """One image slot per 2 x 2 block of ViT patch tokens: the four tokens' features side by side, mapped to the
    text width by one linear layer (the class token by its own), so the decoder reads a quarter of the slots while
    every slot keeps the fine patches' features (the token merge of Qwen2-VL's and InternVL's connectors)."""

    def __init__(self, config: Kosmos2Config):
        super().__init__()
        width = config.vision_config.hidden_size
        self.grid = config.vision_config.image_size // config.vision_config.patch_size
        if self.grid % 2:
            raise ValueError(f"the merged connector needs an even patch grid, not {self.grid} x {self.grid}")
        self.dense = nn.Linear(4 * width, config.text_config.embed_dim)
        self.class_dense = nn.Linear(width, config.text_config.embed_dim)

    def forward(self, features: torch.Tensor):
        images, _, width = features.shape
        half = self.grid // 2
        patches = features[:, 1:].reshape(images, half, 2, half, 2, width).permute(0, 1, 3, 2, 4, 5)
        merged = self.dense(patches.reshape(images, half * half, 4 * width))
        return torch.cat([self.class_dense(features[:, :1]), merged], dim=1), None


class Kosmos2LinearConnectorForConditionalGeneration(Kosmos2ForConditionalGeneration):
    """``Kosmos2ForConditionalGeneration`` whose resampler is replaced by :class:`LinearConnector` (or, for
    ``"connector": "merged"``, :class:`MergedConnector`)."""

    def __init__(self, config: Kosmos2Config):
        super().__init__(config)
        merged = getattr(config, "connector", "linear") == "merged"
        self.image_to_text_projection = MergedConnector(config) if merged else LinearConnector(config)
        self.post_init()

    def _init_weights(self, module: nn.Module):
        super()._init_weights(module)
        if isinstance(module, (LinearConnector, MergedConnector)):
            for layer in module.modules():
                if isinstance(layer, nn.Linear):
                    nn.init.normal_(layer.weight, std=self.config.text_config.init_std)
                    nn.init.zeros_(layer.bias)


def sincos2d(xs: torch.Tensor, ys: torch.Tensor, dim: int, max_cycles: float) -> torch.Tensor:
    """(n, dim) codes of points (xs, ys) in [0, 1]: sin and cos of x and of y at ``dim // 4`` frequencies spaced
    geometrically from half a cycle to ``max_cycles`` cycles across the image; each row has unit RMS."""
    quarter = dim // 4
    cycles = torch.exp(torch.linspace(math.log(0.5), math.log(max_cycles), quarter))
    angle_x, angle_y = 2 * math.pi * xs[:, None] * cycles, 2 * math.pi * ys[:, None] * cycles
    code = torch.cat([angle_x.sin(), angle_x.cos(), angle_y.sin(), angle_y.cos()], dim=1)
    return nn.functional.pad(code, (0, dim - code.size(1))) * math.sqrt(dim / (2 * quarter))


def init_vision_positions(model: Kosmos2ForConditionalGeneration, how: str = "sincos2d",
                          rms: float = SINCOS_RMS) -> None:
    """Set the ViT's patch position embeddings to a 2D sine-cosine code of the patch centres (per-component
    RMS ``rms``; class token position 0); ``random`` leaves transformers' initialisation."""
    if how not in VISION_POSITION_INITS:
        raise ValueError(f"unknown vision position init {how!r}; choose one of {VISION_POSITION_INITS}")
    if how == "random":
        return
    embeddings = model.vision_model.model.embeddings
    side = embeddings.image_size // embeddings.patch_size
    index = torch.arange(side * side)  # patches in row-major order, as the patch convolution flattens them
    xs, ys = ((index % side).float() + 0.5) / side, ((index // side).float() + 0.5) / side
    with torch.no_grad():
        weight = embeddings.position_embedding.weight
        weight[1:] = sincos2d(xs, ys, weight.size(1), max_cycles=side / 2).to(weight) * rms
        weight[0] = 0.0


LOCATION_EMBEDDING_INITS = ("sincos2d", "random")


def init_location_embeddings(model: Kosmos2ForConditionalGeneration, location_ids, grid: int = 32,
                             how: str = "sincos2d") -> None:
    """Set the embeddings of the location tokens (``location_ids``: ``<patch_index_0000..>`` in cell order, row
    by row) to a 2D sine-cosine code of their cells' centres, at the scale of the other tokens' (``init_std``
    per component). The LM head shares these rows, so from the first step a hidden state that points at one
    cell scores the cells around it nearly as high; ``random`` leaves transformers' initialisation."""
    if how not in LOCATION_EMBEDDING_INITS:
        raise ValueError(f"unknown location embedding init {how!r}; choose one of {LOCATION_EMBEDDING_INITS}")
    if how == "random":
        return
    ids = torch.as_tensor(location_ids)
    if ids.numel() != grid * grid:
        raise ValueError(f"expected {grid * grid} location tokens, got {ids.numel()}")
    cell = torch.arange(grid * grid)
    xs, ys = ((cell % grid).float() + 0.5) / grid, ((cell // grid).float() + 0.5) / grid
    with torch.no_grad():
        weight = model.get_input_embeddings().weight
        code = sincos2d(xs, ys, weight.size(1), max_cycles=grid / 2)
        weight[ids] = (code * model.config.text_config.init_std).to(weight)


CLIP_MODEL_TYPES = ("clip", "clip_vision_model")
VISION_SIZES = ("hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads", "image_size",
                "patch_size")


def check_vision_tower(source: str | Path, sizes: dict[str, int]):
    """The CLIP vision config at ``source`` (a hub id or ``save_pretrained`` directory of a ``CLIPModel`` or
    ``CLIPVisionModel``) when its ``VISION_SIZES`` are ``sizes``; otherwise one ``ValueError`` line. Reads the
    config only, so the driver checks it before anything starts."""
    from transformers import CLIPVisionConfig

    try:
        kind = CLIPVisionConfig.get_config_dict(str(source))[0].get("model_type")
        config = CLIPVisionConfig.from_pretrained(str(source))
    except (OSError, ValueError, KeyError) as error:
        reason = (str(error).strip().splitlines() or [type(error).__name__])[0]
        raise ValueError(f"--vision-init {source}: not a loadable CLIP vision model ({reason})") from None
    # transformers reads any config with a vision part (a Kosmos-2's too) as a CLIP vision config, then leaves
    # every weight it cannot match at random: only a CLIP is taken
    if kind not in CLIP_MODEL_TYPES:
        what = f"a {kind} model" if kind else "no model_type"
        raise ValueError(f"--vision-init {source}: {what}, not a CLIP (model_type {' or '.join(CLIP_MODEL_TYPES)})")
    differ = [f"{name} {getattr(config, name)} (the model's {sizes[name]})" for name in VISION_SIZES
              if getattr(config, name) != sizes[name]]
    if differ:
        raise ValueError(f"--vision-init {source}: its vision tower does not fit the model: " + ", ".join(differ))
    return config


def load_vision_tower(model: Kosmos2ForConditionalGeneration, source: str | Path) -> None:
    """Start the model's ViT from a CLIP vision tower, as Kosmos-1 and Kosmos-2 start from CLIP ViT-L/14
    (``check_vision_tower`` first; safetensors weights only)."""
    from transformers import CLIPVisionModel
    from transformers.utils import logging as hf_logging

    ours = model.config.vision_config
    check_vision_tower(source, {name: getattr(ours, name) for name in VISION_SIZES})
    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()  # a CLIPModel's text tower is "unexpected" here, by design: not worth a table
    try:
        clip, loading = CLIPVisionModel.from_pretrained(str(source), use_safetensors=True, output_loading_info=True)
    except (OSError, ValueError) as error:
        reason = (str(error).strip().splitlines() or [type(error).__name__])[0]
        raise ValueError(f"--vision-init {source}: its weights cannot be loaded ({reason})") from None
    finally:
        hf_logging.set_verbosity(verbosity)
    if loading["missing_keys"]:
        missing = sorted(loading["missing_keys"])
        raise ValueError(f"--vision-init {source}: its weights lack {len(missing)} of the vision tower's tensors "
                         f"(e.g. {missing[0]})")
    # transformers 5 keeps CLIPVisionModel's layers at its top level, 4.x under .vision_model
    tower = getattr(clip, "vision_model", clip)
    model.vision_model.model.load_state_dict(tower.state_dict())


FREEZE_VISION = ("none", "all-but-last")


def freeze_vision(model: Kosmos2ForConditionalGeneration, how: str = "none") -> None:
    """``all-but-last``: the ViT's embeddings, first layer norm and every encoder layer but the last stop training
    (Kosmos-1 freezes its CLIP ViT-L/14 but the last layer); the last layer, the final norm, the connector and the
    decoder train. ``none`` trains everything."""
    if how not in FREEZE_VISION:
        raise ValueError(f"unknown --freeze-vision {how!r}; choose one of {FREEZE_VISION}")
    if how == "none":
        return
    tower = model.vision_model.model
    for module in (tower.embeddings, tower.pre_layrnorm, *tower.encoder.layers[:-1]):
        module.requires_grad_(False)


def vision_tokens(config: Kosmos2Config) -> int:
    """ViT tokens per image: patches plus the class token."""
    vision = config.vision_config
    return (vision.image_size // vision.patch_size) ** 2 + 1


def connector_of(config: Kosmos2Config) -> str:
    return getattr(config, "connector", "resampler")


def model_class(config: Kosmos2Config):
    connector = connector_of(config)
    if connector not in CONNECTORS:
        raise ValueError(f"unknown connector {connector!r} in the model config; choose one of {CONNECTORS}")
    if connector == "resampler":
        return Kosmos2ForConditionalGeneration
    return Kosmos2LinearConnectorForConditionalGeneration


def load_pretrained(path: str | Path, **kwargs):
    """A ``save_pretrained`` directory as the right class (linear connector or transformers' Kosmos-2);
    ``kwargs`` go to ``from_pretrained``."""
    config = Kosmos2Config.from_pretrained(str(path))
    return model_class(config).from_pretrained(str(path), **kwargs)


def image_embeddings(model, pixel_values: torch.Tensor) -> torch.Tensor | None:
    """(images, slots, width) embeddings of a batch of images (vision tower + connector), None for no image."""
    if pixel_values is None or pixel_values.size(0) == 0:
        return None
    return model.get_image_features(pixel_values, return_dict=True).pooler_output


def decoder_states(model, batch: dict, image_embeds: torch.Tensor | None = None) -> torch.Tensor:
    """The decoder's last hidden states of a batch whose rows carry 0..N images each (``kosmos.sequence.collate``):
    the image embeddings go into the ``image_embeds_position_mask`` positions in row order; text-only rows need none."""
    if image_embeds is None and batch.get("pixel_values") is not None:
        image_embeds = image_embeddings(model, batch["pixel_values"])
    return model.text_model.model(
        input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], image_embeds=image_embeds,
        image_embeds_position_mask=batch["image_embeds_position_mask"] if image_embeds is not None else None,
        use_cache=False,
    ).last_hidden_state


def sequence_logits(model, batch: dict, image_embeds: torch.Tensor | None = None) -> torch.Tensor:
    """Next-token logits at every position of a batch (``decoder_states`` through the LM head)."""
    return model.text_model.lm_head(decoder_states(model, batch, image_embeds))


def next_token_targets(labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(positions whose next token is a target, those targets): the mask over ``labels[:, :-1]``'s positions and
    the target ids in row-major order."""
    targets = labels[:, 1:]
    where = targets != -100
    return where, targets[where]


def target_logits(model, batch: dict, image_embeds: torch.Tensor | None = None) -> torch.Tensor:
    """Next-token logits at the target positions only, row-major, (targets, vocab): what training needs. Image
    slots, prompts and padding, most of a grounded row, never go through the LM head (on the tiny preset the head
    over every position was about a third of a step's arithmetic)."""
    where, _ = next_token_targets(batch["labels"])
    return model.text_model.lm_head(decoder_states(model, batch, image_embeds)[:, :-1][where])


class MixtureStep(nn.Module):
    """One training forward over the batches of every source of a step, for DistributedDataParallel to wrap
    (one forward, one backward per micro-step): the vision tower and connector run once over all images of
    the step, then the decoder over each source's batch. ``targets_only``: each source's ``target_logits``
    (what the loss reads) instead of the logits at every position."""

    def __init__(self, model, targets_only: bool = False):
        super().__init__()
        self.model = model
        self.targets_only = targets_only

    def forward(self, batches: list[dict]) -> list[torch.Tensor]:
        counts = [int(b["pixel_values"].size(0)) for b in batches]
        embeds = None
        if sum(counts):
            embeds = image_embeddings(self.model, torch.cat([b["pixel_values"] for b in batches if b["pixel_values"].size(0)]))
        head = target_logits if self.targets_only else sequence_logits
        logits, start = [], 0
        for batch, n in zip(batches, counts):
            part = embeds[start:start + n] if n else None
            start += n
            logits.append(head(self.model, batch, part))
        return logits
