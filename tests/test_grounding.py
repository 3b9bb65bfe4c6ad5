"""filter_detections (class-agnostic NMS + strict threshold) and ground_batch statuses, on hand-made detections."""
import io

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from PIL import Image
from torchvision.ops import box_iou

from grit_pipeline import status
from grit_pipeline.detectors.base import Detection, Detector
from grit_pipeline.grounding import (
    detect_batch,
    DEFAULT_BOX_THRESHOLD, DEFAULT_NMS_IOU, filter_detections, ground_batch,
)


def det(phrase, box, score):
    return Detection(phrase, tuple(float(v) for v in box), float(score))


def test_defaults_follow_the_paper_and_our_documented_choice():
    assert DEFAULT_BOX_THRESHOLD == 0.65
    assert DEFAULT_NMS_IOU == 0.6


def test_nms_is_class_agnostic_across_phrases():
    dog = det(0, (0.10, 0.10, 0.50, 0.50), 0.90)
    animal = det(1, (0.11, 0.10, 0.51, 0.50), 0.80)  # same object through another chunk, IoU ~0.95
    field = det(2, (0.00, 0.60, 1.00, 1.00), 0.70)   # elsewhere
    kept, dropped = filter_detections([animal, field, dog])
    assert kept == [dog, field]  # descending score; "animal" suppressed although its phrase differs
    assert dropped == []


def test_nms_iou_parameter_decides_what_counts_as_a_duplicate():
    a = det(0, (0.0, 0.0, 0.5, 0.5), 0.9)
    b = det(1, (0.0, 0.25, 0.5, 0.75), 0.8)  # IoU(a, b) = 1/3
    assert filter_detections([a, b], nms_iou=0.6)[0] == [a, b]
    assert filter_detections([a, b], nms_iou=0.3)[0] == [a]


def test_nothing_at_or_below_the_threshold_survives():
    boxes = [(0.0, 0.0, 0.1, 0.1), (0.2, 0.2, 0.3, 0.3), (0.4, 0.4, 0.5, 0.5), (0.6, 0.6, 0.7, 0.7)]
    dets = [det(i, box, s) for i, (box, s) in enumerate(zip(boxes, (0.65, 0.6500001, 0.64, 0.99)))]
    kept, dropped = filter_detections(dets, box_threshold=0.65)
    assert [d.score for d in kept] == [0.99, 0.6500001]
    assert sorted(d.score for d in dropped) == [0.64, 0.65]  # exactly 0.65 is dropped: strictly greater
    kept, _ = filter_detections(dets, box_threshold=0.35)
    assert len(kept) == 4


def test_suppressed_boxes_are_in_neither_list_and_dropped_are_post_nms():
    high = det(0, (0.1, 0.1, 0.5, 0.5), 0.9)
    low_duplicate = det(1, (0.1, 0.1, 0.5, 0.5), 0.3)
    low_alone = det(1, (0.6, 0.6, 0.9, 0.9), 0.3)
    kept, dropped = filter_detections([low_duplicate, low_alone, high])
    assert kept == [high] and dropped == [low_alone]


def test_unstorable_boxes_are_discarded():
    flat = det(0, (0.2, 0.2, 0.2, 0.5), 0.99)
    nan = det(0, (0.1, float("nan"), 0.3, 0.4), 0.99)
    good = det(1, (0.1, 0.1, 0.3, 0.4), 0.9)
    assert filter_detections([flat, nan, good]) == ([good], [])
    assert filter_detections([]) == ([], [])


@pytest.mark.parametrize("kwargs", [dict(box_threshold=1.5), dict(box_threshold=-0.1), dict(nms_iou=0.0),
                                    dict(nms_iou=1.2)])
def test_bad_thresholds_are_rejected(kwargs):
    with pytest.raises(ValueError):
        filter_detections([det(0, (0, 0, 1, 1), 0.9)], **kwargs)


coordinate = st.floats(0.0, 1.0, allow_nan=False)
detections_strategy = st.lists(
    st.tuples(st.integers(0, 3), coordinate, coordinate, coordinate, coordinate, st.floats(0.0, 1.0)),
    max_size=25,
)


