"""Backend ``hf``: transformers zero-shot object detectors as GRIT phrase-grounding detectors.

Loads any checkpoint the Auto classes know (``AutoProcessor`` + ``AutoModelForZeroShotObjectDetection``)
from a hub id or a local directory, once, and runs real batches:

* Grounding DINO / MM Grounding DINO (GLIP's successors): one prompt per image with all its phrases,
  ``"a dog . a hot dog ."``. The model scores every box against every prompt token; a box's score for a
  phrase is the mean probability over that phrase's tokens (GLIP's and the official Grounding DINO
  phrase-grounding rule), and the box goes to its best phrase. Which tokens belong to which phrase comes
  from the tokenizer's character offsets of the prompt, never from searching decoded text, so "a dog" and
  "a hot dog" in one prompt are told apart. Prompts longer than the model's text limit (``max_text_len``,
  256 tokens) are split over several passes; nothing is cut silently.
* OWLv2 / OWL-ViT: one text query per phrase (queries over the 16-token limit are truncated, counted and
  logged); each box goes to its best query.

Batching (``image_batching``): images are preprocessed one by one (on the GPU when there is one, or ahead
of time in data-loader workers with ``ImagePreparer``). In ``exact`` mode (default) a forward pass only holds
images of one preprocessed size, so no image is padded to another's size and batched detections equal
one-image-at-a-time detections. OWL models resize every image to one square, so all of them batch together;
Grounding DINO keeps the aspect ratio, so an image batches with those of the same aspect ratio (give the
detector many images per call, e.g. 4-8x ``batch_size``, or group by aspect ratio upstream). ``pad`` mode
fills every batch instead: images (sorted by aspect ratio) are padded to the largest of their batch with a
pixel mask, as transformers' processor does; the backbone then sees the padding, so a box can move slightly
with its batch-mates. Text prompts are padded per batch in both modes (no effect on the results).
"""
from __future__ import annotations

import logging
import math
from collections import Counter
from dataclasses import dataclass
from typing import Sequence

from grit_pipeline.detectors.base import Detection, Detector, register_detector

log = logging.getLogger(__name__)

GROUNDING_DINO_TYPES = ("grounding-dino", "mm-grounding-dino")
OWL_TYPES = ("owlv2", "owlvit")
PHRASE_SEPARATOR = " . "  # Grounding DINO's class separator; the prompt also ends with " ."
# Characters Grounding DINO treats as phrase delimiters ("." and "?" are special token ids in the model):
# inside a phrase they are replaced by spaces (same length, so character offsets stay valid).
_DELIMITER_CHARS = str.maketrans({".": " ", "?": " ", "\n": " ", "\r": " ", "\t": " "})
DEFAULT_MIN_SCORE = 0.05

_DTYPES = {
    "float32": "float32", "fp32": "float32", "float": "float32",
    "float16": "float16", "fp16": "float16", "half": "float16",
    "bfloat16": "bfloat16", "bf16": "bfloat16",
}


def resolve_device(device: str | None = "auto") -> str:
    """``auto`` -> ``cuda`` when a GPU is visible, else ``cpu``; anything else is passed to torch."""
    import torch

    if device in (None, "", "auto"):
        return "cuda" if torch.cuda.is_available() else "cpu"
    torch.device(device)  # raises on a malformed device string
    return device


def resolve_dtype(dtype, device: str):
    """``None``/``auto`` -> float16 on CUDA, float32 elsewhere; accepts fp16/bf16/fp32 spellings."""
    import torch

    if dtype in (None, "", "auto"):
        return torch.float16 if str(device).startswith("cuda") else torch.float32
    if isinstance(dtype, torch.dtype):
        return dtype
    name = _DTYPES.get(str(dtype).lower())
    if name is None:
        raise ValueError(f"unknown dtype {dtype!r}; use auto, float32, float16 or bfloat16")
    return getattr(torch, name)


# --- prompts and token -> phrase attribution (pure functions, tested directly) ---------------------------

