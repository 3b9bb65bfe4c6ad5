"""GLIP, the grounding model of the Kosmos-2 paper, as a grit detector, through GLIP's own inference API.

GLIP (microsoft/GLIP) is not in transformers; its inference entry point is
``maskrcnn_benchmark.engine.predictor_glip.GLIPDemo``. Install GLIP's repository first (its README:
``python setup.py build develop``, which builds the ``maskrcnn_benchmark`` CUDA extensions), download a
checkpoint and its config, then::

    grit run --input SHARDS --output DIR --detector examples.detectors.glip_detector:GLIPDetector \\
             --model MODEL/glip_large_model.pth --detector-option config_file=configs/pretrain/glip_Swin_L.yaml

(``--box-threshold`` stays at 0.65: this is the detector that number was chosen for). Each worker opens the
checkpoint and config itself: on a cluster give paths that exist on every node. GLIPDemo loads the
``bert-base-uncased`` tokenizer from the Hugging Face hub: have it in the local cache on every worker.

How an image's noun chunks become GLIP's query. The chunks are joined into one caption with GLIP's own
separator, ``"a dog . a field . "``, and each chunk is passed as an entity with its character span
(``custom_entity=[{"char_bounds": (start, end)}, ...]``), so that each chunk is one GLIP class: label ``k``
of a box is chunk ``k - demo.plus`` (GLIP's ``VLDYHEAD`` numbers its classes from 1). The list form of
``compute_prediction`` (a list of names as caption) is not used: it makes all names one single entity.
``.`` and ``?`` inside a chunk become spaces, so a chunk never splits into two GLIP phrases. A caption whose
tokens would exceed GLIP's query length (``MODEL.LANGUAGE_BACKBONE.MAX_QUERY_LEN``, 256 tokens) is split
over several calls.

What comes back. ``compute_prediction(image, caption, custom_entity=...)`` returns a ``BoxList`` already
resized to the original image: ``.bbox`` in pixels (xyxy), ``get_field("scores")`` (GLIP's sigmoid
scores, in [0, 1]) and ``get_field("labels")``. The adapter divides by the image's width and height and clips
to [0, 1]. GLIP's own per-class NMS has run inside the model (``MODEL.ATSS.NMS_TH``); grit then applies
its class-agnostic NMS and the threshold, as for every backend. ``GLIPDemo`` is built with
``confidence_threshold=0.0`` and its ``_post_process`` threshold is never applied: grit's threshold is the
only one.

GLIPDemo takes one image per call, so ``--ground-batch-size`` only sets how many images one ``detect`` call
receives. GLIP prints a line or two per image: the adapter silences its stdout (``grit ground`` writes its
JSON lines there).
"""
from __future__ import annotations

import contextlib
import io
import os
from typing import Sequence

from grit_pipeline.detectors.base import Detection, Detector

SEPARATOR = " . "  # GLIP's separator of category names in a caption (predictor_glip.compute_prediction)