@given(detections_strategy, st.floats(0.0, 1.0), st.floats(0.05, 1.0))
def test_filter_properties(raw, threshold, iou):
    dets = [det(p, (min(a, c), min(b, d), max(a, c), max(b, d)), s) for p, a, b, c, d, s in raw]
    kept, dropped = filter_detections(dets, box_threshold=threshold, nms_iou=iou)
    assert all(d.score > threshold for d in kept)
    assert all(d.score <= threshold for d in dropped)
    survivors = kept + dropped
    if len(survivors) > 1:
        boxes = torch.tensor([d.box for d in survivors], dtype=torch.float64)
        overlaps = box_iou(boxes, boxes).fill_diagonal_(0)
        assert float(overlaps.max()) <= iou + 1e-9  # no two survivors overlap more than the NMS IoU
    # with greedy NMS, NMS-then-threshold keeps the same set as threshold-then-NMS
    above = [d for d in dets if d.score > threshold]
    kept_other_order, _ = filter_detections(above, box_threshold=threshold, nms_iou=iou)
    assert set(kept_other_order) == set(kept)


# --- ground_batch ---------------------------------------------------------------------------------------

class ScriptedDetector(Detector):
    """Returns prepared detections per phrase list; raises for images whose phrase list says so."""

    def __init__(self, script):
        self.script = script  # first phrase -> list of detections
        self.calls = []

    def detect(self, images, phrases):
        self.calls.append(len(images))
        if any(p[0] == "boom" for p in phrases):
            raise RuntimeError("kernel exploded")
        return [list(self.script.get(p[0], [])) for p in phrases]


def png_bytes(width, height):
    buffer = io.BytesIO()
    Image.new("RGB", (width, height), (10, 200, 30)).save(buffer, "PNG")
    return buffer.getvalue()


def test_ground_batch_statuses_and_isolation():
    script = {
        "a dog": [det(0, (0.1, 0.1, 0.5, 0.5), 0.9), det(1, (0.1, 0.1, 0.5, 0.52), 0.8)],
        "a cat": [det(0, (0.1, 0.1, 0.5, 0.5), 0.3)],
    }
    detector = ScriptedDetector(script)
    images = [png_bytes(40, 20), Image.new("RGB", (10, 30)), png_bytes(8, 8), b"", png_bytes(8, 8),
              Image.new("L", (5, 6))]
    phrases = [["a dog", "the animal"], ["a cat"], [], ["a dog"], ["boom"], ["nothing"]]
    results = ground_batch(images, phrases, detector)
    assert [r.status for r in results] == [
        status.GROUNDED, status.NO_BOX, status.NO_NOUN_CHUNKS, status.DECODE_ERROR, status.DETECTOR_ERROR,
        status.NO_BOX,
    ]
    grounded = results[0]
    assert (grounded.width, grounded.height) == (40, 20)
    assert grounded.kept == [script["a dog"][0]] and grounded.dropped == []
    assert results[1].dropped == script["a cat"] and "0.300" in results[1].reason
    assert "kernel exploded" in results[4].reason and (results[4].width, results[4].height) == (8, 8)
    assert "no box" in results[5].reason and (results[5].width, results[5].height) == (5, 6)
    assert results[3].reason and results[3].width is None
    # one batched call for the 4 decodable images with phrases, one call each to isolate the failure, then
    # one probe on a blank image that shows the detector still works (so the failure is the image's)
    assert detector.calls == [4, 1, 1, 1, 1, 1]
    assert results[0].to_dict()["kept"][0]["phrase_index"] == 0


def test_ground_batch_threshold_parameter():
    detector = ScriptedDetector({"a cat": [det(0, (0.1, 0.1, 0.5, 0.5), 0.4)]})
    image = Image.new("RGB", (10, 10))
    assert ground_batch([image], [["a cat"]], detector)[0].status == status.NO_BOX
    assert ground_batch([image], [["a cat"]], detector, box_threshold=0.35)[0].status == status.GROUNDED


def test_ground_batch_rejects_mismatched_lengths():
    with pytest.raises(ValueError):
        ground_batch([Image.new("RGB", (4, 4))], [], ScriptedDetector({}))


# --- the fault model (grit_pipeline.faults, docs/robustness.md) ----------------------------------------------

