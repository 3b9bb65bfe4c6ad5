"""Stand-in of GLIP's ``maskrcnn_benchmark.structures.bounding_box.BoxList`` (the part predictions use)."""
from __future__ import annotations

import torch


class BoxList:
    def __init__(self, bbox, image_size, mode: str = "xyxy"):
        self.bbox = torch.as_tensor(bbox, dtype=torch.float32).reshape(-1, 4)
        self.size = tuple(image_size)  # (width, height)
        self.mode = mode
        self.extra_fields: dict = {}

    def add_field(self, name, value) -> None:
        self.extra_fields[name] = value

    def get_field(self, name):
        return self.extra_fields[name]

    def has_field(self, name) -> bool:
        return name in self.extra_fields

    def convert(self, mode: str) -> "BoxList":
        if mode == self.mode:
            return self
        x1, y1, a, b = self.bbox.unbind(-1)
        if mode == "xyxy":  # from xywh (maskrcnn_benchmark's TO_REMOVE = 1 convention)
            box = torch.stack([x1, y1, x1 + a - 1, y1 + b - 1], dim=-1)
        else:
            box = torch.stack([x1, y1, a - x1 + 1, b - y1 + 1], dim=-1)
        out = BoxList(box, self.size, mode)
        out.extra_fields = dict(self.extra_fields)
        return out

    def resize(self, size) -> "BoxList":
        ratio_w, ratio_h = size[0] / self.size[0], size[1] / self.size[1]
        xyxy = self.convert("xyxy").bbox * torch.tensor([ratio_w, ratio_h, ratio_w, ratio_h])
        out = BoxList(xyxy, size, "xyxy").convert(self.mode)
        out.extra_fields = dict(self.extra_fields)
        return out

    def __len__(self) -> int:
        return self.bbox.shape[0]