class GLIPDetector(Detector):
    """GLIP through ``maskrcnn_benchmark``'s ``GLIPDemo`` (one image per ``compute_prediction`` call).

    ``model``: the checkpoint (``.pth``); ``config_file``: its GLIP config (``.yaml``); ``device``: ``auto``
    (CUDA when present), ``cuda``, ``cuda:1``, ``cpu``; ``min_image_size``: GLIPDemo's resize (800, as GLIP's
    demo); ``max_query_len``: tokens per caption (default and most: the config's MAX_QUERY_LEN).
    """

    name = "glip"

    def __init__(self, model: str | None = None, config_file: str | None = None, device: str = "auto",
                 dtype: str | None = None, batch_size: int = 8, min_image_size: int | str = 800,
                 max_query_len: int | str | None = None, **unused):
        self.check_options(model=model, config_file=config_file, dtype=dtype, min_image_size=min_image_size,
                           max_query_len=max_query_len)
        from maskrcnn_benchmark.config import cfg as glip_defaults
        from maskrcnn_benchmark.engine.predictor_glip import GLIPDemo

        if device in (None, "", "auto"):
            import torch

            device = "cuda" if torch.cuda.is_available() else "cpu"
        cfg = glip_defaults.clone()  # never change maskrcnn_benchmark's global defaults
        cfg.local_rank = 0
        cfg.num_gpus = 1
        cfg.merge_from_file(config_file)
        cfg.merge_from_list(["MODEL.WEIGHT", model, "MODEL.DEVICE", device])
        with _quiet():
            self.demo = GLIPDemo(cfg, min_image_size=int(min_image_size), confidence_threshold=0.0,
                                 show_mask_heatmaps=False)
        limit = int(cfg.MODEL.LANGUAGE_BACKBONE.MAX_QUERY_LEN)  # the model's text length
        self.max_query_len = min(int(max_query_len), limit) if max_query_len else limit

    @classmethod
    def check_options(cls, model: str | None = None, config_file: str | None = None, dtype: str | None = None,
                      min_image_size: int | str = 800, max_query_len: int | str | None = None, **unused) -> None:
        """The driver's check, before any worker starts: the checkpoint and config files exist and GLIP is
        installed (looked up, not imported: importing ``maskrcnn_benchmark`` loads its CUDA extensions)."""
        import importlib.util

        if not model:
            raise ValueError("glip: give the checkpoint with --model PATH.pth")
        if not os.path.isfile(model):
            raise ValueError(f"glip: no checkpoint file {model}")
        if not config_file:
            raise ValueError("glip: give its config with --detector-option config_file=PATH.yaml")
        if not os.path.isfile(config_file):
            raise ValueError(f"glip: no config file {config_file}")
        if dtype not in (None, "", "auto", "float32"):
            raise ValueError(f"glip: runs in float32 (its config's SOLVER.USE_AMP decides mixed precision), "
                             f"got dtype {dtype!r}")
        for option, value in (("min_image_size", min_image_size), ("max_query_len", max_query_len)):
            try:
                if value is not None and int(value) < 1:
                    raise ValueError
            except (TypeError, ValueError):
                raise ValueError(f"glip: {option} must be an integer >= 1, got {value!r}") from None
        if importlib.util.find_spec("maskrcnn_benchmark") is None:
            raise ValueError("glip: maskrcnn_benchmark is not installed (install microsoft/GLIP: "
                             "pip install -e . in its repository, on every worker)")

    def detect(self, images: Sequence, phrases: Sequence[Sequence[str]]) -> list[list[Detection]]:
        if len(images) != len(phrases):
            raise ValueError(f"{len(images)} images but {len(phrases)} phrase lists")
        return [self._detect_one(image, list(image_phrases)) for image, image_phrases in zip(images, phrases)]

    def _detect_one(self, image, image_phrases: list[str]) -> list[Detection]:
        import numpy as np

        if not image_phrases:
            return []
        rgb = np.asarray(image.convert("RGB"))
        bgr = np.ascontiguousarray(rgb[:, :, ::-1])  # GLIPDemo expects OpenCV's BGR uint8 (H, W, 3)
        height, width = bgr.shape[:2]
        detections: list[Detection] = []
        for indices, caption, spans in self._queries(image_phrases):
            entities = [{"char_bounds": span} for span in spans]
            with _quiet():
                prediction = self.demo.compute_prediction(bgr, caption, custom_entity=entities)
            prediction = prediction.convert("xyxy")
            plus = int(getattr(self.demo, "plus", 1))  # 1 for GLIP's VLDYHEAD: labels count from 1
            boxes = prediction.bbox.detach().cpu().tolist()
            scores = prediction.get_field("scores").detach().cpu().tolist()
            labels = prediction.get_field("labels").detach().cpu().tolist()
            for (x1, y1, x2, y2), score, label in zip(boxes, scores, labels):
                k = int(label) - plus
                if not 0 <= k < len(spans):
                    continue
                box = (_clip(x1 / width), _clip(y1 / height), _clip(x2 / width), _clip(y2 / height))
                detections.append(Detection(indices[k], box, _clip(float(score))))
        return detections

    def _queries(self, image_phrases: list[str]):
        """(chunk index of each entity, caption, character span of each entity) per GLIP call: as many chunks
        per caption as fit in ``max_query_len`` tokens (at least one; a longer chunk is GLIP's to truncate).
        A chunk with no text left once ``.``/``?`` are blanked is not asked for."""
        tokenizer = getattr(self.demo, "tokenizer", None)

        def tokens(text: str) -> int:
            return len(tokenizer(text)["input_ids"]) if tokenizer is not None else 0

        indices, caption, spans = [], "", []
        for index, phrase in enumerate(image_phrases):
            text = " ".join(phrase.replace(".", " ").replace("?", " ").split())
            if not text:
                continue
            longer = caption + text + SEPARATOR
            if spans and tokens(longer) > self.max_query_len:
                yield indices, caption, spans
                indices, caption, spans = [], "", []
                longer = text + SEPARATOR
            indices.append(index)
            spans.append((len(caption), len(caption) + len(text)))
            caption = longer
        if spans:
            yield indices, caption, spans


def _clip(value: float) -> float:
    return min(1.0, max(0.0, float(value)))


@contextlib.contextmanager
def _quiet():
    """GLIPDemo prints its token spans and timings on stdout: keep them out of grit's output."""
    with contextlib.redirect_stdout(io.StringIO()):
        yield
