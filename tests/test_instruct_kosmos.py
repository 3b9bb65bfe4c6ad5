"""Instruction sources (LLaVA-Instruct, Unnatural Instructions, FLAN, `grit instruct` output) on hand-made files
with the real field names; loss masks of a multi-turn sample; --exclude-images; the instruct recipe; the
conversation template shared with generation."""
from __future__ import annotations

import gzip
import io
import json

import pytest
import torch
from PIL import Image as PILImage

from kosmos.conversation import conversation_segments, prompt_segments, turns_of
from kosmos.sequence import IGNORE, Text
from kosmos.sources import SOURCES, SourceError
from kosmos.tokenizer import build_processor
from kosmos_sources_helpers import SIZE, SLOTS, encoder_of, jpeg, word_processor
from kosmos_sources_helpers import source as shared_source

torch.set_num_threads(1)
WORDS = ("Question: Answer: User: Assistant: question answer what is the colour of a red square blue ball it describe this object yes no "
         "write a sentence about dogs translate to french chien user assistant").split()



def source(kind, paths, encoder, **options):
    return shared_source(kind, paths, encoder, **{"sequence_length": 256, **options})


@pytest.fixture(scope="module")
def processor():
    return word_processor(WORDS, 160)


@pytest.fixture(scope="module")
def encoder(processor):
    return encoder_of(processor)




def rows_and_counters(src):
    rows, counters = [], {}
    for path in src.list_files():
        for raw in src.read(path, counters):
            try:
                rows += src.units(raw, 0, counters)
            except Exception as error:  # noqa: BLE001 - SampleError: what the stream counts
                counters[error.reason] = counters.get(error.reason, 0) + 1
    return rows, counters


def targets(processor, row) -> str:
    """The trained tokens of a row, decoded (what the loss sees)."""
    ids = [int(i) for i, label in zip(row["input_ids"], row["labels"]) if label != IGNORE]
    return processor.tokenizer.decode(ids)


def test_registered_kinds():
    assert {"llava", "unnatural", "flan", "grit_instruct"} <= set(SOURCES)


def test_loss_masks_of_a_hand_built_multi_turn_sample(processor, encoder):
    """Human turns, role words, the image and <s> are -100; every answer token and </s> are targets."""
    turns = [("what is the colour of a red square", "red"), ("describe this object", "a blue ball")]
    pixels, _ = encoder.pixels(PILImage.new("RGB", (SIZE, SIZE)))
    row = encoder.encode(conversation_segments(turns, "qa", pixels))
    tok = processor.tokenizer
    # the whole sequence, exactly as the template writes it
    text_ids = row["input_ids"][1 + SLOTS + 2:].tolist()
    assert tok.decode(text_ids) == ("Question: what is the colour of a red square Answer: red Question: describe "
                                    "this object Answer: a blue ball</s>")
    labels = row["labels"].tolist()
    assert labels[: 1 + SLOTS + 2] == [IGNORE] * (1 + SLOTS + 2)  # <s> <image> slots </image>
    answer_ids = [encoder.text_ids(" red"), encoder.text_ids(" a blue ball")]
    trained = [int(i) for i, label in zip(row["input_ids"], labels) if label != IGNORE]
    assert trained == answer_ids[0] + answer_ids[1] + [tok.eos_token_id]
    # each trained position holds its own id (labels are the ids, not shifted)
    assert all(label in (IGNORE, i) for i, label in zip(row["input_ids"].tolist(), labels))
    # grounded turns: <grounding> after the image, an input only; markup joined without a space
    grounded = [("<phrase>a red square</phrase>", "<object><patch_index_0001><patch_index_0100></object>")]
    segments = conversation_segments(grounded, "qa", pixels)
    assert segments[1] == Text("<grounding>", train=False)
    assert segments[2] == Text("Question:<phrase>a red square</phrase> Answer:", train=False)
    assert segments[3] == Text("<object><patch_index_0001><patch_index_0100></object>")


def test_generation_prompt_is_the_training_prefix(encoder):
    """`kosmos chat` prompts with the same template: the prompt of answer n is the training row up to it."""
    turns = [("what is the colour of a red square", "red"), ("describe this object", "a blue ball")]
    pixels, _ = encoder.pixels(PILImage.new("RGB", (SIZE, SIZE)))
    full = encoder.encode(conversation_segments(turns, "chat", pixels, grounding=False))["input_ids"].tolist()
    prompt = encoder.encode(prompt_segments(turns[:1], turns[1][0], "chat", pixels, grounding=False),
                            add_eos=False)["input_ids"].tolist()
    assert full[:len(prompt)] == prompt and len(full) > len(prompt)


