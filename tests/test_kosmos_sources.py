"""The training mixture: the one encoder (0..N images per row), each source on its published format (hand-made
files with the real field names), text packing, interleaved limits, bad input counted, the mixer, resume, refusals."""
import gzip
import io
import json
import math
import tarfile

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
from PIL import Image as PILImage

from kosmos.mix import Mixture, parse_mix
from kosmos.sequence import IGNORE, Image, SequenceEncoder, Text, collate
from kosmos.sources import DataConfig, SourceError
from kosmos.stream import SourceStream
from kosmos.tokenizer import build_processor
from kosmos.train.recipes import default_batch_sizes
from kosmos_sources_helpers import SIZE, SLOTS, encoder_of, jpeg, source, word_processor

torch.set_num_threads(1)
WORDS = "a red square left of the blue circle . dogs run in a field with flowers and green trees ? yes".split()



@pytest.fixture(scope="module")
def processor():
    return word_processor(WORDS, 120)


@pytest.fixture(scope="module")
def encoder(processor):
    return encoder_of(processor)




def rows_of(src, limit=50):
    """Rows of one epoch of a source, in file order."""
    def tagged():
        for path in src.list_files():
            counters = {}
            for raw in src.read(path, counters):
                try:
                    units = src.units(raw, 0, counters)
                except Exception as error:  # noqa: BLE001
                    counters[getattr(error, "reason", "error")] = counters.get(getattr(error, "reason", "error"), 0) + 1
                    continue
                yield from ((u, None) for u in units)
            src.last_counters = counters
    return [row for _, (row, _tag) in zip(range(limit), src.pack(tagged()))]


def tokens(processor, ids):
    return processor.tokenizer.convert_ids_to_tokens([int(i) for i in ids])


# --------------------------------------------------------------------------- the encoder

def test_one_image_then_text_equals_kosmos2_processor(processor, encoder):
    image = PILImage.new("RGB", (SIZE, SIZE), (10, 200, 30))
    for text in ("a red square left of the blue circle", "<grounding><phrase> a red square</phrase><object>"
                 "<patch_index_0001><patch_index_0100></object> left of the blue circle"):
        reference = processor(images=image, text=text, num_image_tokens=SLOTS, return_tensors="pt")
        pixels, _ = encoder.pixels(image)
        segments = [Image(pixels), Text(text)]
        if text.startswith("<grounding>"):
            segments = [Image(pixels), Text("<grounding>", train=False), Text(text[len("<grounding>"):])]
        row = encoder.encode(segments)
        ids = reference["input_ids"][0].tolist() + [processor.tokenizer.eos_token_id]
        assert row["input_ids"].tolist() == ids
        assert row["image_embeds_position_mask"].tolist() == reference["image_embeds_position_mask"][0].tolist() + [0]
        assert torch.equal(row["pixel_values"][0], reference["pixel_values"][0])
        prompt = 1 + SLOTS + 2 + int(text.startswith("<grounding>"))
        assert (row["labels"][:prompt] == IGNORE).all() and row["labels"][prompt:].tolist() == ids[prompt:]


def test_several_images_and_text_only_rows(processor, encoder):
    red, blue = (encoder.pixels(PILImage.new("RGB", (8, 8), c))[0] for c in ((255, 0, 0), (0, 0, 255)))
    row = encoder.encode([Text("a red square"), Image(red), Text("left of"), Image(blue), Text("the blue circle")])
    toks = tokens(processor, row["input_ids"])
    boi = [i for i, t in enumerate(toks) if t == "<image>"]
    assert len(boi) == 2 and row["pixel_values"].shape == (2, 3, SIZE, SIZE)
    mask, labels = row["image_embeds_position_mask"], row["labels"]
    for start in boi:  # <image> slots </image>: slots marked, no target anywhere in the image
        assert mask[start:start + SLOTS + 2].tolist() == [0] + [1] * SLOTS + [0]
        assert (labels[start:start + SLOTS + 2] == IGNORE).all()
    assert int(mask.sum()) == 2 * SLOTS and toks[0] == "<s>" and toks[-1] == "</s>"
    text_positions = [i for i in range(1, len(toks)) if mask[i] == 0 and toks[i] not in ("<image>", "</image>")]
    assert all(labels[i] == row["input_ids"][i] for i in text_positions)
    text_only = encoder.encode([Text("dogs run in a field")])
    assert text_only["pixel_values"].shape[0] == 0 and int(text_only["image_embeds_position_mask"].sum()) == 0
    batch = collate([row, text_only], encoder.pad)
    assert batch["image_counts"] == [2, 0] and batch["pixel_values"].shape[0] == 2
    assert (batch["labels"][1, text_only["input_ids"].numel():] == IGNORE).all()
    # a cut never lands inside an image: the image that does not fit is dropped whole, </s> kept
    cut = encoder.encode([Text("a red square"), Image(red)], max_tokens=6)
    assert int(cut["image_embeds_position_mask"].sum()) == 0 and tokens(processor, cut["input_ids"])[-1] == "</s>"


