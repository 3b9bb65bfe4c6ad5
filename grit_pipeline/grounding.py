"""GRIT step 1 (Kosmos-2 paper, section 2, step 1): ground noun chunks in images, then class-agnostic NMS and
the score threshold.

``filter_detections`` is the one place that applies the paper's post-processing, whatever the backend, and
``threshold_detections`` the one place that turns it into an image's status (``grounded`` / ``no_box``).
``detect_batch`` runs a detector over a batch (plain inputs, one result per image, never an exception for
one bad sample); ``ground_batch`` is both steps for callers that want final statuses at once.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Sequence

from grit_pipeline import status
from grit_pipeline.detectors.base import Detection, Detector
from grit_pipeline.faults import SampleError, SystemicFault, describe, is_out_of_memory, is_systemic
from grit_pipeline.images import DEFAULT_MAX_PIXELS, ImageDecodeError, decode_image

# Kosmos-2 paper, section 2, step 1: keep (chunk, box) pairs with score > 0.65 (calibrated for GLIP's scores).
# Other detectors' scores mean something else: measure their threshold on labelled data with `grit calibrate`
# (grit_pipeline/calibrate.py, docs/detectors.md "Calibrating a detector").
DEFAULT_BOX_THRESHOLD = 0.65
# The paper never published the IoU of its class-agnostic NMS. We use 0.6, the IoU of GLIP's own (per-class)
# test-time NMS in its ATSS head (MODEL.ATSS.NMS_TH), so the class-agnostic step behaves like the detector
# the paper used; it removes duplicate boxes of one object found through different chunks ("a dog" /
# "the animal") while keeping adjacent objects that overlap a little.
DEFAULT_NMS_IOU = 0.6


def filter_detections(
    detections: Sequence[Detection],
    box_threshold: float = DEFAULT_BOX_THRESHOLD,
    nms_iou: float = DEFAULT_NMS_IOU,
) -> tuple[list[Detection], list[Detection]]:
    """Class-agnostic NMS over all boxes of one image, then ``score > box_threshold`` (strictly greater).

    Returns ``(kept, dropped)``: the NMS survivors above the threshold and those at or below it, each in
    descending score order. Boxes suppressed by NMS appear in neither. Boxes with no area or non-finite
    values cannot be stored in a GRIT record and are discarded first. With greedy NMS, NMS-then-threshold
    and threshold-then-NMS keep the same set; NMS first lets ``dropped`` show what a lower threshold would
    have kept.
    """
    check_thresholds(box_threshold, nms_iou)
    survivors = nms_survivors(detections, nms_iou)
    kept = [d for d in survivors if d.score > box_threshold]
    dropped = [d for d in survivors if d.score <= box_threshold]
    return kept, dropped


def nms_survivors(detections: Sequence[Detection], nms_iou: float = DEFAULT_NMS_IOU) -> list[Detection]:
    """The storable detections that survive class-agnostic NMS, highest score first, whatever their score."""
    import torch
    from torchvision.ops import nms

    usable = [d for d in detections if _is_storable(d)]
    if not usable:
        return []
    # A canonical order first, so equal scores resolve the same way on every run.
    usable.sort(key=lambda d: (-d.score, d.phrase_index, d.box))
    boxes = torch.tensor([d.box for d in usable], dtype=torch.float64)
    scores = torch.tensor([d.score for d in usable], dtype=torch.float64)
    order = nms(boxes, scores, float(nms_iou)).tolist()  # survivors, highest score first
    return [usable[i] for i in order]


def threshold_detections(
    detections: Sequence[Detection],
    box_threshold: float = DEFAULT_BOX_THRESHOLD,
    nms_iou: float = DEFAULT_NMS_IOU,
) -> "GroundingResult":
    """The paper's decision for one image's detections: ``grounded`` with the (chunk, box) pairs kept by
    ``filter_detections``, or ``no_box`` with the reason when none scores above the threshold.

    The one place that turns the threshold into a status (``ground_batch`` and the expand stage call it).
    """
    kept, dropped = filter_detections(detections, box_threshold, nms_iou)
    if kept:
        return GroundingResult(status.GROUNDED, None, kept=kept, dropped=dropped)
    best = max((d.score for d in dropped), default=None)
    reason = f"no box scored above {box_threshold}" + (
        f" (best {best:.3f})" if best is not None else " (the detector returned no box)")
    return GroundingResult(status.NO_BOX, reason, kept=kept, dropped=dropped)


def check_thresholds(box_threshold: float, nms_iou: float) -> None:
    """Raise ValueError with a clear message for thresholds outside their range."""
    if not (isinstance(box_threshold, (int, float)) and 0.0 <= box_threshold <= 1.0):
        raise ValueError(f"box_threshold must be in [0, 1], got {box_threshold!r}")
    if not (isinstance(nms_iou, (int, float)) and 0.0 < nms_iou <= 1.0):
        raise ValueError(f"nms_iou must be in (0, 1], got {nms_iou!r}")


def _is_storable(detection: Detection) -> bool:
    x1, y1, x2, y2 = detection.box
    values = (x1, y1, x2, y2, detection.score)
    return all(math.isfinite(v) for v in values) and x2 > x1 and y2 > y1


@dataclass
class GroundingResult:
    """What the grounding stage says about one image.

    ``status`` is one of grounded / no_box / no_noun_chunks / decode_error / detector_error (status.py),
    or None from ``detect_batch`` for an image the detector saw (not yet thresholded); ``reason`` explains a
    reject; ``width``/``height`` are the decoded image's size (the boxes' frame), None when the image was
    never decoded; ``kept``/``dropped`` come from ``filter_detections``; ``detections`` are the raw
    detections ``detect_batch`` got for the image.
    """

    status: str
    reason: str | None = None
    width: int | None = None
    height: int | None = None
    kept: list[Detection] = field(default_factory=list)
    dropped: list[Detection] = field(default_factory=list)
    detections: list[Detection] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {
            "status": self.status, "reason": self.reason, "width": self.width, "height": self.height,
            "kept": [_detection_dict(d) for d in self.kept],
            "dropped": [_detection_dict(d) for d in self.dropped],
        }


def _detection_dict(d: Detection) -> dict[str, Any]:
    return {"phrase_index": d.phrase_index, "box": list(d.box), "score": d.score}


def ground_batch(
    images: Sequence[Any],
    phrases: Sequence[Sequence[str]],
    detector: Detector,
    *,
    box_threshold: float = DEFAULT_BOX_THRESHOLD,
    nms_iou: float = DEFAULT_NMS_IOU,
    max_pixels: int | None = DEFAULT_MAX_PIXELS,
) -> list[GroundingResult]:
    """Ground a batch: ``detect_batch``, then ``threshold_detections`` for every image the detector saw.

    Returns one ``GroundingResult`` per image, in order, with its final status (grounded, no_box, or the
    failure ``detect_batch`` found).
    """
    check_thresholds(box_threshold, nms_iou)
    results = detect_batch(images, phrases, detector, max_pixels=max_pixels)
    for i, result in enumerate(results):
        if result.status is None:
            decided = threshold_detections(result.detections, box_threshold, nms_iou)
            decided.width, decided.height = result.width, result.height
            results[i] = decided
    return results


def detect_batch(
    images: Sequence[Any],
    phrases: Sequence[Sequence[str]],
    detector: Detector,
    *,
    max_pixels: int | None = DEFAULT_MAX_PIXELS,
    timeout_s: float | None = None,
    counters: dict[str, int] | None = None,
) -> list[GroundingResult]:
    """Run the detector on a batch: ``images[i]`` (a decoded RGB ``PIL.Image``, raw image bytes, None, or
    an image the backend preprocessed ahead, e.g. ``detectors.hf.PreparedImage``) with its phrases
    ``phrases[i]`` (the noun-chunk texts; a detection's ``phrase_index`` indexes this list).

    Returns one ``GroundingResult`` per image, in order: status None and the raw ``detections`` for an image
    the detector saw; images without phrases get ``no_noun_chunks`` and are never decoded nor sent to the
    detector; bytes that do not decode get ``decode_error``; the rest go to the detector in one call (the
    backend batches them).

    When that call fails, the fault model decides (``grit_pipeline.faults``, docs/robustness.md): out of
    memory halves the batch and retries, down to one image (``counters["oom_splits"]`` counts the halvings);
    a fault of the machine (a CUDA or driver error, a lost device, a call that does not return within
    ``timeout_s``, every image of the batch failing alike, or the detector failing on a blank probe image
    too) raises ``SystemicFault`` and no image gets a status from it; otherwise each image is retried alone,
    so one bad sample gets ``detector_error`` (with the exception as reason) and the others their detections.
    """
    if len(images) != len(phrases):
        raise ValueError(f"got {len(images)} images but {len(phrases)} phrase lists")
    results: list[GroundingResult | None] = [None] * len(images)
    todo: list[int] = []
    decoded: dict[int, Any] = {}
    for i, (image, image_phrases) in enumerate(zip(images, phrases)):
        if not image_phrases:
            results[i] = GroundingResult(status.NO_NOUN_CHUNKS, "caption has no concrete noun chunk")
            continue
        try:
            decoded[i] = _as_rgb_image(image, max_pixels)
        except ImageDecodeError as error:
            results[i] = GroundingResult(status.DECODE_ERROR, str(error))
            continue
        todo.append(i)

    call = _DetectorCall(detector, decoded, phrases, timeout_s, counters if counters is not None else {})
    for i, detections in call.detect(todo).items():
        width, height = decoded[i].size
        if isinstance(detections, Exception):
            reason = f"{type(detections).__name__}: {detections}"
            results[i] = GroundingResult(status.DETECTOR_ERROR, reason, width, height)
        else:
            results[i] = GroundingResult(None, None, width, height, detections=list(detections))
    return results  # type: ignore[return-value]


def _as_rgb_image(image, max_pixels):
    if image is None or isinstance(image, (bytes, bytearray, memoryview)):
        return decode_image(image, max_pixels=max_pixels)
    if hasattr(image, "pixel_values") and hasattr(image, "size"):  # preprocessed ahead (hf PreparedImage)
        return image
    if hasattr(image, "mode") and hasattr(image, "size"):  # a PIL image already
        return image if image.mode == "RGB" else image.convert("RGB")
    raise ImageDecodeError(f"unsupported image object {type(image).__name__}")


class _DetectorCall:
    """The detector calls of one batch, under the fault model (see ``detect_batch``)."""

    def __init__(self, detector, decoded, phrases, timeout_s, counters):
        self.detector, self.decoded, self.phrases = detector, decoded, phrases
        self.timeout_s, self.counters = timeout_s, counters

    def call(self, indices: list[int]) -> list:
        images = [self.decoded[i] for i in indices]
        phrases = [list(self.phrases[i]) for i in indices]
        outputs = call_with_timeout(self.detector.detect, (images, phrases), self.timeout_s)
        if len(outputs) != len(indices):
            raise SystemicFault(f"the detector returned {len(outputs)} results for {len(indices)} images")
        return outputs

    def detect(self, indices: list[int]) -> dict[int, Any]:
        """Detections per index; an Exception in place of the list for an image that is its own fault."""
        if not indices:
            return {}
        try:
            return dict(zip(indices, self.call(indices)))
        except Exception as batch_error:  # noqa: BLE001 - sorted out below
            if is_out_of_memory(batch_error) and len(indices) > 1:
                self.counters["oom_splits"] = self.counters.get("oom_splits", 0) + 1
                half = len(indices) // 2
                return {**self.detect(indices[:half]), **self.detect(indices[half:])}
            _raise_if_machine_fault(batch_error, one_image=len(indices) == 1)
            if len(indices) == 1:
                return {indices[0]: self._own_fault(batch_error)}
        out: dict[int, Any] = {}
        for i in indices:  # one at a time: find the culprit(s), keep the rest
            try:
                (out[i],) = self.call([i])
            except Exception as error:  # noqa: BLE001
                _raise_if_machine_fault(error, one_image=True)
                out[i] = error
        failures = [e for e in out.values() if isinstance(e, Exception)]
        if len(failures) == len(indices) and not all(isinstance(e, SampleError) for e in failures):
            raise SystemicFault(f"every image of a batch of {len(indices)} failed: {describe(failures[0])}")
        if failures:
            self._own_fault(failures[0])
        return out

    def _own_fault(self, error: Exception) -> Exception:
        """``error`` as one image's fault, once the detector has shown it still works on a blank image
        (a backend that says so with ``SampleError`` is believed without the probe)."""
        if isinstance(error, SampleError):
            return error
        from PIL import Image

        try:
            call_with_timeout(self.detector.detect, ([Image.new("RGB", (64, 64), (127, 127, 127))], [["a thing"]]),
                              self.timeout_s)
        except Exception as probe_error:  # noqa: BLE001 - the detector fails on anything: not the image's fault
            raise SystemicFault(f"the detector fails on a blank probe image too ({describe(probe_error)}); "
                                f"first failure: {describe(error)}") from error
        return error


def _raise_if_machine_fault(error: Exception, one_image: bool) -> None:
    """Raise ``SystemicFault`` for a fault of the machine: a systemic error, or out of memory on one image."""
    if is_out_of_memory(error) and one_image:
        raise SystemicFault(f"out of memory on a single image: {describe(error)}") from error
    if is_systemic(error):
        raise (error if isinstance(error, SystemicFault) else SystemicFault(describe(error))) from error


def call_with_timeout(function, args: tuple, timeout_s: float | None):
    """``function(*args)``; raises ``SystemicFault`` if it has not returned after ``timeout_s`` seconds.

    The call runs in a daemon thread so that a hung device call cannot hold the caller: the shard stops, and
    the process (a Ray actor, which is then replaced, or the local run, which stops) takes the thread with it.
    """
    if not timeout_s:
        return function(*args)
    import threading

    box: dict[str, Any] = {}

    def target() -> None:
        try:
            box["value"] = function(*args)
        except BaseException as error:  # noqa: BLE001 - handed back to the caller
            box["error"] = error

    thread = threading.Thread(target=target, name="grit-detector-call", daemon=True)
    thread.start()
    thread.join(timeout_s)
    if thread.is_alive():
        raise SystemicFault(f"the detector did not return within {timeout_s:g} s (--detector-timeout)")
    if "error" in box:
        raise box["error"]
    return box["value"]