def build_prompt(phrases: Sequence[str]) -> tuple[str, list[tuple[int, int]]]:
    """Grounding DINO prompt for phrases and each phrase's character span in it.

    ``["a dog", "a hot dog"]`` -> ``("a dog . a hot dog .", [(0, 5), (8, 17)])``. Delimiter characters inside
    a phrase are replaced by spaces so the model does not split the phrase.
    """
    parts: list[str] = []
    spans: list[tuple[int, int]] = []
    position = 0
    for k, phrase in enumerate(phrases):
        text = str(phrase).translate(_DELIMITER_CHARS)
        if k:
            parts.append(PHRASE_SEPARATOR)
            position += len(PHRASE_SEPARATOR)
        spans.append((position, position + len(text)))
        parts.append(text)
        position += len(text)
    parts.append(" .")
    return "".join(parts), spans


def token_phrase_map(offsets: Sequence[tuple[int, int]], phrase_spans: Sequence[tuple[int, int]]) -> list[list[int]]:
    """For each phrase, the indices of the tokens whose characters fall inside its span of the prompt.

    ``offsets`` is the tokenizer's ``offset_mapping`` for the prompt (special and padding tokens have empty
    ``(0, 0)`` offsets and belong to no phrase).
    """
    tokens: list[list[int]] = [[] for _ in phrase_spans]
    for t, (start, end) in enumerate(offsets):
        start, end = int(start), int(end)
        if end <= start:
            continue
        for p, (p_start, p_end) in enumerate(phrase_spans):
            if start < p_end and end > p_start:
                tokens[p].append(t)
                break
    return tokens


@dataclass(frozen=True)
class PreparedImage:
    """An image already preprocessed for the model (resized, normalised), e.g. in a data-loader worker."""

    pixel_values: "object"  # torch.Tensor (3, h, w), float32 on the CPU
    size: tuple[int, int]   # (width, height) of the decoded image: the frame the boxes are normalised to


class ImagePreparer:
    """Picklable preprocessing of one image for a model: run it in DataLoader workers so the GPU never waits.

    ``ImagePreparer.from_pretrained(model)`` loads only the image processor; ``detector.preparer()`` reuses
    the detector's. Calling it on an RGB ``PIL.Image`` gives a ``PreparedImage`` that ``detect`` accepts.
    """

    def __init__(self, image_processor):
        self.image_processor = image_processor

    @classmethod
    def from_pretrained(cls, model: str, **kwargs) -> "ImagePreparer":
        from transformers import AutoProcessor

        return cls(AutoProcessor.from_pretrained(model, **kwargs).image_processor)

    def __call__(self, image) -> PreparedImage:
        features = self.image_processor(images=[image], return_tensors="pt")
        return PreparedImage(features["pixel_values"][0].float(), tuple(image.size))


IMAGE_BATCHING_MODES = ("exact", "pad")
NEEDS_MODEL = ("detector 'hf' needs a model (--model): a hub id (e.g. IDEA-Research/grounding-dino-tiny, "
               "google/owlv2-base-patch16-ensemble) or a local save_pretrained directory")


def check_model_source(model: str, revision: str | None = None) -> None:
    """Check, without loading weights, that ``model`` is a zero-shot object detector that can be loaded here:
    a local directory with a readable ``config.json``, or a hub id in the local cache or on a reachable hub.
    Raises ValueError with one line (the driver's check before any worker starts)."""
    import json
    from pathlib import Path

    path = Path(model).expanduser()
    looks_local = path.exists() or model.startswith((".", "/", "~")) or model.count("/") > 1 or model.endswith("/")
    if looks_local:
        if not path.exists():
            raise ValueError(f"--model {model}: no such directory")
        if not path.is_dir():
            raise ValueError(f"--model {model}: a file, not a model directory (save_pretrained layout)")
        config_file = path / "config.json"
        if not config_file.is_file():
            raise ValueError(f"--model {model}: no config.json in that directory (save_pretrained layout expected)")
    else:
        config_file = _hub_config_file(model, revision)
    try:
        config = json.loads(Path(config_file).read_text(encoding="utf-8"))
        model_type = config.get("model_type") if isinstance(config, dict) else None
    except (OSError, ValueError) as error:
        raise ValueError(f"--model {model}: unreadable config.json ({type(error).__name__}: "
                         f"{' '.join(str(error).split())[:200]})") from None
    from transformers.models.auto.modeling_auto import MODEL_FOR_ZERO_SHOT_OBJECT_DETECTION_MAPPING_NAMES as KNOWN

    if model_type not in KNOWN:
        raise ValueError(f"--model {model}: a {model_type or 'untyped'!r} model, not a zero-shot object detector "
                         f"(model types: {', '.join(sorted(KNOWN))})")