def test_model_writes_each_rows_images_in_order_and_runs_text_only_rows(processor, encoder):
    from kosmos.modeling import MixtureStep
    from kosmos.presets import PRESETS, build_model

    model = build_model(PRESETS["tiny"], len(processor.tokenizer), connector="resampler").eval()
    slots, side = model.config.latent_query_num, model.config.vision_config.image_size
    enc = SequenceEncoder(build_processor(processor.tokenizer, side), slots, side)
    red, blue = (enc.pixels(PILImage.new("RGB", (8, 8), c))[0] for c in ((255, 0, 0), (0, 0, 255)))
    ab = enc.encode([Text("a"), Image(red), Text("b"), Image(blue), Text("c")])
    ba = enc.encode([Text("a"), Image(blue), Text("b"), Image(red), Text("c")])
    text = enc.encode([Text("dogs run")])
    with torch.no_grad():
        logits = MixtureStep(model)([collate([ab, ba], enc.pad), collate([text], enc.pad)])
    first = 2  # <s> a: identical before the first image, different after it
    assert torch.allclose(logits[0][0, :first], logits[0][1, :first])
    assert not torch.allclose(logits[0][0, -1], logits[0][1, -1])
    with torch.no_grad():  # the same row alone gives the same logits as in the batch of two
        alone = MixtureStep(model)([collate([ab], enc.pad)])[0]
    assert torch.allclose(alone[0], logits[0][0, :alone.size(1)], atol=1e-5)
    assert logits[1].shape[:2] == (1, text["input_ids"].numel())


def test_training_reads_logits_at_the_targets_only_and_gets_the_same_losses(processor, encoder):
    from kosmos.modeling import MixtureStep, next_token_targets
    from kosmos.presets import PRESETS, build_model
    from kosmos.train.losses import location_soft_targets, location_token_mask, sequence_losses, target_losses

    torch.manual_seed(0)
    model = build_model(PRESETS["tiny"], len(processor.tokenizer)).eval()
    slots, side = model.config.latent_query_num, model.config.vision_config.image_size
    enc = SequenceEncoder(build_processor(processor.tokenizer, side), slots, side)
    red = enc.pixels(PILImage.new("RGB", (8, 8), (255, 0, 0)))[0]
    linked = "<phrase>a red square</phrase><object><patch_index_0001><patch_index_0066></object>"
    grounded = collate([enc.encode([Image(red), Text(linked)]), enc.encode([Text("dogs run far")])], enc.pad)
    lookup = location_token_mask(processor.tokenizer)
    soft = location_soft_targets(processor.tokenizer, 1.5)
    with torch.no_grad():
        full = MixtureStep(model)([grounded])[0]
        at_targets = MixtureStep(model, targets_only=True)([grounded])[0]
    where, targets = next_token_targets(grounded["labels"])
    # one row per target, none for the image slots, prompt and padding
    assert at_targets.shape == (int(where.sum()), full.size(-1)) and targets.numel() == at_targets.size(0)
    assert at_targets.size(0) <= full.size(0) * full.size(1) - slots  # the image row's slots at least are left out
    assert torch.allclose(at_targets, full[:, :-1][where], atol=1e-5)
    everywhere = sequence_losses(full, grounded["labels"], lookup, 10.0, soft)
    selected = target_losses(at_targets, targets, lookup, 10.0, soft)
    assert int(selected.loc_n) == 2
    for name in ("objective", "weighted_sum", "loss_sum", "loc_sum", "loc_correct", "loc_n", "n"):
        assert float(getattr(selected, name)) == pytest.approx(float(getattr(everywhere, name)), rel=1e-5)


