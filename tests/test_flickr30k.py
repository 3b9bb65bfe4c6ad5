"""Flickr30k Entities as truth: hand-made files in the official format -> spans, objects, absent, ignore."""
from __future__ import annotations

import io
import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

from grit_pipeline import flickr30k
from grit_pipeline.evaluate import evaluate_grounding, load_truth

# Image 100 (200 x 100 px): several entities per sentence, the same phrase text twice in one sentence
# ("a man", two different entities), a scene phrase, a nobndbox/notvisual phrase, an entity with two
# boxes, and one box shared by two entities (two <name> in one <object>).
SENTENCES_100 = (
    "[/EN#1/people a man] in [/EN#2/clothing a red hat] throws [/EN#3/other a frisbee] to "
    "[/EN#4/people a man] in [/EN#5/scene a park] .\n"
    "[/EN#6/animals Two dogs] run through [/EN#7/notvisual the air] near [/EN#1/people/other the man] .\n"
    "\n"
)
XML_100 = """<annotation>
<filename>100.jpg</filename>
<size><width>200</width><height>100</height><depth>3</depth></size>
<object><name>1</name><bndbox><xmin>1</xmin><ymin>1</ymin><xmax>50</xmax><ymax>100</ymax></bndbox></object>
<object><name>2</name><bndbox><xmin>11</xmin><ymin>1</ymin><xmax>40</xmax><ymax>20</ymax></bndbox></object>
<object><name>3</name><name>9</name><bndbox><xmin>101</xmin><ymin>41</ymin><xmax>120</xmax><ymax>60</ymax></bndbox></object>
<object><name>4</name><bndbox><xmin>151</xmin><ymin>1</ymin><xmax>200</xmax><ymax>100</ymax></bndbox></object>
<object><name>5</name><nobndbox>0</nobndbox><scene>1</scene></object>
<object><name>6</name><bndbox><xmin>61</xmin><ymin>51</ymin><xmax>80</xmax><ymax>70</ymax></bndbox></object>
<object><name>6</name><bndbox><xmin>81</xmin><ymin>51</ymin><xmax>100</xmax><ymax>70</ymax></bndbox></object>
<object><name>7</name><nobndbox>1</nobndbox><scene>0</scene></object>
</annotation>
"""
CAPTION_0 = "a man in a red hat throws a frisbee to a man in a park ."
CAPTION_1 = "Two dogs run through the air near the man ."


@pytest.fixture()
def entities(tmp_path):
    root = tmp_path / "flickr30k_entities"
    (root / "Sentences").mkdir(parents=True)
    (root / "Annotations").mkdir()
    (root / "Sentences" / "100.txt").write_text(SENTENCES_100)
    (root / "Annotations" / "100.xml").write_text(XML_100)
    (root / "test.txt").write_text("100\n")
    return root


def test_sentence_marks_become_spans_of_the_plain_sentence():
    sentence, phrases = flickr30k.parse_sentence(SENTENCES_100.splitlines()[0])
    assert sentence == CAPTION_0
    assert [sentence[p.start:p.end] for p in phrases] == ["a man", "a red hat", "a frisbee", "a man", "a park"]
    # the repeated phrase: two spans found by position, never by searching the text
    assert (phrases[0].start, phrases[0].end) == (0, 5) and (phrases[3].start, phrases[3].end) == (39, 44)
    assert [p.entity_id for p in phrases] == ["1", "2", "3", "4", "5"]
    assert phrases[4].types == ("scene",)
    _, second = flickr30k.parse_sentence(SENTENCES_100.splitlines()[1])
    assert second[2].types == ("people", "other")


def test_truth_objects_absent_and_ignore_exactly_as_documented(entities):
    lines = flickr30k.image_truth(entities, "100")
    assert [line["key"] for line in lines] == ["100_0", "100_1"]  # the empty line is not a sentence
    first, second = lines
    assert first["caption"] == CAPTION_0 and (first["width"], first["height"]) == (200, 100)
    spans = [(o["noun_chunk"], o["ref_exp"], o["box"]) for o in first["objects"]]
    assert spans == [
        ([0, 5], [0, 5], [0.0, 0.0, 0.25, 1.0]),           # 1-based inclusive pixels -> [(x-1)/W, .., x/W]
        ([9, 18], [9, 18], [0.05, 0.0, 0.2, 0.2]),
        ([26, 35], [26, 35], [0.5, 0.4, 0.6, 0.6]),         # a box shared by entities 3 and 9
        ([39, 44], [39, 44], [0.75, 0.0, 1.0, 1.0]),        # the second "a man": its own entity and box
    ]
    assert first["ignore"] == [[48, 54]] and first["absent"] == []          # scene, no box
    assert CAPTION_0[48:54] == "a park"
    # two boxes of one entity: two objects with the same span; notvisual/nobndbox: absent
    assert [(o["noun_chunk"], o["box"]) for o in second["objects"][:2]] == [
        ([0, 8], [0.3, 0.5, 0.4, 0.7]), ([0, 8], [0.4, 0.5, 0.5, 0.7])]
    assert second["absent"] == [[21, 28]] and CAPTION_1[21:28] == "the air"
    assert second["objects"][2]["noun_chunk"] == [34, 41] and second["objects"][2]["entity_id"] == "1"
    assert second["ignore"] == []