def _hub_config_file(model: str, revision: str | None) -> str:
    """``config.json`` of a hub id: from the local cache, else fetched once; an unreachable hub is one line
    (one quick connection attempt, not transformers' minute of retries)."""
    import socket
    from urllib.parse import urlparse

    from huggingface_hub import constants, hf_hub_download, try_to_load_from_cache
    from huggingface_hub.errors import GatedRepoError, RepositoryNotFoundError, RevisionNotFoundError

    cached = try_to_load_from_cache(model, "config.json", revision=revision)
    if isinstance(cached, str):
        return cached
    not_local = (f"--model {model}: no such local directory, and as a hub id it is not in the local Hugging Face "
                 f"cache ({constants.HF_HUB_CACHE})")
    fix = "download it where the hub is reachable and pass its save_pretrained directory, or fill the cache"
    if constants.HF_HUB_OFFLINE:
        raise ValueError(f"{not_local} and HF_HUB_OFFLINE is set; {fix}")
    endpoint = urlparse(constants.ENDPOINT)
    try:
        socket.create_connection((endpoint.hostname, endpoint.port or (443 if endpoint.scheme == "https" else 80)),
                                 timeout=5).close()
    except OSError as error:
        raise ValueError(f"{not_local} and the hub ({constants.ENDPOINT}) cannot be reached "
                         f"({error.strerror or error}): offline? {fix}") from None
    try:
        return hf_hub_download(model, "config.json", revision=revision)
    except (RepositoryNotFoundError, GatedRepoError, RevisionNotFoundError) as error:
        first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise ValueError(f"--model {model}: not a model the hub gives this machine ({first[:200]}); "
                         f"a private or gated model needs HF_TOKEN") from None
    except Exception as error:  # noqa: BLE001 - any other failure to fetch: one line
        raise ValueError(f"--model {model}: cannot fetch its config.json from {constants.ENDPOINT} "
                         f"({type(error).__name__}: {' '.join(str(error).split())[:200]})") from None


@dataclass
class _Row:
    """One forward-pass row: an image with one prompt (Grounding DINO) or its query list (OWL)."""

    image_index: int
    phrase_indices: list[int]   # phrases this row covers, in prompt/query order
    prompt: str | None = None   # Grounding DINO
    spans: list[tuple[int, int]] | None = None
    queries: list[str] | None = None  # OWL: one query text per phrase