# --------------------------------------------------------------------------- text corpora

def write_corpus(tmp_path):
    docs = [{"text": "a red square\nleft of the blue circle", "id": 1}, {"text": "dogs run\n\nin a field", "id": 2}]
    lines = "".join(json.dumps(d) + "\n" for d in docs)
    (tmp_path / "c.jsonl").write_text(lines)
    with gzip.open(tmp_path / "c.jsonl.gz", "wt") as handle:
        handle.write(lines)
    import zstandard
    (tmp_path / "c.jsonl.zst").write_bytes(zstandard.ZstdCompressor().compress(lines.encode()))
    pq.write_table(pa.table({"body": [d["text"] for d in docs]}), tmp_path / "c.parquet")
    (tmp_path / "c.txt").write_text("a red square\nleft of the blue circle\n\ndogs run\nin a field\n")
    return docs


def test_text_formats_read_the_same_documents_streamed(tmp_path, encoder):
    write_corpus(tmp_path)
    expected = [["a red square", "left of the blue circle"], ["dogs run", "in a field"]]
    for name, options in (("c.jsonl", {}), ("c.jsonl.gz", {}), ("c.jsonl.zst", {}), ("c.txt", {}),
                          ("c.parquet", {"text_column": "body"})):
        src = source("text", [tmp_path / name], encoder, **options)
        docs = [raw["text"] for path in src.list_files() for raw in src.read(path, {})]
        assert [[l for l in d.split("\n") if l] for d in docs] == expected, name
    with pytest.raises(SourceError, match="no column.*'text'"):
        list(source("text", [tmp_path / "c.parquet"], encoder).read(str(tmp_path / "c.parquet"), {}))


def test_full_sentence_packing(tmp_path, processor, encoder):
    write_corpus(tmp_path)
    line_ids = {line: encoder.text_ids(line) for line in ("a red square", "left of the blue circle", "dogs run", "in a field")}
    src = source("text", [tmp_path / "c.jsonl"], encoder, sequence_length=12)
    rows = rows_of(src)
    assert all(r["input_ids"].numel() <= 12 for r in rows)
    flat = [tokens(processor, r["input_ids"]) for r in rows]
    assert all(r[0] == "<s>" for r in flat)
    # every line whole, followed by </line>; </s> right after a document's last line; <s> never a target
    joined = [t for r in flat for t in r[1:]]
    expected = []
    for doc in (("a red square", "left of the blue circle"), ("dogs run", "in a field")):
        for i, line in enumerate(doc):
            expected += tokens(processor, line_ids[line]) + ["</line>"] + (["</s>"] if i == len(doc) - 1 else [])
    assert joined == expected
    for row in rows:
        assert row["labels"][0] == IGNORE and row["labels"][1:].tolist() == row["input_ids"][1:].tolist()
    ends = [r[-1] for r in flat]
    assert all(e in ("</line>", "</s>") for e in ends)  # a row ends after a whole line
    # a line longer than a whole row is cut to fit
    (tmp_path / "long.jsonl").write_text(json.dumps({"text": " ".join(["red"] * 40)}) + "\n")
    long_rows = rows_of(source("text", [tmp_path / "long.jsonl"], encoder, sequence_length=10))
    assert len(long_rows) == 1 and tokens(processor, long_rows[0]["input_ids"])[-2:] == ["</line>", "</s>"]
    assert long_rows[0]["input_ids"].numel() == 10