def test_nested_marks_are_refused_in_one_line(entities, capsys):
    (entities / "Sentences" / "100.txt").write_text(
        SENTENCES_100.splitlines()[0] + "\n[/EN#1/people a man with [/EN#2/clothing a hat] ] .\n")
    with pytest.raises(flickr30k.Flickr30kError) as caught:
        flickr30k.image_truth(entities, "100")
    message = str(caught.value)
    assert "100.txt:2:" in message and "nested phrase marks" in message and "\n" not in message
    from grit_pipeline.cli import main

    assert main(["evaluate-grounding", "--output", str(entities), "--truth", str(entities)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "nested phrase marks" in err and "Traceback" not in err


@pytest.mark.parametrize("line, problem", [
    ("[/EN#1/people a man in a park .", "never closed"),
    ("[/EN#/people a man] .", "no entity id"),
    ("[people a man] .", "malformed phrase mark"),
])
def test_broken_marks_are_refused(line, problem):
    with pytest.raises(ValueError, match=problem):
        flickr30k.parse_sentence(line)


def test_evaluate_grounding_reads_the_folder_as_truth(entities, tmp_path):
    build = tmp_path / "build"
    build.mkdir()
    item = lambda s, e, box, score: [s, e, *box, score]  # noqa: E731
    rows = [{"key": "100_0", "caption": CAPTION_0, "status": "grounded",
             "noun_chunks": [item(0, 5, [0.0, 0.0, 0.25, 1.0], 0.9),       # TP: the first man
                             item(39, 44, [0.0, 0.0, 0.25, 1.0], 0.8),     # second man, first man's box: wrong_box
                             item(48, 54, [0, 0, 1, 1], 0.7)],             # the park (scene): ignored
             "ref_exps": []},
            {"key": "100_1", "caption": CAPTION_1, "status": "grounded",
             "noun_chunks": [item(0, 8, [0.3, 0.5, 0.4, 0.7], 0.9),        # TP dog 1
                             item(0, 8, [0.4, 0.5, 0.5, 0.7], 0.85),       # TP dog 2
                             item(21, 28, [0.1, 0.1, 0.2, 0.2], 0.8)],     # "the air": absent_phrase
             "ref_exps": []}]
    pq.write_table(pa.Table.from_pylist(rows), build / "00000.parquet")
    result = evaluate_grounding(build, entities)
    nc = result["noun_chunks"]
    assert (nc["true_positives"], nc["predictions"], nc["truth_objects"]) == (3, 5, 7)
    assert nc["false_positives"]["wrong_box"] == 1 and nc["false_positives"]["absent_phrase"] == 1
    assert result["noun_chunks"]["ignored_predictions"] == 1
    assert evaluate_grounding(build, entities, split="test")["images"]["truth"] == 2
    with pytest.raises(ValueError, match="no val.txt"):
        load_truth(entities, split="val")


def test_converter_and_shards_run_through_the_pipeline(entities, tmp_path):
    from grit_pipeline.cli import main

    out = tmp_path / "truth.jsonl"
    assert main(["flickr30k", "truth", "--entities", str(entities), "--output", str(out)]) == 0
    assert load_truth(out) == load_truth(entities)

    images = tmp_path / "images"
    images.mkdir()
    buffer = io.BytesIO()
    Image.new("RGB", (200, 100), (120, 90, 60)).save(buffer, format="JPEG")
    (images / "100.jpg").write_bytes(buffer.getvalue())
    (entities / "Sentences" / "101.txt").write_text("[/EN#1/people A woman] .\n")
    (entities / "Annotations" / "101.xml").write_text(XML_100.replace("100.jpg", "101.jpg"))
    shards = tmp_path / "shards"
    summary = flickr30k.write_shards(entities, images, shards, shard_size=1)
    assert (summary["images"], summary["samples"], summary["shards"], summary["missing_images"]) == (1, 2, 2, 1)
    truth = load_truth(shards / "truth")
    assert sorted(truth) == ["100_0", "100_1"] and truth["100_0"]["caption"] == CAPTION_0

    from grit_pipeline.pipeline import PipelineConfig, run_pipeline

    build = tmp_path / "grit"
    run = run_pipeline(PipelineConfig(input=str(shards), output=str(build), detector="demo", engine="local",
                                      progress=False))
    assert run.samples == 2
    result = evaluate_grounding(build, shards / "truth")
    assert result["images"]["truth"] == 2 and result["images"]["missing_from_build"] == 0
    assert json.loads((shards / "00000_stats.json").read_text())["successes"] == 1
