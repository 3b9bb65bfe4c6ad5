"""Backend ``hf`` with tiny random Grounding DINO and OWLv2 models loaded from a save_pretrained directory."""
import logging

import numpy as np
import pytest
import torch
from PIL import Image

from grit_pipeline.detectors.base import Detection, get_detector
from grit_pipeline.detectors.hf import build_prompt, resolve_dtype, token_phrase_map
from hf_tiny import build_tiny_grounding_dino, build_tiny_mm_grounding_dino, build_tiny_owlv2, tiny_bert_tokenizer


@pytest.fixture(scope="module")
def gdino_dir(tmp_path_factory):
    return build_tiny_grounding_dino(tmp_path_factory.mktemp("gdino"), max_text_len=32)


@pytest.fixture(scope="module")
def owl_dir(tmp_path_factory):
    return build_tiny_owlv2(tmp_path_factory.mktemp("owlv2"))


@pytest.fixture(scope="module")
def gdino(gdino_dir):
    return get_detector("hf", model=str(gdino_dir), device="cpu", batch_size=3, min_score=0.0)


@pytest.fixture(scope="module")
def owl(owl_dir):
    return get_detector("hf", model=str(owl_dir), device="cpu", batch_size=3, min_score=0.0)


def random_images(sizes, seed=0):
    rng = np.random.default_rng(seed)
    return [Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)) for w, h in sizes]


# mixed sizes: some share a size (they batch together), some do not
SIZES = [(80, 50), (60, 90), (80, 50), (100, 100), (80, 50), (64, 40)]
PHRASES = [["a dog", "a hot dog"], ["a cat"], ["a red car", "a tree", "the sky"], ["two people"], [],
           ["a man with a hat", "a boat"]]


def assert_same_detections(left: list[list[Detection]], right: list[list[Detection]], tol=1e-4):
    assert len(left) == len(right)
    for a_list, b_list in zip(left, right):
        assert len(a_list) == len(b_list)
        for a, b in zip(a_list, b_list):
            assert a.phrase_index == b.phrase_index
            assert a.score == pytest.approx(b.score, abs=tol)
            assert a.box == pytest.approx(b.box, abs=tol)


# --- prompt and attribution (pure functions) ------------------------------------------------------------

def test_prompt_spans_and_token_map_tell_shared_words_apart(tmp_path):
    prompt, spans = build_prompt(["a dog", "a hot dog"])
    assert prompt == "a dog . a hot dog ."
    assert [prompt[s:e] for s, e in spans] == ["a dog", "a hot dog"]
    tokenizer = tiny_bert_tokenizer(tmp_path)
    encoded = tokenizer(prompt, return_offsets_mapping=True)
    tokens = tokenizer.convert_ids_to_tokens(encoded["input_ids"])
    assert tokens == ["[CLS]", "a", "dog", ".", "a", "hot", "dog", ".", "[SEP]"]
    mapping = token_phrase_map(encoded["offset_mapping"], spans)
    assert mapping == [[1, 2], [4, 5, 6]]  # the second "dog" (token 6) belongs to "a hot dog" only
    # the reverse order too: "a hot dog" first, then "a dog"
    prompt, spans = build_prompt(["a hot dog", "a dog"])
    encoded = tokenizer(prompt, return_offsets_mapping=True)
    assert token_phrase_map(encoded["offset_mapping"], spans) == [[1, 2, 3], [5, 6]]


def test_delimiters_inside_a_phrase_do_not_split_it():
    prompt, spans = build_prompt(["mr. smith?", "a dog"])
    assert prompt == "mr  smith  . a dog ."
    assert [prompt[s:e] for s, e in spans] == ["mr  smith ", "a dog"]


def test_padded_batch_offsets_map_padding_to_no_phrase(tmp_path):
    tokenizer = tiny_bert_tokenizer(tmp_path)
    prompts = [build_prompt(["a cat"]), build_prompt(["a dog", "a hot dog"])]
    encoded = tokenizer([p for p, _ in prompts], padding="longest", return_offsets_mapping=True)
    assert token_phrase_map(encoded["offset_mapping"][0], prompts[0][1]) == [[1, 2]]