def test_bad_text_input_is_counted(tmp_path, encoder):
    huge = json.dumps({"text": "red " * 5000})  # over max_document_bytes: skipped unread
    (tmp_path / "bad.jsonl").write_text("{not json\n" + json.dumps({"text": ""}) + "\n" + huge + "\n"
                                        + json.dumps({"text": "a red square"}) + "\n")
    src = source("text", [tmp_path / "bad.jsonl"], encoder, max_document_bytes=1000, sequence_length=16)
    stream = SourceStream(src, batch_size=1, shuffle=0)
    batch = next(iter(stream))
    skipped = batch["reader_state"]["skipped"]  # counted once per epoch read (the packer looks one line ahead)
    assert set(skipped) == {"bad_json", "empty_text", "document_too_large"} and len(set(skipped.values())) == 1
    assert tokens(encoder.processor, batch["input_ids"][0])[-2:] == ["</line>", "</s>"]


# --------------------------------------------------------------------------- interleaved documents

def mmc4_document():
    return {"url": "https://example.com/page", "text_list": ["a red square", "left of the blue circle", "dogs run"],
            "image_info": [
                {"image_name": "red.jpg", "raw_url": "https://x/red.jpg", "matched_text_index": 0, "matched_sim": 0.31},
                {"image_name": "blue.jpg", "raw_url": "https://x/blue.jpg", "matched_text_index": 1, "matched_sim": 0.28},
                {"image_name": "low.jpg", "raw_url": "https://x/low.jpg", "matched_text_index": 2, "matched_sim": 0.1},
                {"image_name": "red.jpg", "raw_url": "https://x/r2.jpg", "matched_text_index": 7, "matched_sim": 0.5},
                {"image_name": "red.jpg", "raw_url": "https://x/r3.jpg", "matched_text_index": 2, "matched_sim": math.nan},
                {"image_name": "gone.jpg", "raw_url": "https://x/gone.jpg", "matched_text_index": 2, "matched_sim": 0.9}]}


def test_mmc4_places_images_before_their_sentence_and_counts_problems(tmp_path, processor, encoder):
    images = tmp_path / "images"
    images.mkdir()
    (images / "red.jpg").write_bytes(jpeg((255, 0, 0)))
    (images / "blue.jpg").write_bytes(jpeg((0, 0, 255)))
    (images / "low.jpg").write_bytes(jpeg())
    (tmp_path / "docs.jsonl").write_text(json.dumps(mmc4_document()) + "\n")
    src = source("interleaved", [tmp_path / "docs.jsonl"], encoder, images_from=str(images))
    counters = {}
    raw = next(iter(src.read(str(tmp_path / "docs.jsonl"), counters)))
    [row] = src.units(raw, 0, counters)
    toks = tokens(processor, row["input_ids"])
    trained = [t for t, label in zip(toks, row["labels"].tolist()) if label != IGNORE and t != "</s>"]
    assert "".join(trained).replace("▁", " ").split() == "a red square left of the blue circle dogs run".split()
    assert toks[1] == "<image>" and toks.count("<image>") == 2 and toks[-1] == "</s>"
    second = [i for i, t in enumerate(toks) if t == "<image>"][1]
    assert "".join(toks[second + SLOTS + 2:second + SLOTS + 4]).replace("▁", " ").strip().startswith("left")
    assert torch.allclose(row["pixel_values"][0], encoder.pixels(PILImage.open(images / "red.jpg").convert("RGB"))[0])
    assert counters == {"below_similarity": 1, "bad_match_index": 1, "bad_similarity": 1, "missing_image": 1}


def test_mmc4_images_from_img2dataset_shards(tmp_path, encoder):
    shard = tmp_path / "shards" / "00000.tar"
    shard.parent.mkdir()
    with tarfile.open(shard, "w") as archive:
        for key, name in (("000000000", "red.jpg"), ("000000001", "blue.jpg")):
            for member, data in ((f"{key}.jpg", jpeg()), (f"{key}.json", json.dumps(
                    {"key": key, "image_name": name, "url": f"https://x/{name}", "status": "success"}).encode())):
                info = tarfile.TarInfo(member)
                info.size = len(data)
                archive.addfile(info, io.BytesIO(data))
    doc = mmc4_document()
    doc["image_info"] = doc["image_info"][:2]
    (tmp_path / "docs.jsonl").write_text(json.dumps(doc) + "\n")
    src = source("interleaved", [tmp_path / "docs.jsonl"], encoder, images_from=str(tmp_path / "shards"))
    counters = {}
    [row] = src.units(next(iter(src.read(str(tmp_path / "docs.jsonl"), counters))), 0, counters)
    assert row["pixel_values"].shape[0] == 2 and counters == {}


