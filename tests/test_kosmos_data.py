"""kosmos data loader: shards, decoding both layouts, box moving, training text, labels, splitting, resume."""
import io
import json
import random
import tarfile

import pytest
import torch

from kosmos.images import crop_frame, move_box, prepare_image
from kosmos.sequence import SequenceEncoder, collate
from kosmos.sources import DataConfig, SampleError, SourceSpec
from kosmos.sources.base import sample_rng
from kosmos.sources.grounded import GroundedSource, control_token_in, decode_sample, iter_records, training_text
from kosmos.shards import expand_urls, raw_samples
from kosmos.stream import SourceStream
from kosmos.tokenizer import build_processor, train_tokenizer
from kosmos.toydata import toy_record, write_toy_shards

CONFIG = DataConfig(image_size=32, num_image_tokens=4, shuffle_buffer=4, max_length=64)


def grounded_source(urls, processor, config):
    encoder = SequenceEncoder(processor, config.num_image_tokens, config.image_size, config.image_mode)
    return GroundedSource(SourceSpec("grounded", list(urls)), encoder, config)


def GritShardStream(urls, processor, config, batch_size, **kwargs):
    """The grounded source's stream over ``urls`` (what ``kosmos train --data`` reads)."""
    return SourceStream(grounded_source(urls, processor, config), batch_size, seed=config.seed,
                        shuffle=config.shuffle_buffer, files=list(urls), **kwargs)


def encode_sample(raw, processor, config, epoch=0):
    return grounded_source([], processor, config).units(raw, epoch, {})[0]


@pytest.fixture(scope="module")
def shards(tmp_path_factory):
    root = tmp_path_factory.mktemp("shards")
    write_toy_shards(root / "pipeline", num_shards=3, per_shard=6, corrupt_keys=("000010002",))
    write_toy_shards(root / "grit20m", num_shards=1, per_shard=6, fmt="img2dataset", seed=1)
    return root


@pytest.fixture(scope="module")
def processor(shards):
    captions = [r["caption"] for r in iter_records(expand_urls(str(shards / "pipeline")))]
    return build_processor(train_tokenizer(captions, vocab_size=100), image_size=32)


def test_expand_urls(shards, tmp_path):
    d = shards / "pipeline"
    assert expand_urls(str(d)) == [str(d / f"{i:05d}.tar") for i in range(3)]
    assert expand_urls(str(d / "{00000..00001}.tar")) == [str(d / "00000.tar"), str(d / "00001.tar")]
    assert expand_urls([str(d / "0000[2].tar"), "https://host/x/00001.tar"]) == [str(d / "00002.tar"),
                                                                                  "https://host/x/00001.tar"]
    with pytest.raises(FileNotFoundError):
        expand_urls(str(tmp_path / "nothing.tar"))
    with pytest.raises(FileNotFoundError):
        expand_urls(str(tmp_path))  # a directory without shards


def test_decode_reads_pipeline_and_grit20m_layouts(shards):
    for layout in ("pipeline", "grit20m"):
        raw = next(iter(raw_samples(str(shards / layout / "00000.tar"))))
        image, record = decode_sample(raw)
        meta = json.loads(raw["json"])
        assert image.mode == "RGB" and image.size == (80, 64)
        assert record["caption"] == meta["caption"]
        assert record["ref_exps"] == meta["ref_exps"] and record["noun_chunks"] == meta["noun_chunks"]


def test_bad_samples_raise_sample_error_with_reason():
    ok = {"__key__": "k", "json": json.dumps({"caption": "a dog", "ref_exps": []}).encode(), "jpg": b"xx"}
    with pytest.raises(SampleError) as info:
        decode_sample(ok)
    assert info.value.reason == "decode_error"
    cases = {
        "missing_json": {"__key__": "k", "jpg": b""},
        "bad_json": {"__key__": "k", "json": b"{nope"},
        "not_usable": {"__key__": "k", "json": json.dumps({"caption": "x", "status": "failed_to_download"}).encode()},
        "bad_caption": {"__key__": "k", "json": json.dumps({"caption": ""}).encode(), "txt": b"<grounding> x"},
        "missing_image": {"__key__": "k", "json": json.dumps({"caption": "a dog"}).encode()},
    }
    for reason, raw in cases.items():
        with pytest.raises(SampleError) as info:
            decode_sample(raw)
        assert info.value.reason == reason