def test_dtype_resolution():
    assert resolve_dtype("auto", "cpu") == torch.float32
    assert resolve_dtype(None, "cuda") == torch.float16
    assert resolve_dtype("bf16", "cuda") == torch.bfloat16
    with pytest.raises(ValueError):
        resolve_dtype("int8", "cpu")


# --- Grounding DINO ---------------------------------------------------------------------------------------

def test_grounding_dino_from_directory(gdino):
    assert gdino.family == "grounding-dino" and gdino.text_limit == 32 and gdino.device == "cpu"
    images = random_images(SIZES[:2])
    results = gdino.detect(images, PHRASES[:2])
    assert len(results) == 2
    for detections, phrases in zip(results, PHRASES[:2]):
        assert len(detections) == gdino.model.config.num_queries  # one box per query at min_score 0
        for d in detections:
            assert 0 <= d.phrase_index < len(phrases)
            x1, y1, x2, y2 = d.box
            assert 0.0 <= x1 <= x2 <= 1.0 and 0.0 <= y1 <= y2 <= 1.0
            assert 0.0 <= d.score <= 1.0


@pytest.mark.parametrize("which", ["gdino", "owl"])
def test_batched_equals_one_at_a_time(which, request):
    detector = request.getfixturevalue(which)
    images = random_images(SIZES)
    batched = detector.detect(images, PHRASES)
    single = [detector.detect([image], [phrases])[0] for image, phrases in zip(images, PHRASES)]
    assert_same_detections(batched, single)
    assert batched[4] == []  # no phrases: nothing detected, nothing run
    assert sum(len(d) for d in batched) > 0


def test_mm_grounding_dino_is_supported(tmp_path):
    model_dir = build_tiny_mm_grounding_dino(tmp_path / "mm")
    detector = get_detector("hf", model=str(model_dir), device="cpu", batch_size=4, min_score=0.0)
    assert detector.model_type == "mm-grounding-dino" and detector.family == "grounding-dino"
    images = random_images(SIZES[:3])
    batched = detector.detect(images, PHRASES[:3])
    assert_same_detections(batched, [detector.detect([i], [p])[0] for i, p in zip(images, PHRASES[:3])])
    assert {d.phrase_index for d in batched[2]} <= {0, 1, 2} and batched[2]


def test_batches_really_hold_several_images(gdino_dir):
    detector = get_detector("hf", model=str(gdino_dir), device="cpu", batch_size=8)
    images = random_images([(80, 50)] * 5 + [(60, 90)] * 2)
    detector.detect(images, [["a dog"]] * 7)
    # 2 image sizes -> 2 forward passes for 7 rows
    assert detector.stats["forward_passes"] == 2 and detector.stats["rows"] == 7


def test_pad_mode_fills_batches_and_equals_exact_mode_on_equal_sizes(gdino_dir):
    padded = get_detector("hf", model=str(gdino_dir), device="cpu", batch_size=4, min_score=0.0,
                          image_batching="pad")
    exact = get_detector("hf", model=str(gdino_dir), device="cpu", batch_size=4, min_score=0.0)
    mixed = random_images([(80, 50), (60, 90), (100, 100), (64, 40)])
    results = padded.detect(mixed, [["a dog"], ["a cat"], ["a tree"], ["a boat"]])
    assert padded.stats["forward_passes"] == 1  # four sizes, one padded batch
    assert all(len(r) == padded.model.config.num_queries for r in results)
    assert all(0.0 <= v <= 1.0 for r in results for d in r for v in d.box)
    same = random_images([(80, 50)] * 3, seed=9)
    phrases = [["a dog", "a hot dog"], ["a cat"], ["a red car"]]
    assert_same_detections(padded.detect(same, phrases), exact.detect(same, phrases))
    with pytest.raises(ValueError, match="image_batching"):
        get_detector("hf", model=str(gdino_dir), device="cpu", image_batching="sometimes")