def test_obelics_parquet_and_webdataset_documents(tmp_path, encoder):
    image_type = pa.list_(pa.struct([("bytes", pa.binary()), ("path", pa.string())]))
    texts = [[None, "a red square. left of the blue circle.", None, "dogs run"], ["a red square", None]]
    images = [[{"bytes": jpeg(), "path": None}, None, {"bytes": jpeg(), "path": None}, None],
              [None, {"bytes": jpeg(), "path": None}, None]]  # second: unequal lengths
    pq.write_table(pa.table({"texts": pa.array(texts, pa.list_(pa.string())), "images": pa.array(images, image_type)}),
                   tmp_path / "obelics.parquet")
    with tarfile.open(tmp_path / "docs.tar", "w") as archive:
        for member, data in (("doc0.json", json.dumps({"texts": ["dogs run", None], "images": [None, "img0.jpg"]}).encode()),
                             ("doc0.img0.jpg", jpeg())):
            info = tarfile.TarInfo(member)
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
    src = source("interleaved", [tmp_path / "obelics.parquet", tmp_path / "docs.tar"], encoder)
    stream = SourceStream(src, batch_size=2, shuffle=0, files=[str(tmp_path / "obelics.parquet"), str(tmp_path / "docs.tar")])
    batch = next(iter(stream))
    assert batch["image_counts"] == [2, 1]
    assert batch["reader_state"]["skipped"] == {"bad_document": 1}


def test_long_documents_become_several_rows_of_at_most_max_images(tmp_path, processor, encoder):
    sentences = [f"dogs run {i}." for i in range(7)]
    texts, images = [], []
    for s in sentences:
        texts += [None, s]
        images += [{"bytes": jpeg(), "path": None}, None]
    pq.write_table(pa.table({"texts": [texts], "images": [images]}), tmp_path / "doc.parquet")
    src = source("interleaved", [tmp_path / "doc.parquet"], encoder, max_images_per_sequence=5, sequence_length=200)
    rows = src.units(next(iter(src.read(str(tmp_path / "doc.parquet"), {}))), 0, {})
    assert [r["pixel_values"].shape[0] for r in rows] == [5, 2]
    assert [tokens(processor, r["input_ids"])[-1] for r in rows][-1] == "</s>"
    assert tokens(processor, rows[0]["input_ids"])[-1] != "</s>"  # the document goes on in the next row
    for row in rows:  # slot blocks whole
        assert int(row["image_embeds_position_mask"].sum()) == SLOTS * row["pixel_values"].shape[0]
    short = source("interleaved", [tmp_path / "doc.parquet"], encoder, sequence_length=40)
    rows = short.units(next(iter(short.read(str(tmp_path / "doc.parquet"), {}))), 0, {})
    assert all(r["input_ids"].numel() <= 40 for r in rows) and sum(r["pixel_values"].shape[0] for r in rows) == 7


# --------------------------------------------------------------------------- the mixer

