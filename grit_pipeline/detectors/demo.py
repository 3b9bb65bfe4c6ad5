"""Backend ``demo``: a tiny GLIP-style phrase-grounding model trained by this project on the synthetic world.

A toy for demos and tests, so that ``grit run`` works offline with no download: it knows the shapes and
colours of ``grit synth`` images and nothing else. Real runs use a real detector (``--detector hf``).

Model (GLIP's structure, scaled down):
- image backbone: a small CNN on a 128x128 resize giving a 16x16 grid of region features; each region
  regresses one box (distances from its centre to the four sides, FCOS-style);
- text encoder: mean of word embeddings over a word vocabulary built from the synthetic templates
  (unknown words map to UNK), then an MLP;
- alignment: score(region, phrase) = sigmoid(scale * <region, phrase> / sqrt(d) + bias).
Decoding keeps, per phrase, the regions that are local maxima of its score map (3x3) above ``min_score``,
at most ``max_per_phrase`` of them; NMS and the 0.65 threshold are applied later by ``grounding``.
"""
from __future__ import annotations

import math
import warnings
from importlib import resources
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

from grit_pipeline.safe_load import check_torch_file, load_torch_file

from .base import Detection, Detector, register_detector

CHECKPOINT_FORMAT = "grit-demo-detector"
INPUT_SIZE = 128
PAD, UNK = 0, 1
MAX_WORDS = 12


def default_checkpoint() -> Path:
    """The checkpoint shipped inside the package (``grit_pipeline/data/demo_detector.pt``)."""
    return Path(str(resources.files("grit_pipeline") / "data" / "demo_detector.pt"))


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


def _missing_checkpoint(path: Path) -> str:
    return f"demo detector checkpoint not found: {path} (run `make demo-detector`)"


def load_checkpoint(path: str | Path) -> tuple[DemoGroundingModel, WordVocabulary, dict]:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(_missing_checkpoint(path))
    blob = load_torch_file(path)  # weights_only: a crafted pickle is refused in one line
    if not isinstance(blob, dict) or blob.get("format") != CHECKPOINT_FORMAT:
        raise ValueError(f"{path} is not a demo detector checkpoint (format {CHECKPOINT_FORMAT!r})")
    vocab = WordVocabulary(blob["vocab"])
    model = DemoGroundingModel(**blob["config"])
    model.load_state_dict(blob["state_dict"])
    model.eval()
    return model, vocab, blob.get("meta", {})


@register_detector("demo")
class DemoDetector(Detector):
    """The project's toy GLIP-style detector (see module docstring). ``model``: checkpoint path;
    default the one shipped in the package."""

    def __init__(self, model: str | Path | None = None, device: str = "auto", dtype=None, batch_size: int = 32,
                 min_score: float = 0.05, max_per_phrase: int = 5, **unused):
        if unused:
            warnings.warn(f"demo detector ignores options {sorted(unused)}", stacklevel=2)
        self.checkpoint = Path(model) if model else default_checkpoint()
        self.model, self.vocab, self.meta = load_checkpoint(self.checkpoint)
        if device == "auto":
            device = "cuda" if torch.cuda.is_available() else "cpu"
        self.device = torch.device(device)
        self.model.to(self.device)
        self.batch_size = int(batch_size)
        self.min_score = float(min_score)
        self.max_per_phrase = int(max_per_phrase)

    @classmethod
    def check_options(cls, model: str | Path | None = None, **unused) -> None:
        """The driver's check before any worker starts (``base.check_detector``): the checkpoint exists and
        names nothing but tensors and plain values (its tensors are not read)."""
        path = Path(model) if model else default_checkpoint()
        if not path.is_file():
            raise ValueError(_missing_checkpoint(path))
        check_torch_file(path)

    @torch.inference_mode()
    def scores_and_boxes(self, images: Sequence[Image.Image], phrases: Sequence[Sequence[str]]):
        """Per image: (scores [P, N], boxes [N, 4]) as tensors, before decoding."""
        out = []
        for start in range(0, len(images), self.batch_size):
            chunk = images[start:start + self.batch_size]
            regions, boxes = self.model.image_features(images_to_tensor(chunk).to(self.device))
            for j, image_phrases in enumerate(phrases[start:start + self.batch_size]):
                if not image_phrases:
                    out.append((torch.zeros((0, regions.shape[1])), boxes[j].cpu()))
                    continue
                phrase_emb = self.model.phrase_features(self.vocab.batch(list(image_phrases)).to(self.device))
                logits = self.model.align(regions[j:j + 1], phrase_emb[None])[0]
                out.append((torch.sigmoid(logits).float().cpu(), boxes[j].float().cpu().clamp(0, 1)))
        return out

    def detect(self, images: Sequence[Image.Image], phrases: Sequence[Sequence[str]]) -> list[list[Detection]]:
        if len(images) != len(phrases):
            raise ValueError(f"{len(images)} images but {len(phrases)} phrase lists")
        results: list[list[Detection]] = []
        for scores, boxes in self.scores_and_boxes(list(images), list(phrases)):
            detections: list[Detection] = []
            if scores.numel():
                grid = int(round(math.sqrt(scores.shape[1])))
                maps = scores.view(-1, 1, grid, grid)
                peaks = (maps == F.max_pool2d(maps, 3, stride=1, padding=1)).view(scores.shape[0], -1)
                candidates = torch.where(peaks & (scores >= self.min_score), scores, torch.zeros_like(scores))
                top = torch.topk(candidates, k=min(self.max_per_phrase, candidates.shape[1]), dim=1)
                for p in range(scores.shape[0]):
                    for value, cell in zip(top.values[p].tolist(), top.indices[p].tolist()):
                        if value <= 0:
                            break
                        x1, y1, x2, y2 = boxes[cell].tolist()
                        if x2 > x1 and y2 > y1:
                            detections.append(Detection(p, (x1, y1, x2, y2), float(value)))
            results.append(detections)
        return results