@pytest.mark.parametrize("which", ["gdino", "owl"])
def test_prepared_images_give_the_same_detections(which, request):
    import pickle

    detector = request.getfixturevalue(which)
    preparer = pickle.loads(pickle.dumps(detector.preparer()))  # survives a trip to a worker process
    images = random_images(SIZES[:4])
    prepared = [preparer(image) for image in images]
    assert prepared[0].size == (80, 50)
    assert_same_detections(detector.detect(prepared, PHRASES[:4]), detector.detect(images, PHRASES[:4]))


def test_attribution_end_to_end_matches_the_model_token_scores(gdino, gdino_dir):
    """'a dog' / 'a hot dog': each box's phrase and score are recomputed from the raw model output."""
    from transformers import AutoModelForZeroShotObjectDetection, AutoProcessor

    image = random_images([(80, 50)], seed=3)[0]
    (detections,) = gdino.detect([image], [["a dog", "a hot dog"]])

    processor = AutoProcessor.from_pretrained(gdino_dir)
    model = AutoModelForZeroShotObjectDetection.from_pretrained(gdino_dir).eval()
    inputs = processor(images=image, text="a dog . a hot dog .", return_tensors="pt")
    assert processor.tokenizer.convert_ids_to_tokens(inputs["input_ids"][0])[4:7] == ["a", "hot", "dog"]
    with torch.no_grad():
        probs = model(**inputs).logits[0].sigmoid()  # (queries, text positions)
    dog = probs[:, [1, 2]].mean(dim=1)
    hot_dog = probs[:, [4, 5, 6]].mean(dim=1)
    assert len(detections) == probs.shape[0]
    for q, d in enumerate(detections):
        expected_phrase = 0 if dog[q] >= hot_dog[q] else 1
        assert d.phrase_index == expected_phrase
        assert d.score == pytest.approx(float(max(dog[q], hot_dog[q])), abs=1e-5)
    assert {d.phrase_index for d in detections} == {0, 1}  # both phrases win some boxes in this image


def test_long_prompts_are_split_across_passes(gdino):
    words = "a red car . a big tree . the blue sky . two people . a small boat . a black horse".split(" . ")
    phrases = words + [f"{w} near the house" for w in words]  # 12 phrases, ~45 tokens > the 32 limit
    before = dict(gdino.stats)
    rows = gdino._plan_rows([phrases])
    assert len(rows) >= 2
    covered = [p for row in rows for p in row.phrase_indices]
    assert sorted(covered) == list(range(len(phrases)))  # every phrase in exactly one pass
    for row in rows:
        assert len(gdino.tokenizer(row.prompt)["input_ids"]) <= gdino.text_limit
    (detections,) = gdino.detect(random_images([(80, 50)])[0:1], [phrases])
    assert len(detections) == len(rows) * gdino.model.config.num_queries
    first_pass = set(rows[0].phrase_indices)
    assert any(d.phrase_index not in first_pass for d in detections)
    assert gdino.stats["split_prompts"] > before.get("split_prompts", 0)


def test_a_single_phrase_over_the_limit_is_truncated_loudly(gdino, caplog):
    phrase = " ".join(["a big red car"] * 12)  # 48 tokens
    before = gdino.stats["truncated_phrases"]
    with caplog.at_level(logging.WARNING, logger="grit_pipeline.detectors.hf"):
        (detections,) = gdino.detect(random_images([(80, 50)]), [[phrase, "a dog"]])
    assert gdino.stats["truncated_phrases"] == before + 1
    assert "truncated" in caplog.text
    assert {d.phrase_index for d in detections} <= {0, 1} and detections


def test_min_score_and_bfloat16(gdino_dir):
    detector = get_detector("hf", model=str(gdino_dir), device="cpu", dtype="bfloat16", min_score=0.5)
    assert detector.model.dtype == torch.bfloat16
    (detections,) = detector.detect(random_images([(80, 50)]), [["a dog", "a cat"]])
    assert all(d.score >= 0.5 for d in detections)


