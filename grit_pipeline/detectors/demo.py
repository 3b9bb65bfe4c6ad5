"""Backend ``demo``: a tiny GLIP-style phrase-grounding model trained by this project on the synthetic world.

A toy for demos and tests, so that ``grit run`` works offline with no download: it knows the shapes and
colours of ``grit synth`` images and nothing else. Real runs use a real detector (``--detector hf``).

The model (``demo_model``: GLIP's structure, scaled down) gives each region of a 16x16 grid a box and a score
per phrase. Decoding keeps, per phrase, the regions that are local maxima of its score map (3x3) above
``min_score``, at most ``max_per_phrase`` of them; NMS and the 0.65 threshold are applied later by
``grounding``. This module imports torch only when a detector is built: the driver's check of the options
(``check_options``) reads the checkpoint's pickle without it, so a Ray run's driver never pays for torch.
"""
from __future__ import annotations

import math
import warnings
from importlib import resources
from pathlib import Path
from typing import Sequence

from PIL import Image

from grit_pipeline.safe_load import check_torch_file

from .base import Detection, Detector, register_detector

CHECKPOINT_FORMAT = "grit-demo-detector"


def default_checkpoint() -> Path:
    """The checkpoint shipped inside the package (``grit_pipeline/data/demo_detector.pt``)."""
    return Path(str(resources.files("grit_pipeline") / "data" / "demo_detector.pt"))


def missing_checkpoint(path: Path) -> str:
    return f"demo detector checkpoint not found: {path} (run `make demo-detector`)"


@register_detector("demo")
class DemoDetector(Detector):
    """The project's toy GLIP-style detector (see module docstring). ``model``: checkpoint path;
    default the one shipped in the package."""

    def __init__(self, model: str | Path | None = None, device: str = "auto", dtype=None, batch_size: int = 32,
                 min_score: float = 0.05, max_per_phrase: int = 5, **unused):
        import torch

        from .demo_model import load_checkpoint

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
            raise ValueError(missing_checkpoint(path))
        check_torch_file(path)

    def scores_and_boxes(self, images: Sequence[Image.Image], phrases: Sequence[Sequence[str]]):
        """Per image: (scores [P, N], boxes [N, 4]) as tensors, before decoding."""
        import torch

        from .demo_model import images_to_tensor

        out = []
        with torch.inference_mode():
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
        import torch
        import torch.nn.functional as F

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