class FailingDetector:
    """Raises ``error`` for images whose first phrase is in ``bad`` (all when ``bad`` is None); records calls."""

    def __init__(self, error, bad=None, oom_above=None):
        self.error, self.bad, self.oom_above, self.calls = error, bad, oom_above, []

    def detect(self, images, phrases):
        self.calls.append(len(images))
        if self.oom_above is not None and len(images) > self.oom_above:
            import torch

            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        if self.bad is None or any(p[0] in self.bad for p in phrases):
            raise self.error
        return [[det(0, (0.1, 0.1, 0.5, 0.5), 0.9)] for _ in phrases]


def batch_of(n):
    return [Image.new("RGB", (8, 8))] * n, [[f"thing {i}"] for i in range(n)]


def test_a_cuda_error_is_systemic_and_rejects_nothing():
    from grit_pipeline.faults import SystemicFault

    detector = FailingDetector(RuntimeError("CUDA error: an illegal memory access was encountered"))
    images, phrases = batch_of(4)
    with pytest.raises(SystemicFault, match="illegal memory access"):
        ground_batch(images, phrases, detector)
    assert detector.calls == [4]  # never retried image by image: no image is blamed


def test_every_image_failing_alike_is_systemic():
    from grit_pipeline.faults import SystemicFault

    detector = FailingDetector(RuntimeError("weights are garbage"))
    images, phrases = batch_of(3)
    with pytest.raises(SystemicFault, match="every image of a batch of 3 failed"):
        ground_batch(images, phrases, detector)


def test_a_lone_failing_image_is_systemic_when_the_probe_fails_too():
    from grit_pipeline.faults import SystemicFault

    detector = FailingDetector(RuntimeError("weights are garbage"))
    images, phrases = batch_of(1)
    with pytest.raises(SystemicFault, match="blank probe image"):
        ground_batch(images, phrases, detector)
    # ...and the image's own fault when the detector works on the probe
    images, phrases = [Image.new("RGB", (8, 8))], [["boom"]]
    (result,) = ground_batch(images, phrases, FailingDetector(RuntimeError("bad pixels"), bad={"boom"}))
    assert result.status == status.DETECTOR_ERROR and "bad pixels" in result.reason


def test_sample_error_is_believed_without_a_probe():
    from grit_pipeline.faults import SampleError

    detector = FailingDetector(SampleError("image too small for this model"), bad={"thing 0"})
    images, phrases = batch_of(2)
    results = ground_batch(images, phrases, detector)
    assert [r.status for r in results] == [status.DETECTOR_ERROR, status.GROUNDED]
    assert detector.calls == [2, 1, 1]  # the batch, then each image alone; no probe


def test_out_of_memory_halves_the_batch_down_to_what_fits():
    detector = FailingDetector(None, bad=set(), oom_above=2)
    images, phrases = batch_of(7)
    counters = {}
    results = detect_batch(images, phrases, detector, counters=counters)
    assert all(r.status is None and len(r.detections) == 1 for r in results)
    assert detector.calls == [7, 3, 1, 2, 4, 2, 2]
    assert counters == {"oom_splits": 3}  # 7 -> 3 + 4, 3 -> 1 + 2, 4 -> 2 + 2


def test_out_of_memory_on_one_image_is_systemic():
    from grit_pipeline.faults import SystemicFault

    detector = FailingDetector(None, bad=set(), oom_above=0)
    images, phrases = batch_of(2)
    with pytest.raises(SystemicFault, match="out of memory on a single image"):
        detect_batch(images, phrases, detector)


def test_a_call_that_does_not_return_in_time_is_systemic():
    import threading

    from grit_pipeline.faults import SystemicFault

    release = threading.Event()

    class Hanging:
        def detect(self, images, phrases):
            release.wait(30)
            return [[] for _ in images]

    images, phrases = batch_of(2)
    try:
        with pytest.raises(SystemicFault, match="did not return within 0.2 s"):
            detect_batch(images, phrases, Hanging(), timeout_s=0.2)
    finally:
        release.set()
    # a call that returns in time is untouched by the limit
    assert all(r.status is None for r in detect_batch(images, phrases, FailingDetector(None, bad=set()),
                                                      timeout_s=5))