def test_parse_mix_and_paper_proportions():
    specs = parse_mix(["grounded=a,b:16", "text=s3://bucket/corpus", "interleaved=x:2"])
    assert [(s.kind, s.paths, s.batch_size) for s in specs] == [
        ("grounded", ["a", "b"], 16), ("text", ["s3://bucket/corpus"], None), ("interleaved", ["x"], 2)]
    assert [s.batch_size for s in default_batch_sizes(specs, 16)] == [16, 1, 2]
    big = default_batch_sizes(parse_mix(["captions=c", "text=t", "interleaved=i"]), 1117)
    assert [s.batch_size for s in big] == [1117, 93, 47]
    from kosmos.presets import PRESETS

    tiny = PRESETS["tiny"].mixture_shares
    small = default_batch_sizes(parse_mix(["grounded=g", "captions=c", "text=t", "interleaved=i"]), 16, tiny)
    assert [s.batch_size for s in small] == [16, 4, 1, 1] and PRESETS["paper"].mixture_shares is None
    no_grit = default_batch_sizes(parse_mix(["captions=c", "text=t", "interleaved=i"]), 16, tiny)
    assert [s.batch_size for s in no_grit] == [16, 5, 3]  # the largest share present gets --batch-size
    alone = default_batch_sizes(parse_mix(["interleaved=i"]), 16)  # a source alone gets --batch-size
    assert [s.batch_size for s in alone] == [16]
    kosmos1 = default_batch_sizes(parse_mix(["text=t", "interleaved=i"]), 93)
    assert [s.batch_size for s in kosmos1] == [93, 47]
    for bad, message in ((["pictures=x"], "unknown source kind"), (["grounded"], "KIND=PATHS"),
                         (["text=a:0"], "at least 1"), (["text=a", "text=b"], "given twice"),
                         (["text=:5"], "no path given")):
        with pytest.raises(SourceError, match=message):
            parse_mix(bad)


@pytest.fixture
def mixture_files(tmp_path):
    from kosmos.toydata import write_toy_shards

    write_toy_shards(tmp_path / "grit", num_shards=2, per_shard=6)
    write_corpus(tmp_path / "text" if (tmp_path / "text").mkdir() is None else tmp_path)
    texts = [[None, f"a red square {i}.", None, "dogs run."] for i in range(6)]
    images = [[{"bytes": jpeg(), "path": None}, None, {"bytes": jpeg(), "path": None}, None] for _ in range(6)]
    image_type = pa.list_(pa.struct([("bytes", pa.binary()), ("path", pa.string())]))
    pq.write_table(pa.table({"texts": pa.array(texts, pa.list_(pa.string())), "images": pa.array(images, image_type)}),
                   tmp_path / "docs.parquet")
    return tmp_path


def test_every_step_draws_each_source_with_its_batch_size_and_resumes_exactly(mixture_files, encoder):
    specs = parse_mix([f"grounded={mixture_files / 'grit'}:3", f"text={mixture_files / 'text' / 'c.jsonl'}:2",
                       f"interleaved={mixture_files / 'docs.parquet'}:1"])
    config = DataConfig(image_size=SIZE, num_image_tokens=SLOTS, shuffle_buffer=4, sequence_length=64)

    def signature(batches):
        return {k: (b["keys"], b["input_ids"].tolist(), b["image_counts"]) for k, b in batches.items()}

    mixture = Mixture(specs, encoder, config)
    steps = [mixture.next_step() for _ in range(5)]
    for batches in steps:
        assert list(batches) == ["grounded", "text", "interleaved"]
        assert [b["input_ids"].size(0) for b in batches.values()] == [3, 2, 1]
        assert batches["grounded"]["image_counts"] == [1, 1, 1] and batches["text"]["image_counts"] == [0, 0]
        assert batches["interleaved"]["image_counts"] == [2]
    resumed = Mixture(specs, encoder, config)
    for _ in range(2):
        resumed.next_step()
    again = Mixture(specs, encoder, config, state=resumed.state())
    assert [signature(again.next_step()) for _ in range(3)] == [signature(s) for s in steps[2:]]