@register_detector("hf")
class HFDetector(Detector):
    """A transformers zero-shot object detector (Grounding DINO, MM Grounding DINO, OWLv2, OWL-ViT).

    ``model``: hub id or local directory (``save_pretrained`` layout with the processor files).
    ``device``: ``auto`` (CUDA when present), ``cpu``, ``cuda``, ``cuda:1``...
    ``dtype``: ``auto`` (float16 on CUDA, float32 on CPU), ``float32``, ``float16``, ``bfloat16``.
    ``batch_size``: rows (image + prompt) per forward pass.
    ``min_score``: raw boxes scoring below this are not reported (saves memory: a Grounding DINO pass
    yields 900 boxes); it must stay below the box threshold, and only shortens the ``dropped`` list.
    ``image_batching``: ``exact`` (batches of equal preprocessed size; batched == one at a time) or ``pad``
    (full batches, padded; see the module docstring).
    """

    @classmethod
    def check_options(cls, model: str | None = None, dtype=None, image_batching: str = "exact",
                      revision: str | None = None, **unused) -> None:
        """The driver's check before any worker starts (``base.check_detector``): a model is named and can be
        found (``check_model_source``), the dtype and batching mode are known. Loads no weights."""
        if not model:
            raise ValueError(NEEDS_MODEL)
        if image_batching not in IMAGE_BATCHING_MODES:
            raise ValueError(f"image_batching must be one of {IMAGE_BATCHING_MODES}, got {image_batching!r}")
        resolve_dtype(dtype, "cpu")  # raises on an unknown spelling
        check_model_source(str(model), revision)

    def __init__(self, model: str | None = None, device: str | None = "auto", dtype=None, batch_size: int = 8,
                 min_score: float = DEFAULT_MIN_SCORE, image_batching: str = "exact", revision: str | None = None,
                 **from_pretrained_kwargs):
        import torch
        from transformers import AutoModelForZeroShotObjectDetection, AutoProcessor

        if not model:
            raise ValueError(NEEDS_MODEL)
        if int(batch_size) < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if image_batching not in IMAGE_BATCHING_MODES:
            raise ValueError(f"image_batching must be one of {IMAGE_BATCHING_MODES}, got {image_batching!r}")
        self.image_batching = image_batching
        self.model_name = str(model)
        self.device = resolve_device(device)
        self.dtype = resolve_dtype(dtype, self.device)
        self.batch_size = int(batch_size)
        self.min_score = float(min_score)
        kwargs = dict(from_pretrained_kwargs)
        if revision:
            kwargs["revision"] = revision
        self.processor = AutoProcessor.from_pretrained(self.model_name, **kwargs)
        self.model = AutoModelForZeroShotObjectDetection.from_pretrained(self.model_name, dtype=self.dtype, **kwargs)
        self.model.to(self.device).eval()
        self.model_type = self.model.config.model_type
        if self.model_type in GROUNDING_DINO_TYPES:
            self.family = "grounding-dino"
            self.text_limit = int(self.model.config.max_text_len)
        elif self.model_type in OWL_TYPES:
            self.family = "owl"
            self.text_limit = int(self.model.config.text_config.max_position_embeddings)
        else:
            raise ValueError(f"model type {self.model_type!r} is not supported by detector 'hf' "
                             f"(supported: {', '.join(GROUNDING_DINO_TYPES + OWL_TYPES)})")
        self.tokenizer = self.processor.tokenizer
        self.image_processor = self.processor.image_processor
        # OWLv2 pads each image to a square (bottom/right) before resizing: its boxes are fractions of that
        # square. OWL-ViT resizes without padding.
        self.square_padded = self.model_type == "owlv2" and bool(getattr(self.image_processor, "do_pad", True))
        self.stats: Counter = Counter()
        self._torch = torch

    def __repr__(self) -> str:
        return (f"HFDetector(model={self.model_name!r}, type={self.model_type}, device={self.device}, "
                f"dtype={str(self.dtype).replace('torch.', '')}, batch_size={self.batch_size})")

    # --- public API -------------------------------------------------------------------------------------

    def preparer(self) -> ImagePreparer:
        """This model's image preprocessing as a picklable callable (for data-loader workers)."""
        return ImagePreparer(self.image_processor)

    def detect(self, images, phrases) -> list[list[Detection]]:
        """Raw detections per image (one box per model query, attributed to its best phrase).

        ``images``: RGB ``PIL.Image`` objects or ``PreparedImage`` from ``preparer()``.
        """
        if len(images) != len(phrases):
            raise ValueError(f"got {len(images)} images but {len(phrases)} phrase lists")
        results: list[list[Detection]] = [[] for _ in images]
        rows = self._plan_rows(phrases)
        if not rows:
            return results
        pixels = {}
        for row in rows:
            if row.image_index not in pixels:
                pixels[row.image_index] = self._pixel_values(images[row.image_index])
        groups: dict[tuple, list[_Row]] = {}
        if self.image_batching == "exact" or self.family == "owl":
            for row in rows:  # batch only images of one preprocessed size: no padding between images
                groups.setdefault(tuple(pixels[row.image_index].shape), []).append(row)
        else:  # pad: one group, sorted by aspect ratio so batch-mates need little padding
            def aspect(row):
                _, _, height, width = pixels[row.image_index].shape
                return (height / width, row.image_index)
            groups[()] = sorted(rows, key=aspect)
        for group in groups.values():
            for start in range(0, len(group), self.batch_size):
                chunk = group[start:start + self.batch_size]
                for row, detections in self._run_rows(chunk, pixels, images):
                    results[row.image_index].extend(detections)
        return results

    # --- planning ---------------------------------------------------------------------------------------

    def _plan_rows(self, phrases) -> list[_Row]:
        rows: list[_Row] = []
        for i, image_phrases in enumerate(phrases):
            lengths = self._phrase_token_counts(image_phrases)
            usable = [p for p, n in enumerate(lengths) if n > 0]
            if not usable:
                continue
            if self.family == "owl":
                too_long = [p for p in usable if lengths[p] + 2 > self.text_limit]
                if too_long:
                    self.stats["truncated_phrases"] += len(too_long)
                    log.warning("%d phrase(s) longer than the model's %d-token query limit were truncated: %r",
                                len(too_long), self.text_limit, [image_phrases[p] for p in too_long][:3])
                rows.append(_Row(i, usable, queries=[str(image_phrases[p]) for p in usable]))
            else:
                for group in self._split_passes(usable, lengths, image_phrases):
                    prompt, spans = build_prompt([image_phrases[p] for p in group])
                    rows.append(_Row(i, group, prompt, spans))
        return rows

    def _phrase_token_counts(self, image_phrases) -> list[int]:
        if not image_phrases:
            return []
        texts = [str(p).translate(_DELIMITER_CHARS) for p in image_phrases]
        encoded = self.tokenizer(texts, add_special_tokens=False)["input_ids"]
        return [len(ids) for ids in encoded]

    def _split_passes(self, usable, lengths, image_phrases) -> list[list[int]]:
        """Pack phrases into prompts of at most ``text_limit`` tokens ([CLS] + (phrase + '.')* + [SEP])."""
        passes: list[list[int]] = []
        current: list[int] = []
        used = 2
        for p in usable:
            cost = lengths[p] + 1
            if current and used + cost > self.text_limit:
                passes.append(current)
                current, used = [], 2
            if used + cost > self.text_limit:  # a single phrase longer than the limit: its own, truncated pass
                self.stats["truncated_phrases"] += 1
                log.warning("phrase of %d tokens exceeds the model's %d-token text limit and was truncated: %r",
                            lengths[p], self.text_limit, str(image_phrases[p])[:80])
            current.append(p)
            used += cost
        if current:
            passes.append(current)
        if len(passes) > 1:
            self.stats["split_prompts"] += 1
        return passes

    # --- model ------------------------------------------------------------------------------------------

    def _pixel_values(self, image):
        if isinstance(image, PreparedImage):
            return image.pixel_values.unsqueeze(0).to(self.device, self.dtype, non_blocking=True)
        kwargs = {"return_tensors": "pt"}
        if self.device != "cpu":
            kwargs["device"] = self.device  # resize/normalise on the GPU
        try:
            features = self.image_processor(images=[image], **kwargs)
        except TypeError:
            kwargs.pop("device", None)
            features = self.image_processor(images=[image], **kwargs)
        return features["pixel_values"].to(self.device, self.dtype)

    def _run_rows(self, rows: list[_Row], pixels, images):
        torch = self._torch
        try:
            with torch.inference_mode():
                pixel_values, pixel_mask = _stack_padded([pixels[r.image_index] for r in rows])
                if self.family == "owl":
                    return self._run_owl(rows, pixel_values, images)
                return self._run_grounding_dino(rows, pixel_values, pixel_mask, images)
        except torch.cuda.OutOfMemoryError:
            if len(rows) == 1:
                raise
            torch.cuda.empty_cache()
            self.stats["oom_splits"] += 1
            log.warning("CUDA out of memory on a batch of %d; retrying as two halves", len(rows))
            half = len(rows) // 2
            return self._run_rows(rows[:half], pixels, images) + self._run_rows(rows[half:], pixels, images)

    def _run_grounding_dino(self, rows, pixel_values, pixel_mask, images):
        torch = self._torch
        encoded = self.tokenizer(
            [r.prompt for r in rows], padding="longest", truncation=True, max_length=self.text_limit,
            return_offsets_mapping=True, return_token_type_ids=True, return_tensors="pt",
        )
        offsets = encoded.pop("offset_mapping").tolist()
        inputs = {k: v.to(self.device) for k, v in encoded.items()}
        outputs = self.model(pixel_values=pixel_values, pixel_mask=pixel_mask, **inputs)
        self.stats["forward_passes"] += 1
        self.stats["rows"] += len(rows)
        seq_len = inputs["input_ids"].shape[1]
        probs = outputs.logits[:, :, :seq_len].float().sigmoid()  # (rows, queries, tokens)
        boxes = _cxcywh_to_xyxy(outputs.pred_boxes.float())
        out = []
        for b, row in enumerate(rows):
            token_lists = token_phrase_map(offsets[b], row.spans)
            # (phrases, tokens) averaging matrix: a phrase's score is the mean of its tokens' probabilities
            weights = torch.zeros(len(token_lists), seq_len, device=probs.device)
            present = []
            for k, tokens in enumerate(token_lists):
                if tokens:
                    weights[k, tokens] = 1.0 / len(tokens)
                    present.append(k)
            if not present:
                out.append((row, []))
                continue
            phrase_scores = probs[b] @ weights[present].T  # (queries, present phrases)
            scores, best = phrase_scores.max(dim=1)
            phrase_ids = [row.phrase_indices[k] for k in present]
            out.append((row, self._detections(boxes[b], scores, best, phrase_ids)))
        return out

    def _run_owl(self, rows, pixel_values, images):
        torch = self._torch
        max_queries = max(len(r.phrase_indices) for r in rows)
        texts = []
        for r in rows:
            texts.extend(r.queries)
            texts.extend([" "] * (max_queries - len(r.phrase_indices)))  # padding queries, masked below
        encoded = self.tokenizer(texts, padding="max_length", truncation=True, max_length=self.text_limit,
                                 return_tensors="pt")
        inputs = {k: v.to(self.device) for k, v in encoded.items() if k in ("input_ids", "attention_mask")}
        outputs = self.model(pixel_values=pixel_values, **inputs)
        self.stats["forward_passes"] += 1
        self.stats["rows"] += len(rows)
        logits = outputs.logits.float()  # (rows, patches, max_queries)
        boxes = _cxcywh_to_xyxy(outputs.pred_boxes.float())
        out = []
        for b, row in enumerate(rows):
            n = len(row.phrase_indices)
            scores, best = logits[b, :, :n].max(dim=1)
            scores = scores.sigmoid()
            image_boxes = boxes[b]
            if self.square_padded:
                width, height = images[row.image_index].size
                side = max(width, height)
                scale = torch.tensor([side / width, side / height, side / width, side / height],
                                     device=image_boxes.device)
                image_boxes = image_boxes * scale
            out.append((row, self._detections(image_boxes, scores, best, row.phrase_indices)))
        return out

    def _detections(self, boxes, scores, best, phrase_ids) -> list[Detection]:
        keep = scores >= self.min_score
        boxes = boxes[keep].clamp(0.0, 1.0).tolist()
        scores = scores[keep].tolist()
        best = best[keep].tolist()
        return [
            Detection(phrase_ids[k], (x1, y1, x2, y2), float(s))
            for (x1, y1, x2, y2), s, k in zip(boxes, scores, best)
            if math.isfinite(s)
        ]


def _stack_padded(tensors):
    """Stack (1, 3, h, w) tensors, zero-padding bottom/right to the largest; pixel mask 1 on real pixels."""
    import torch

    height = max(t.shape[2] for t in tensors)
    width = max(t.shape[3] for t in tensors)
    first = tensors[0]
    batch = first.new_zeros((len(tensors), first.shape[1], height, width))
    mask = torch.zeros((len(tensors), height, width), dtype=torch.long, device=first.device)
    for k, t in enumerate(tensors):
        batch[k, :, : t.shape[2], : t.shape[3]] = t[0]
        mask[k, : t.shape[2], : t.shape[3]] = 1
    return batch, mask


def _cxcywh_to_xyxy(boxes):
    cx, cy, w, h = boxes.unbind(-1)
    import torch

    return torch.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], dim=-1)
