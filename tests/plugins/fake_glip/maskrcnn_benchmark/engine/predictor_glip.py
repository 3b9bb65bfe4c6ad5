"""Stand-in of GLIP's ``maskrcnn_benchmark.engine.predictor_glip.GLIPDemo`` (see the package docstring)."""
from __future__ import annotations

import os

import numpy as np
import torch

from maskrcnn_benchmark.structures.bounding_box import BoxList

CALLS: list[dict] = []  # every compute_prediction call of this process, for tests to inspect


class _WordTokenizer:
    """bert-like: [CLS] + one token per word or punctuation mark + [SEP]."""

    def __call__(self, text, return_tensors=None):
        texts = [text] if isinstance(text, str) else list(text)
        ids = [[101] + [1000 + len(w) for w in t.replace(".", " . ").split()] + [102] for t in texts]
        return {"input_ids": ids[0] if isinstance(text, str) else ids}


class GLIPDemo:
    def __init__(self, cfg, confidence_threshold=0.7, min_image_size=None, show_mask_heatmaps=False,
                 masks_per_dim=5, load_model=True):
        self.cfg = cfg.clone()
        if load_model:
            self.device = torch.device(cfg.MODEL.DEVICE)
            if not os.path.isfile(cfg.MODEL.WEIGHT):  # DetectronCheckpointer.load
                raise FileNotFoundError(cfg.MODEL.WEIGHT)
        self.min_image_size = min_image_size
        self.show_mask_heatmaps = show_mask_heatmaps
        self.confidence_threshold = confidence_threshold
        self.tokenizer = _WordTokenizer()
        print("stand-in GLIPDemo built")  # GLIP prints; the adapter keeps it off stdout

    def compute_prediction(self, original_image, original_caption, custom_entity=None):
        if not (isinstance(original_image, np.ndarray) and original_image.dtype == np.uint8
                and original_image.ndim == 3 and original_image.shape[2] == 3):
            raise TypeError("GLIPDemo takes an OpenCV image: uint8 numpy array (H, W, 3), BGR")
        if isinstance(original_caption, list):  # as GLIP: every name of the list in ONE entity
            caption, spans = "", []
            for word in original_caption:
                spans.append([len(caption), len(caption) + len(word)])
                caption += word + " . "
            tokens_positive = [spans]
        elif custom_entity is None:
            raise NotImplementedError("stand-in: GLIP's NER path (nltk) is not imitated; give custom_entity")
        else:
            caption = original_caption
            tokens_positive = [[list(entity["char_bounds"])] for entity in custom_entity]
        if len(self.tokenizer(caption)["input_ids"]) > self.cfg.MODEL.LANGUAGE_BACKBONE.MAX_QUERY_LEN:
            raise RuntimeError("caption longer than MAX_QUERY_LEN tokens")
        print(tokens_positive)
        self.plus = 1 if self.cfg.MODEL.RPN_ARCHITECTURE == "VLDYHEAD" else 0
        height, width = original_image.shape[:-1]
        scale = (self.min_image_size / min(height, width)) if self.min_image_size else 1.0
        rw, rh = round(width * scale), round(height * scale)  # the resized image the model sees
        boxes, scores, labels = [], [], []
        n = len(tokens_positive)
        for k in range(n):
            boxes.append([k / n * rw, 0.1 * rh, (k + 1) / n * rw, 0.9 * rh])
            scores.append(0.9)
            labels.append(k + self.plus)
        if n:
            boxes.append([0.01 * rw, 0.11 * rh, 1 / n * rw + 0.01 * rw, 0.91 * rh])
            scores.append(0.8)
            labels.append(0 + self.plus)
            boxes.append([0.0, 0.0, 0.05 * rw, 0.05 * rh])
            scores.append(0.3)
            labels.append(n - 1 + self.plus)
        prediction = BoxList(boxes, (rw, rh), mode="xyxy")
        prediction.add_field("scores", torch.tensor(scores))
        prediction.add_field("labels", torch.tensor(labels, dtype=torch.int64))
        CALLS.append({"caption": caption, "entities": [caption[a:b] for (a, b), in tokens_positive]
                      if custom_entity is not None else None, "pixel": original_image[0, 0].tolist(),
                      "shape": original_image.shape})
        prediction = prediction.resize((width, height))  # as GLIP: back to the original image size
        return prediction