def test_llava_instruct_with_coco_train2014_folder_and_exclude_images(tmp_path, processor, encoder):
    images = tmp_path / "coco" / "train2014"
    images.mkdir(parents=True)
    for n, colour in ((33471, (200, 0, 0)), (52846, (0, 200, 0)), (99, (0, 0, 200))):
        (images / f"COCO_train2014_{n:012d}.jpg").write_bytes(jpeg(colour))
    data = [
        {"id": "000000033471", "image": "000000033471.jpg", "conversations": [
            {"from": "human", "value": "<image>\nwhat is the colour of a red square?"},
            {"from": "gpt", "value": "red"},
            {"from": "human", "value": "describe this object"},
            {"from": "gpt", "value": "a red square"}]},
        {"id": "000000052846", "image": "000000052846.jpg", "conversations": [
            {"from": "human", "value": "what is the colour?\n<image>"}, {"from": "gpt", "value": "green"}]},
        {"id": "000000000099", "image": "COCO_train2014_000000000099.jpg", "conversations": [
            {"from": "human", "value": "<image>\nyes?"}, {"from": "gpt", "value": "no"}]},
        {"id": "broken", "image": "000000033471.jpg", "conversations": [{"from": "human", "value": "no answer"}]},
    ]
    path = tmp_path / "llava_instruct_150k.json"
    path.write_text(json.dumps(data))
    src = source("llava", [path], encoder, llava_images=str(tmp_path / "coco"))
    src.check()
    rows, counters = rows_and_counters(src)
    assert [r["key"] for r in rows] == ["000000033471", "000000052846", "000000000099"]
    assert counters == {"bad_conversation": 1}
    assert all(r["pixel_values"].shape[0] == 1 for r in rows)
    assert targets(processor, rows[0]) == "red a red square</s>"
    # --exclude-images: a RefCOCO-style MDETR json naming train2014 files, and a plain list of names
    mdetr = tmp_path / "finetune_refcoco_val.json"
    mdetr.write_text(json.dumps({"images": [{"file_name": "COCO_train2014_000000033471.jpg", "id": 1}]}))
    rows, counters = rows_and_counters(source("llava", [path], encoder, llava_images=str(tmp_path / "coco"),
                                              exclude_images=str(mdetr)))
    assert [r["key"] for r in rows] == ["000000052846", "000000000099"] and counters["excluded_image"] == 2
    listed = tmp_path / "exclude.txt"
    listed.write_text("000000052846.jpg\nCOCO_train2014_000000000099.jpg\n")
    rows, _ = rows_and_counters(source("llava", [path], encoder, llava_images=str(tmp_path / "coco"),
                                       exclude_images=str(listed)))
    assert [r["key"] for r in rows] == ["000000033471"]
    with pytest.raises(SourceError, match="not found under"):
        source("llava", [path], encoder, llava_images=str(tmp_path)).check()


def test_unnatural_instructions_and_flan_jsonl(tmp_path, processor, encoder):
    unnatural = tmp_path / "core_data.jsonl.gz"
    with gzip.open(unnatural, "wt") as handle:
        handle.write(json.dumps({
            "instruction": "write a sentence about dogs",
            "instances": [{"instruction_with_input": "write a sentence about dogs", "input": "",
                           "constraints": "None.", "output": "dogs run"}],
            "reformulations": [{"instruction": "translate to french", "instruction_with_input": "translate to "
                                "french: dog", "input": "dog", "output": "chien"}]}) + "\n")
        handle.write("not json\n")
    rows, counters = rows_and_counters(source("unnatural", [unnatural], encoder))
    assert len(rows) == 2 and counters == {"bad_json": 1}
    assert all(r["pixel_values"].shape[0] == 0 for r in rows)
    assert targets(processor, rows[0]) == "dogs run</s>" and targets(processor, rows[1]) == "chien</s>"
    flan = tmp_path / "flan.jsonl"
    flan.write_text(json.dumps({"inputs": "translate to french: dog", "targets": "chien"}) + "\n"
                    + json.dumps({"inputs": "a <phrase>spelt</phrase> tag", "targets": "no"}) + "\n"
                    + json.dumps({"inputs": "", "targets": "x"}) + "\n")
    rows, counters = rows_and_counters(source("flan", [flan], encoder))
    assert len(rows) == 1 and targets(processor, rows[0]) == "chien</s>"
    assert counters == {"caption_markup": 1, "bad_instruction": 1}