@pytest.mark.parametrize("files", [4, 2])  # as many files as readers (split by file), fewer (split by document)
def test_ranks_and_loader_workers_read_disjoint_shares_that_cover_every_document(tmp_path, encoder, files):
    for f in range(files):
        (tmp_path / f"t{f}.jsonl").write_text("".join(
            json.dumps({"text": f"dogs run {f} {i}"}) + "\n" for i in range(6)))
        texts = [[f"a red square {f} {i}.", None] for i in range(3)]
        images = [[None, {"bytes": jpeg(), "path": None}] for _ in range(3)]
        image_type = pa.list_(pa.struct([("bytes", pa.binary()), ("path", pa.string())]))
        pq.write_table(pa.table({"texts": pa.array(texts, pa.list_(pa.string())),
                                 "images": pa.array(images, image_type)}), tmp_path / f"d{f}.parquet")
    for kind, pattern in (("text", "t*.jsonl"), ("interleaved", "d*.parquet")):
        src = source(kind, sorted(tmp_path.glob(pattern)), encoder)
        shares = []
        for rank in (0, 1):  # 2 ranks x 2 loader workers = 4 readers
            stream = SourceStream(src, batch_size=1, rank=rank, world_size=2, num_workers=2, seed=3)
            for reader in (0, 1):
                slot, slots = rank * 2 + reader, 4
                first_epoch = []
                for epoch, raw in stream.raw_stream(slot, slots, {}):
                    if epoch:
                        break
                    first_epoch.append(json.dumps(raw, sort_keys=True, default=repr))
                shares.append(first_epoch)
        everything = [d for share in shares for d in share]
        assert all(shares) and len(everything) == len(set(everything)) == (6 if kind == "text" else 3) * files, kind


def test_unusable_sources_are_one_line_errors_before_training(mixture_files, tmp_path, encoder):
    from kosmos.mix import check_sources

    config = DataConfig()
    with pytest.raises(SourceError, match="no file or directory"):
        check_sources(parse_mix([f"text={tmp_path / 'missing.jsonl'}"]), config)
    (tmp_path / "empty").mkdir()
    with pytest.raises(SourceError, match="no text corpus files"):
        check_sources(parse_mix([f"text={tmp_path / 'empty'}"]), config)
    (tmp_path / "blank.jsonl").write_text("")
    with pytest.raises(SourceError, match="nothing readable"):
        check_sources(parse_mix([f"text={tmp_path / 'blank.jsonl'}"]), config)
    with pytest.raises(SourceError, match="--images-from"):
        (tmp_path / "m.jsonl").write_text(json.dumps(mmc4_document()) + "\n")
        check_sources(parse_mix([f"interleaved={tmp_path / 'm.jsonl'}"]), config)
    # raw image-caption shards given as GRIT data: refused with the way out
    from grit_pipeline.synth.writer import write_synthetic_world

    write_synthetic_world(tmp_path / "raw", 4, shard_size=4, level=1)
    with pytest.raises(SourceError, match="captions="):
        check_sources(parse_mix([f"grounded={tmp_path / 'raw'}"]), config)
    check_sources(parse_mix([f"captions={tmp_path / 'raw'}"]), config)  # as captions they are fine


def test_kosmos_train_cli_refusals_are_one_line_and_touch_nothing(mixture_files, tmp_path, capsys):
    from kosmos.cli import main

    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    (run / "train_log.jsonl").write_text('{"step": 1}\n')
    (run / "notes.txt").write_text("mine")
    base = ["train", "--data", str(mixture_files / "grit"), "--output", str(run), "--steps", "1", "--threads", "1"]
    assert main(base) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "already holds a run" in err[0] and "--overwrite" in err[0]
    assert (run / "train_log.jsonl").read_text() == '{"step": 1}\n' and (run / "checkpoints").is_dir()
    assert main(["train", "--mix", f"text={tmp_path / 'nowhere'}", "--output", str(tmp_path / "r2")]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "nowhere" in err[0] and not (tmp_path / "r2").exists()
    for flags, message in ((["--max-images-per-sequence", "0"], "--max-images-per-sequence must be an integer >= 1"),
                           (["--mmc4-min-similarity", "nan"], "--mmc4-min-similarity must be a finite number"),
                           (["--flip-prob", "2"], "--flip-prob must be at least 0 and at most 1, got 2.0")):
        assert main(base + ["--overwrite"] + flags) == 1
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and message in err[0]
    assert main(base + ["--overwrite", "--loader-workers", "0"]) == 0
    assert (run / "notes.txt").read_text() == "mine" and len((run / "train_log.jsonl").read_text().splitlines()) == 1