def test_crop_frame_and_move_box_by_hand():
    # 200 x 100 image: centre crop keeps x in [50, 150)
    assert crop_frame(200, 100, "crop") == (50, 0, 150, 100)
    assert crop_frame(200, 100, "square") == (0, 0, 200, 100)
    frame = (0.25, 0.0, 0.5, 1.0)
    # box x 0.25..0.5 (pixels 50..100) -> crop 0..0.5
    assert move_box((0.25, 0.2, 0.5, 0.6), frame) == pytest.approx((0.0, 0.2, 0.5, 0.6))
    # box x 0.1..0.35: 0.1 of its 0.25 width inside = 40% kept -> x 0..0.2
    assert move_box((0.1, 0.0, 0.35, 1.0), frame) == pytest.approx((0.0, 0.0, 0.2, 1.0))
    # box x 0.0..0.3: 0.05 of 0.3 inside = 16.7% < 20% -> dropped
    assert move_box((0.0, 0.0, 0.3, 1.0), frame) is None
    assert move_box((0.0, 0.0, 0.3, 1.0), frame, min_area_kept=0.1) is not None
    assert move_box((0.8, 0.0, 0.9, 1.0), frame) is None  # wholly outside
    from PIL import Image

    image, frame = prepare_image(Image.new("RGB", (200, 100)), 32, "crop")
    assert image.size == (32, 32) and frame == (0.25, 0.0, 0.5, 1.0)


def test_training_text_uses_the_serializer_and_the_grounding_fraction():
    from grit_pipeline.serialize import grounded_text

    record = {"caption": "a dog and a cat", "noun_chunks": [], "ref_exps": [
        [0, 5, 0.1, 0.1, 0.4, 0.5, 0.9], [10, 15, 0.5, 0.5, 0.9, 0.9, 0.9], [10, 15, 0.6, 0.1, 0.7, 0.2, 0.5]]}
    grounded = training_text(record, (0, 0, 1, 1), DataConfig(grounding_prob=1.0), random.Random(0))
    assert grounded == grounded_text(record)  # square view: exactly the pipeline's text
    assert grounded.startswith("<grounding>") and grounded.count("<object>") == 2
    plain = training_text(record, (0, 0, 1, 1), DataConfig(grounding_prob=0.0), random.Random(0))
    assert plain == "a dog and a cat"
    rng = random.Random(1)
    share = sum(training_text(record, (0, 0, 1, 1), DataConfig(), rng).startswith("<grounding>")
                for _ in range(400)) / 400
    assert 0.42 < share < 0.58
    # the cat's box lies outside a left-half view: its phrase stays plain text
    cropped = training_text(record, (0.0, 0.0, 0.5, 1.0), DataConfig(grounding_prob=1.0), random.Random(0))
    assert cropped.count("<phrase>") == 1 and cropped.endswith(" and a cat")


def test_mirrored_sample_flips_pixels_boxes_and_left_right_words(shards, processor):
    from grit_pipeline.serialize import parse_grounded_text

    from kosmos.sources.grounded import swap_left_right

    assert swap_left_right("Left of the RIGHT box, leftmost; lefty") == "Right of the LEFT box, rightmost; lefty"
    record = {"caption": "the left dog", "noun_chunks": [], "ref_exps": [[0, 12, 0.1, 0.2, 0.3, 0.6, 0.9]]}
    config = DataConfig(grounding_prob=1.0)
    plain = parse_grounded_text(training_text(record, (0, 0, 1, 1), config, random.Random(0)))
    mirrored = parse_grounded_text(training_text(record, (0, 0, 1, 1), config, random.Random(0), mirrored=True))
    assert plain.caption == "the left dog" and mirrored.caption == "the right dog"
    (x1, y1, x2, y2), (m1, n1, m2, n2) = plain.entities[0].boxes[0], mirrored.entities[0].boxes[0]
    assert (n1, n2) == (y1, y2) and m1 == pytest.approx(1 - x2, abs=1 / 32) and m2 == pytest.approx(1 - x1, abs=1 / 32)

    raw = next(iter(raw_samples(str(shards / "pipeline" / "00000.tar"))))
    base = DataConfig(image_size=32, num_image_tokens=4, grounding_prob=1.0)
    never, always = encode_sample(raw, processor, base), encode_sample(raw, processor, DataConfig(
        image_size=32, num_image_tokens=4, grounding_prob=1.0, flip_prob=1.0))
    assert torch.equal(always["pixel_values"], never["pixel_values"].flip(-1))
    assert always["text"] != never["text"] and always["text"].count("<object>") == never["text"].count("<object>")
    # flip_prob 0 draws nothing: every sample's text is what it was before the option existed
    image, decoded = decode_sample(raw)
    frame = prepare_image(image, 32, base.image_mode)[1]
    assert never["text"] == training_text(decoded, frame, base, sample_rng(0, never["key"], 0))
    assert DataConfig(flip_prob=1.5).number_problems() == ["--flip-prob must be at least 0 and at most 1, got 1.5"]