def test_grit_instruct_output_as_a_source(tmp_path, processor, encoder):
    from grit_pipeline.instruct_build import InstructConfig, run_instruct
    from tests.test_instruct import clean_build

    build = clean_build(tmp_path / "build", shards=1, per_shard=3)
    for fmt in ("hf", "paper"):
        run_instruct(InstructConfig(input=str(build), output=str(tmp_path / fmt), engine="local", progress=False,
                                    text_format=fmt))
    src = source("grit_instruct", [tmp_path / "hf"], encoder)
    src.check()
    rows, counters = rows_and_counters(src)
    assert len(rows) == 3 and not counters
    tok = processor.tokenizer
    text = tok.decode(rows[0]["input_ids"][1 + SLOTS + 2:])
    assert text.startswith("<grounding>") and "Question:<phrase>" in text and "</phrase> Answer:" in text
    trained = targets(processor, rows[0])
    assert "<object>" in trained and "<phrase>" not in trained and "Question" not in trained
    with pytest.raises(SourceError, match="paper spelling"):
        source("grit_instruct", [tmp_path / "paper"], encoder).check()


def test_turns_of_reads_llava_roles_and_refuses_broken_ones():
    assert turns_of([{"from": "human", "value": "<image>\nhi"}, {"from": "gpt", "value": "yes"}]) == [("hi", "yes")]
    assert turns_of([{"from": "system", "value": "be nice"}, {"from": "user", "value": "q"},
                     {"from": "assistant", "value": "a"}]) == [("q", "a")]
    for bad in ([], [{"from": "gpt", "value": "a"}, {"from": "human", "value": "q"}], [{"from": "human", "value": "q"}],
                [{"from": "human", "value": "q"}, {"from": "gpt", "value": " "}], "text"):
        with pytest.raises(ValueError):
            turns_of(bad)


def test_instruct_recipe_defaults_and_table8_composition(tmp_path):
    from kosmos.train.config import TrainConfig, source_specs

    cfg = TrainConfig(output=str(tmp_path), recipe="instruct", init="model", preset="paper",
                      data=["grit/"], mix=["grit_instruct=gi/", "llava=l.json", "unnatural=u.jsonl", "flan=f.jsonl",
                                           "text=t.jsonl", "interleaved=i/"], batch_size=702).resolved()
    assert (cfg.steps, cfg.warmup_steps, cfg.lr) == (10_000, 375, 1e-5)
    sizes = {s.kind: s.batch_size for s in source_specs(cfg)}
    assert sizes == {"grounded": 702, "grit_instruct": 702, "llava": 351, "unnatural": 58, "flan": 58, "text": 30,
                     "interleaved": 15}
    tiny = TrainConfig(output=str(tmp_path), recipe="instruct", init="model", preset="tiny").resolved()
    assert (tiny.steps, tiny.lr) == (67, pytest.approx(5e-5)) and tiny.warmup_steps >= 1
    assert TrainConfig(output=str(tmp_path), recipe="instruct").number_problems() == [
        "--recipe instruct tunes a pretrained model: give it with --init MODEL"]


def test_kosmos_chat_answers_with_boxes_drawn(tmp_path, processor):
    """A session with a (random) tiny model runs end to end; an answer's phrases and boxes are read and drawn."""
    import argparse

    from kosmos.chat import draw_boxes, parse_answer, run
    from kosmos.presets import build_model, get_preset

    processor = build_processor(processor.tokenizer, image_size=get_preset("tiny").image_size)
    model = build_model(get_preset("tiny"), vocab_size=len(processor.tokenizer))
    model.save_pretrained(tmp_path / "model")
    processor.save_pretrained(tmp_path / "model")
    image = tmp_path / "scene.png"
    PILImage.new("RGB", (80, 60), (20, 120, 200)).save(image)
    out = io.StringIO()
    args = argparse.Namespace(model=str(tmp_path / "model"), image=str(image), question=["what is it", "describe"],
                              conversation_template="qa", no_grounding=False, max_new_tokens=4,
                              out=str(tmp_path / "pngs"), device="cpu")
    # one reply line per question (a random model's reply may be empty text)
    assert run(args, stdout=out) == 0 and len(out.getvalue().splitlines()) >= 2
    reply = parse_answer("<phrase> a red square</phrase><object><patch_index_0000><patch_index_0527></object> "
                         "left of<phrase> a ball</phrase><object><patch_index_0528><patch_index_1023></object>")
    assert reply.text == "a red square left of a ball"
    assert reply.entities == [("a red square", [(0.0156, 0.0156, 0.4844, 0.5156)]),
                              ("a ball", [(0.5156, 0.5156, 0.9844, 0.9844)])]
    png = draw_boxes(PILImage.new("RGB", (64, 64), (255, 255, 255)), reply.entities, tmp_path / "turn.png")
    drawn = PILImage.open(png)
    assert drawn.format == "PNG" and drawn.getpixel((0, 20)) == (230, 25, 75)  # the first box's left edge
