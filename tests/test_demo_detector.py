"""The demo detector: loads offline from the package, finds obvious objects, scores absent phrases low."""
from __future__ import annotations

import pytest
import torch
from PIL import Image

from grit_pipeline.detectors.base import Detection, available_detectors, get_detector
from grit_pipeline.detectors.demo import DemoDetector, default_checkpoint
from grit_pipeline.detectors.demo_model import DemoGroundingModel, WordVocabulary, save_checkpoint
from grit_pipeline.evaluate import box_iou
from grit_pipeline.grounding import filter_detections
from grit_pipeline.synth.scene import Scene, SceneObject, object_extent, render_scene


@pytest.fixture(scope="module")
def detector():
    return get_detector("demo")


def _scene(width, height, objects):
    scene = Scene(width, height, "flat", ((128, 128, 128), (128, 128, 128)), 0)
    for k, (shape, colour, cx, cy, r) in enumerate(objects):
        obj = SceneObject(shape, colour, "large", (cx, cy), r, 0.0, k)
        x1, y1, x2, y2 = object_extent(obj)
        obj.box = (max(0, x1) / width, max(0, y1) / height, min(width, x2) / width, min(height, y2) / height)
        scene.objects.append(obj)
    return scene


def test_ships_in_the_package_and_is_registered():
    path = default_checkpoint()
    assert path.is_file() and path.stat().st_size <= 5 * 1024 * 1024
    assert "demo" in available_detectors()


def test_finds_an_obvious_object_and_rejects_absent_phrases(detector):
    scene = _scene(240, 180, [("circle", "red", 70, 90, 45), ("square", "blue", 180, 60, 35)])
    image = render_scene(scene)
    phrases = ["a red circle", "the blue square", "a green star", "a dog", "a purple ring"]
    (raw,) = detector.detect([image], [phrases])
    assert all(isinstance(d, Detection) and 0 <= d.phrase_index < len(phrases) for d in raw)
    kept, dropped = filter_detections(raw)
    best = {}
    for d in raw:
        best[d.phrase_index] = max(best.get(d.phrase_index, 0.0), d.score)
    for index, obj in ((0, scene.objects[0]), (1, scene.objects[1])):
        hits = [d for d in kept if d.phrase_index == index and box_iou(d.box, obj.box) >= 0.5]
        assert hits, (phrases[index], raw)
        assert hits[0].score > 0.65
    for index in (2, 3, 4):   # absent: shapes and colours that are not there, an unknown word
        assert best.get(index, 0.0) < 0.65, (phrases[index], best)
        assert not [d for d in kept if d.phrase_index == index]


def test_output_contract(detector):
    images = [Image.new("RGB", (200, 160), (120, 120, 120)), Image.new("L", (64, 300), 90)]
    out = detector.detect(images, [["a red circle", "it"], []])
    assert len(out) == 2 and out[1] == []
    for d in out[0]:
        x1, y1, x2, y2 = d.box
        assert 0 <= x1 < x2 <= 1 and 0 <= y1 < y2 <= 1 and 0 <= d.score <= 1
    with pytest.raises(ValueError):
        detector.detect(images, [["a"]])


def test_model_path_loads_another_checkpoint(tmp_path):
    vocab = WordVocabulary(["red", "circle"])
    torch.manual_seed(0)
    path = tmp_path / "other.pt"
    save_checkpoint(path, DemoGroundingModel(len(vocab), width=16, embed_dim=8), vocab, {"note": "untrained"})
    other = get_detector("demo", model=str(path), device="cpu")
    assert isinstance(other, DemoDetector) and other.meta == {"note": "untrained"}
    assert other.vocab.encode("a red circle") == [1, 2, 3]       # "a" is unknown here: UNK
    (dets,) = other.detect([Image.new("RGB", (100, 120))], [["red circle"]])
    assert all(0 <= d.score <= 1 for d in dets)


def test_clear_errors_for_bad_checkpoints(tmp_path):
    with pytest.raises(FileNotFoundError, match="make demo-detector"):
        get_detector("demo", model=str(tmp_path / "missing.pt"))
    torch.save({"something": "else"}, tmp_path / "bad.pt")
    with pytest.raises(ValueError, match="not a demo detector checkpoint"):
        get_detector("demo", model=str(tmp_path / "bad.pt"))


@pytest.mark.slow
def test_training_script_writes_a_loadable_checkpoint(tmp_path):
    from grit_pipeline.detectors.demo_train import train

    summary = train(tmp_path / "tiny.pt", images=64, steps=3, batch_size=8, threads=1, log_every=1, workers=1)
    assert summary["steps"] == 3 and (tmp_path / "tiny.pt").is_file()
    detector = get_detector("demo", model=str(tmp_path / "tiny.pt"))
    assert detector.meta["images"] == 64
