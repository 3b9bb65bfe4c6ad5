"""Kosmos-2 with a choice of image connector, and one loader for every model ``kosmos`` writes or reads.

``resampler`` is Kosmos-2's own connector (transformers' ``Kosmos2ImageToTextProjection``: a perceiver
resampler whose ``latent_query_num`` learnt queries attend over the ViT tokens). ``linear`` maps every ViT token
(class token included) to the text width with one linear layer, so each image slot is one image patch and
position reaches the decoder directly; ``latent_query_num`` is then the number of ViT tokens.

Trained from scratch on small data, the resampler's attention starts (and stays) uniform: every slot is the
whole-image mean and the model never learns where things are. The linear connector learns to localise within
minutes on CPU, so the small presets use it; the ``paper`` preset keeps the resampler and stays a plain
``Kosmos2ForConditionalGeneration``. A linear-connector model is saved with ``"connector": "linear"`` in its
``config.json`` and must be loaded with :func:`load_pretrained` (or the class below).
"""
from __future__ import annotations

from pathlib import Path

import torch
from torch import nn
from transformers import Kosmos2Config, Kosmos2ForConditionalGeneration

CONNECTORS = ("linear", "resampler")


class LinearConnector(nn.Module):
    """One image slot per ViT token: a linear map of the (L2-normalised) token features to the text width."""

    def __init__(self, config: Kosmos2Config):
        super().__init__()
        self.dense = nn.Linear(config.vision_config.hidden_size, config.text_config.embed_dim)

    def forward(self, features: torch.Tensor):
        # same contract as Kosmos2ImageToTextProjection: (image embeddings, attention weights)
        return self.dense(features), None


class Kosmos2LinearConnectorForConditionalGeneration(Kosmos2ForConditionalGeneration):
    """``Kosmos2ForConditionalGeneration`` whose resampler is replaced by :class:`LinearConnector`."""

    def __init__(self, config: Kosmos2Config):
        super().__init__(config)
        self.image_to_text_projection = LinearConnector(config)
        self.post_init()

    def _init_weights(self, module: nn.Module):
        super()._init_weights(module)
        if isinstance(module, LinearConnector):
            nn.init.normal_(module.dense.weight, std=self.config.text_config.init_std)
            nn.init.zeros_(module.dense.bias)


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
    return Kosmos2LinearConnectorForConditionalGeneration if connector == "linear" else Kosmos2ForConditionalGeneration


def load_pretrained(path: str | Path, **kwargs):
    """A ``save_pretrained`` directory as the right class (linear connector or transformers' Kosmos-2);
    ``kwargs`` go to ``from_pretrained``."""
    config = Kosmos2Config.from_pretrained(str(path))
    return model_class(config).from_pretrained(str(path), **kwargs)