def test_zoomed_sample_sees_a_random_part_with_its_boxes_moved(shards, processor):
    from PIL import Image as PILImage

    from kosmos.images import random_region

    rng = random.Random(0)
    for _ in range(200):
        left, top, right, bottom = random_region((10, 0, 210, 100), 0.5, rng)
        assert 10 <= left < right <= 210 and 0 <= top < bottom <= 100
        assert 0.5 <= (right - left) / 200 <= 1.0 and (right - left) / (bottom - top) == pytest.approx(2, rel=0.03)
    image, frame = prepare_image(PILImage.new("RGB", (200, 100)), 32, "square", zoom=(0.5, random.Random(3)))
    assert image.size == (32, 32) and 0.5 <= frame[2] <= 1 and frame[2] == pytest.approx(frame[3], abs=0.02)

    raw = next(iter(raw_samples(str(shards / "pipeline" / "00000.tar"))))
    config = DataConfig(image_size=32, num_image_tokens=4, grounding_prob=1.0, zoom_min_scale=0.5)
    first, again, later = (encode_sample(raw, processor, config, epoch) for epoch in (0, 0, 1))
    assert torch.equal(first["pixel_values"], again["pixel_values"]) and first["text"] == again["text"]
    assert not torch.equal(first["pixel_values"], later["pixel_values"])  # a new part each epoch
    # the text's boxes are the record's, moved into the part the model sees
    decoded = decode_sample(raw)[1]
    rng = sample_rng(0, first["key"], 0)
    frame = prepare_image(decode_sample(raw)[0], 32, config.image_mode, zoom=(0.5, rng))[1]
    assert first["text"] == training_text(decoded, frame, config, rng)
    assert DataConfig(zoom_min_scale=0).number_problems() == [
        "--zoom-min-scale must be above 0 and at most 1, got 0"]


def test_encoded_sample_labels_and_image_slots(shards, processor):
    raw = next(iter(raw_samples(str(shards / "pipeline" / "00000.tar"))))
    config = DataConfig(image_size=32, num_image_tokens=4, grounding_prob=1.0)
    item = encode_sample(raw, processor, config)
    ids, labels, mask = item["input_ids"], item["labels"], item["image_embeds_position_mask"]
    tok = processor.tokenizer
    assert int(mask.sum()) == 4 and mask[2:6].tolist() == [1, 1, 1, 1]
    assert ids[0] == tok.bos_token_id and ids[-1] == tok.eos_token_id
    assert tok.convert_ids_to_tokens(int(ids[1])) == "<image>" and tok.convert_ids_to_tokens(int(ids[6])) == "</image>"
    assert tok.convert_ids_to_tokens(int(ids[7])) == "<grounding>"
    assert (labels[:8] == -100).all() and torch.equal(labels[8:], ids[8:])
    assert item["pixel_values"].shape == (1, 3, 32, 32)
    batch = collate([item, encode_sample(raw, processor, DataConfig(image_size=32, num_image_tokens=4,
                                                                    grounding_prob=0.0))], tok.pad_token_id)
    short = batch["attention_mask"][1].sum()
    assert (batch["labels"][1, short:] == -100).all() and (batch["input_ids"][1, short:] == tok.pad_token_id).all()
    assert (batch["image_embeds_position_mask"].sum(1) == 4).all()
    assert batch["pixel_values"].shape == (2, 3, 32, 32) and batch["image_counts"] == [1, 1]


