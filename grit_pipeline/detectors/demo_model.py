"""The ``demo`` backend's model: a tiny GLIP-style phrase-grounding network, its word vocabulary and checkpoint
files (the backend itself, ``demo.DemoDetector``, imports this module, and with it torch, only when built).

Model (GLIP's structure, scaled down):
- image backbone: a small CNN on a 128x128 resize giving a 16x16 grid of region features; each region
  regresses one box (distances from its centre to the four sides, FCOS-style);
- text encoder: mean of word embeddings over a word vocabulary built from the synthetic templates
  (unknown words map to UNK), then an MLP;
- alignment: score(region, phrase) = sigmoid(scale * <region, phrase> / sqrt(d) + bias).
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

from grit_pipeline.safe_load import load_torch_file

from .demo import CHECKPOINT_FORMAT, missing_checkpoint

INPUT_SIZE = 128
PAD, UNK = 0, 1
MAX_WORDS = 12


def _conv(cin: int, cout: int, stride: int = 1, dilation: int = 1) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, stride, padding=dilation, dilation=dilation, bias=False),
                         nn.BatchNorm2d(cout), nn.ReLU(inplace=True))


class _Residual(nn.Module):
    def __init__(self, channels: int, dilation: int):
        super().__init__()
        self.body = _conv(channels, channels, dilation=dilation)

    def forward(self, x):
        return x + self.body(x)


class DemoGroundingModel(nn.Module):
    """Region features + boxes from the image, phrase embeddings from words, dot-product alignment."""

    def __init__(self, vocab_size: int, width: int = 48, embed_dim: int = 32):
        super().__init__()
        self.config = {"vocab_size": vocab_size, "width": width, "embed_dim": embed_dim}
        self.backbone = nn.Sequential(
            _conv(3, 32, stride=2), _conv(32, 48, stride=2), _conv(48, width, stride=2),
            _Residual(width, 1), _Residual(width, 2), _Residual(width, 4),
        )
        self.box_head = nn.Sequential(nn.Conv2d(width, width, 1), nn.ReLU(inplace=True), nn.Conv2d(width, 4, 1))
        self.region_head = nn.Sequential(nn.Conv2d(width, width, 1), nn.ReLU(inplace=True),
                                         nn.Conv2d(width, embed_dim, 1))
        self.word_embedding = nn.EmbeddingBag(vocab_size, width, mode="mean", padding_idx=PAD)
        self.phrase_head = nn.Sequential(nn.Linear(width, width), nn.ReLU(inplace=True), nn.Linear(width, embed_dim))
        self.logit_scale = nn.Parameter(torch.tensor(1.0))
        self.logit_bias = nn.Parameter(torch.tensor(-4.0))
        self.embed_dim = embed_dim

    def image_features(self, pixels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """pixels [B,3,S,S] in [0,1] -> (regions [B,N,D], boxes [B,N,4] normalised xyxy), N = grid cells."""
        features = self.backbone((pixels - 0.5) / 0.25)
        b, _, gh, gw = features.shape
        regions = self.region_head(features).flatten(2).transpose(1, 2)
        distances = F.softplus(self.box_head(features)).flatten(2).transpose(1, 2) * 0.25
        ys, xs = torch.meshgrid(torch.arange(gh, device=pixels.device), torch.arange(gw, device=pixels.device),
                                indexing="ij")
        cx = ((xs.flatten() + 0.5) / gw).to(distances.dtype)
        cy = ((ys.flatten() + 0.5) / gh).to(distances.dtype)
        boxes = torch.stack([cx - distances[..., 0], cy - distances[..., 1], cx + distances[..., 2],
                             cy + distances[..., 3]], dim=-1)
        return regions, boxes

    def phrase_features(self, word_ids: torch.Tensor) -> torch.Tensor:
        """word_ids [P, T] (PAD = 0) -> [P, D]."""
        return self.phrase_head(self.word_embedding(word_ids))

    def align(self, regions: torch.Tensor, phrases: torch.Tensor) -> torch.Tensor:
        """regions [B,N,D], phrases [B,P,D] -> logits [B,P,N]."""
        return self.logit_scale * torch.einsum("bpd,bnd->bpn", phrases, regions) / math.sqrt(self.embed_dim) \
            + self.logit_bias


class WordVocabulary:
    def __init__(self, words: Sequence[str]):
        self.words = list(words)
        self.index = {w: i + 2 for i, w in enumerate(self.words)}

    def __len__(self) -> int:
        return len(self.words) + 2

    def encode(self, phrase: str) -> list[int]:
        from ..synth.vocab import tokenize

        ids = [self.index.get(w, UNK) for w in tokenize(phrase)][:MAX_WORDS]
        return ids or [UNK]

    def batch(self, phrases: Sequence[str]) -> torch.Tensor:
        rows = [self.encode(p) for p in phrases]
        out = torch.zeros((len(rows), max(1, max((len(r) for r in rows), default=1))), dtype=torch.long)
        for i, r in enumerate(rows):
            out[i, :len(r)] = torch.tensor(r)
        return out


def images_to_tensor(images: Sequence[Image.Image]) -> torch.Tensor:
    """Resize to the model's square input (boxes are normalised, so the stretch is undone for free)."""
    arrays = [np.asarray(im.convert("RGB").resize((INPUT_SIZE, INPUT_SIZE), Image.BILINEAR)) for im in images]
    return torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2).float() / 255.0


def save_checkpoint(path: str | Path, model: DemoGroundingModel, vocab: WordVocabulary, meta: dict) -> None:
    state = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
    blob = {"format": CHECKPOINT_FORMAT, "version": 1, "config": model.config, "vocab": vocab.words,
            "input_size": INPUT_SIZE, "meta": meta, "state_dict": state}
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    torch.save(blob, tmp)
    tmp.replace(path)


def load_checkpoint(path: str | Path) -> tuple[DemoGroundingModel, WordVocabulary, dict]:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(missing_checkpoint(path))
    blob = load_torch_file(path)  # weights_only: a crafted pickle is refused in one line
    if not isinstance(blob, dict) or blob.get("format") != CHECKPOINT_FORMAT:
        raise ValueError(f"{path} is not a demo detector checkpoint (format {CHECKPOINT_FORMAT!r})")
    vocab = WordVocabulary(blob["vocab"])
    model = DemoGroundingModel(**blob["config"])
    model.load_state_dict(blob["state_dict"])
    model.eval()
    return model, vocab, blob.get("meta", {})