# --- OWLv2 ---------------------------------------------------------------------------------------------

def test_owlv2_boxes_are_normalised_to_the_image_not_the_padded_square(owl, owl_dir):
    from transformers import AutoModelForZeroShotObjectDetection, AutoProcessor

    assert owl.family == "owl" and owl.square_padded and owl.text_limit == 16
    image = random_images([(80, 50)], seed=5)[0]
    phrases = ["a dog", "a cat", "a tree"]
    (detections,) = owl.detect([image], [phrases])
    processor = AutoProcessor.from_pretrained(owl_dir)
    model = AutoModelForZeroShotObjectDetection.from_pretrained(owl_dir).eval()
    inputs = processor(text=[phrases], images=image, return_tensors="pt")
    with torch.no_grad():
        outputs = model(**inputs)
    # transformers' own post-processing, with the padded square as target size (OWLv2's convention)
    (reference,) = processor.post_process_grounded_object_detection(outputs, threshold=0.0, target_sizes=[(80, 80)])
    assert len(detections) == len(reference["scores"])
    for d, score, label, box in zip(detections, reference["scores"], reference["labels"], reference["boxes"]):
        assert d.phrase_index == int(label)
        assert d.score == pytest.approx(float(score), abs=1e-5)
        x1, y1, x2, y2 = (box / torch.tensor([80, 50, 80, 50])).clamp(0, 1).tolist()
        assert d.box == pytest.approx((x1, y1, x2, y2), abs=1e-5)


def test_owl_padding_queries_never_win(owl):
    images = random_images([(64, 64)] * 3)
    results = owl.detect(images, [["a dog"], ["a cat", "a tree", "a boat", "a bus"], ["a sign", "a cup"]])
    assert {d.phrase_index for d in results[0]} == {0}
    assert {d.phrase_index for d in results[2]} <= {0, 1}


def test_owl_long_query_truncated_and_counted(owl, caplog):
    before = owl.stats["truncated_phrases"]
    with caplog.at_level(logging.WARNING, logger="grit_pipeline.detectors.hf"):
        owl.detect(random_images([(64, 64)]), [[" ".join(["a red car"] * 8), "a dog"]])
    assert owl.stats["truncated_phrases"] == before + 1 and "truncated" in caplog.text


# --- errors ---------------------------------------------------------------------------------------------

def test_missing_model_is_a_clear_error():
    with pytest.raises(ValueError, match="needs a model"):
        get_detector("hf")


def test_unsupported_model_type(tmp_path):
    from transformers import BertConfig, BertModel

    BertModel(BertConfig(vocab_size=50, hidden_size=8, num_hidden_layers=1, num_attention_heads=1,
                         intermediate_size=8)).save_pretrained(tmp_path)
    tiny_bert_tokenizer(tmp_path).save_pretrained(tmp_path)
    with pytest.raises(ValueError, match="(?i)bert"):  # not a zero-shot detector: transformers says so
        get_detector("hf", model=str(tmp_path), device="cpu")


def test_gpu_bench_harness_runs_on_cpu(gdino_dir):
    """bench/gpu_grounding.py's loader + timing loop, with the tiny model (the full run needs a GPU)."""
    from bench import gpu_grounding

    items = gpu_grounding.synthetic_jpegs(16)
    groups = [group for _, group, _ in items]
    batches = gpu_grounding.aspect_grouped_batches(groups, 2)
    assert batches and all(len({groups[i] for i in batch}) == 1 and len(batch) == 2 for batch in batches)
    detector = get_detector("hf", model=str(gdino_dir), device="cpu")
    result = gpu_grounding.measure(detector, items, batch_size=2, batches=2, workers=0, device="cpu")
    assert result["images"] == 4 and result["images_per_s"] > 0 and 0 <= result["loader_wait_fraction"] < 1
    assert detector.stats["rows"] == 6  # warm-up batch + 2 timed batches of 2 images, one pass each
    assert detector.stats["forward_passes"] == 3