def test_caption_spelling_out_a_control_token_is_skipped_with_a_reason(shards, processor):
    tok = processor.tokenizer
    assert control_token_in("a dog <b>bold</b> & 3 < 4", tok) is None  # ordinary HTML / maths is fine
    assert control_token_in("see <phrase>this</phrase>", tok) == "<phrase>"
    assert control_token_in("cell <patch_index_0042> here", tok) == "<patch_index_0042>"
    assert control_token_in("the end</s> more", tok) == "</s>"
    raw = next(iter(raw_samples(str(shards / "pipeline" / "00000.tar"))))
    record = json.loads(raw["json"])
    record["caption"] = record["caption"] + " </object>"
    with pytest.raises(SampleError) as info:
        encode_sample({**raw, "json": json.dumps(record).encode()}, processor, CONFIG)
    assert info.value.reason == "caption_markup" and "</object>" in str(info.value)


def _keys(stream, batches):
    out, it = [], iter(stream)
    for _ in range(batches):
        out.extend(next(it)["keys"])
    return out


def test_stream_splits_by_node_and_counts_corrupt_samples(shards, processor):
    urls = expand_urls(str(shards / "pipeline"))
    # 3 shards, 3 ranks: shard-level split, one epoch = 6 (5 for the corrupt one's shard) samples each
    seen = []
    for rank in range(3):
        stream = GritShardStream(urls, processor, CONFIG, batch_size=1, rank=rank, world_size=3)
        it = iter(stream)
        batches = [next(it) for _ in range(5)]
        seen.append({k for b in batches for k in b["keys"]})
    assert not (seen[0] & seen[1]) and not (seen[0] & seen[2]) and not (seen[1] & seen[2])
    assert all(len({k[:5] for k in s}) == 1 for s in seen)  # each rank reads whole shards
    # 2 ranks x 2 readers > 3 shards... use 2 ranks x 2 workers with sample-level split
    keys = [set(_keys(GritShardStream(urls, processor, CONFIG, 1, rank=r, world_size=4), 4)) for r in range(4)]
    assert all(not (keys[i] & keys[j]) for i in range(4) for j in range(i + 1, 4))
    # the corrupt sample is skipped and counted
    stream = GritShardStream(urls, processor, CONFIG, batch_size=17)
    batch = next(iter(stream))
    assert "000010002" not in batch["keys"] and batch["reader_state"]["skipped"] == {"decode_error": 1}


def test_stream_is_deterministic_and_resumes_from_a_reader_position(shards, processor):
    urls = expand_urls(str(shards / "pipeline"))
    full = _keys(GritShardStream(urls, processor, CONFIG, batch_size=3), 10)  # crosses an epoch (17 usable)
    assert full == _keys(GritShardStream(urls, processor, CONFIG, batch_size=3), 10)
    assert len(set(full[:17])) == 17 and set(full[17:]) <= set(full[:17])
    it = iter(GritShardStream(urls, processor, CONFIG, batch_size=3))
    state = [next(it) for _ in range(4)][-1]["reader_state"]
    resumed = GritShardStream(urls, processor, CONFIG, batch_size=3, reader_states={0: state})
    assert _keys(resumed, 6) == full[12:30]


def test_loader_reads_grit20m_download_for_training(shards, processor):
    urls = expand_urls(str(shards / "grit20m"))
    config = DataConfig(image_size=32, num_image_tokens=4, grounding_prob=1.0, shuffle_buffer=0)
    batch = next(iter(GritShardStream(urls, processor, config, batch_size=6)))
    texts = processor.batch_decode(batch["input_ids"], skip_special_tokens=True)
    assert sum("<object>" in t for t in texts) >= 4  # boxes in the json became location tokens


def test_broken_tar_is_counted_not_fatal(tmp_path):
    good = write_toy_shards(tmp_path, num_shards=1, per_shard=3)[0]
    data = good.read_bytes()
    broken = tmp_path / "broken.tar"
    broken.write_bytes(data[: len(data) // 2 + 700])  # a download cut short inside a member
    counters = {}
    samples = list(raw_samples(str(broken), counters))
    assert len(samples) >= 1 and counters.get("shard_error", 0) >= 1


def test_resumed_reader_counts_each_broken_shard_once(shards, processor, tmp_path):
    data = (shards / "pipeline" / "00000.tar").read_bytes()
    (tmp_path / "broken.tar").write_bytes(data[: len(data) // 2 + 700])
    urls = expand_urls(str(shards / "pipeline")) + [str(tmp_path / "broken.tar")]
    config = DataConfig(image_size=32, num_image_tokens=4, shuffle_buffer=0)
    it = iter(GritShardStream(urls, processor, config, batch_size=4))
    full = [next(it) for _ in range(8)]  # past the end of the first epoch
    resumed = iter(GritShardStream(urls, processor, config, batch_size=4, reader_states={0: full[3]["reader_state"]}))
    again = [next(resumed) for _ in range(4)]
    assert [b["keys"] for b in again] == [b["keys"] for b in full[4:]]
    assert [b["reader_state"] for b in again] == [b["reader_state"] for b in full[4:]]
    assert full[-1]["reader_state"]["skipped"]["shard_error"] >= 1


@pytest.mark.skipif(__import__("shutil").which("curl") is None, reason="webdataset opens http URLs with curl")
def test_remote_shards_over_http(shards):
    import functools
    import http.server
    import threading

    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(shards / "pipeline"))
    handler.log_message = lambda *a, **k: None
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        url = f"http://127.0.0.1:{server.server_port}/00000.tar"
        remote = [s["__key__"] for s in raw_samples(url)]
        local = [s["__key__"] for s in raw_samples(str(shards / "pipeline" / "00000.tar"))]
        assert remote == local and len(local) == 6
        counters = {}
        assert list(raw_samples(f"http://127.0.0.1:{server.server_port}/missing.tar", counters)) == []
        assert counters == {"shard_error": 1}
    finally:
        server.shutdown()


def test_training_text_crops_before_dropping_contained_expressions():
    # the released loader moves boxes into the view first: an expression whose container lost its box to the
    # crop keeps its own link; a sample left without any box is the plain caption, without <grounding>
    record = {"caption": "a dog in a box", "noun_chunks": [], "ref_exps": [
        [0, 14, 0.6, 0.1, 0.9, 0.9, 0.9], [9, 14, 0.1, 0.1, 0.4, 0.4, 0.9]]}
    config = DataConfig(grounding_prob=1.0)
    left = training_text(record, (0.0, 0.0, 0.5, 1.0), config, random.Random(0))
    assert left.startswith("<grounding>a dog in<phrase> a box</phrase><object>")
    whole = training_text(record, (0.0, 0.0, 1.0, 1.0), config, random.Random(0))
    assert whole.startswith("<grounding><phrase>a dog in a box</phrase>") and whole.count("<phrase>") == 1
    nothing = {**record, "ref_exps": [[0, 14, 0.6, 0.1, 0.9, 0.9, 0.9]]}
    assert training_text(nothing, (0.0, 0.0, 0.5, 1.0), config, random.Random(0)) == "a dog in a box"
    cells = {rule: training_text({**record, "ref_exps": [[0, 5, 0.0, 0.0, 0.5, 0.5, 0.9]]}, (0, 0, 1, 1),
                                 DataConfig(grounding_prob=1.0, cell_rule=rule), random.Random(0))
             for rule in ("official", "transformers")}
    assert "<patch_index_0528>" in cells["official"] and "<patch_index_0495>" in cells["transformers"]


def test_kosmos_train_cell_rule_flag_reaches_the_data_config():
    from grit_pipeline.config_flags import config_from_args, config_options
    from kosmos.cli import build_parser
    from kosmos.train import TrainConfig

    assert DataConfig().cell_rule == "official"
    args = build_parser().parse_args(["train", "--data", "x", "--output", "y", "--cell-rule", "transformers"])
    config = config_from_args(TrainConfig, args, data_options=config_options(DataConfig, args))
    assert DataConfig(**config.data_options).cell_rule == "transformers"
