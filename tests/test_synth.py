"""The synthetic world: img2dataset layout, determinism, truth offsets, caption variety."""
from __future__ import annotations

import io
import json
import random
import re

import pyarrow.parquet as pq
import pytest
from PIL import Image

from grit_pipeline.synth import make_sample, truth_record, write_synthetic_world
from grit_pipeline.synth.captions import make_caption
from grit_pipeline.synth.scene import MAX_SIDE, MIN_SIDE, random_scene
from grit_pipeline.synth.vocab import COLOURS, PLURAL, SHAPES
from grit_pipeline.synth.writer import IMG2DATASET_SCHEMA

JSON_KEYS = {"url", "caption", "key", "status", "error_message", "width", "height", "original_width",
             "original_height", "exif", "sha256"}


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    out = tmp_path_factory.mktemp("world")
    summary = write_synthetic_world(out, 23, seed=7, shard_size=10)
    return out, summary


def _files(root):
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_layout_is_img2dataset(world):
    out, summary = world
    assert summary["shards"] == 3
    names = sorted(p.name for p in out.iterdir() if p.is_file())
    assert names == [f"0000{i}{ext}" for i in range(3) for ext in (".parquet", ".tar", "_stats.json")]
    assert sorted(p.name for p in (out / "truth").iterdir()) == ["00000.jsonl", "00001.jsonl", "00002.jsonl"]
    stats = json.loads((out / "00002_stats.json").read_text())
    assert stats["count"] == stats["successes"] == 3 and stats["status_dict"] == {"success": 3}


def test_tar_readable_by_webdataset_and_consistent_with_parquet(world):
    import webdataset as wds

    out, _ = world
    total = 0
    for shard in range(3):
        name = f"{shard:05d}"
        samples = list(wds.WebDataset(str(out / f"{name}.tar"), shardshuffle=False))
        table = pq.read_table(out / f"{name}.parquet")
        assert table.schema.equals(IMG2DATASET_SCHEMA)
        rows = table.to_pylist()
        assert [s["__key__"] for s in samples] == [r["key"] for r in rows]
        truth = [json.loads(line) for line in (out / "truth" / f"{name}.jsonl").read_text().splitlines()]
        assert [t["key"] for t in truth] == [r["key"] for r in rows]
        for sample, row, t in zip(samples, rows, truth):
            assert {k for k in sample if not k.startswith("__")} == {"jpg", "txt", "json"}
            meta = json.loads(sample["json"])
            assert set(meta) == JSON_KEYS
            assert meta == row
            assert meta["status"] == "success" and meta["error_message"] is None
            assert sample["txt"].decode() == row["caption"] == t["caption"]
            image = Image.open(io.BytesIO(sample["jpg"]))
            assert image.format == "JPEG" and image.size == (row["width"], row["height"]) == (t["width"], t["height"])
            assert row["key"].startswith(name) and len(row["key"]) == 9
        total += len(rows)
    assert total == 23


def test_same_seed_same_bytes_other_seed_differs(world, tmp_path):
    out, _ = world
    again = tmp_path / "again"
    write_synthetic_world(again, 23, seed=7, shard_size=10)
    assert _files(again) == _files(out)
    other = tmp_path / "other"
    write_synthetic_world(other, 23, seed=8, shard_size=10)
    assert _files(other)["00000.tar"] != _files(out)["00000.tar"]


def test_truth_offsets_are_valid():
    words = set(SHAPES) | set(PLURAL.values())
    for index in range(300):
        sample = make_sample(11, index)
        truth = truth_record(sample, f"k{index}")
        caption = truth["caption"]
        assert truth["objects"], caption
        for obj in truth["objects"]:
            s, e = obj["noun_chunk"]
            hs, he = obj["head"]
            rs, re_ = obj["ref_exp"]
            assert 0 <= rs <= s <= hs < he <= e <= re_ <= len(caption)
            assert caption[hs:he] in words
            shape = obj["label"].split()[2]
            assert caption[hs:he] in (shape, PLURAL[shape])
            assert obj["label"].split()[1] in caption[s:e]           # the colour is named
            x1, y1, x2, y2 = obj["box"]
            assert 0 <= x1 < x2 <= 1 and 0 <= y1 < y2 <= 1
        for s, e in truth["absent"] + truth["ignore"]:
            assert 0 <= s < e <= len(caption) and caption[s:e].strip() == caption[s:e]
        present = {tuple(o["label"].split()[1:]) for o in truth["objects"]}
        for s, e in truth["absent"]:
            words_here = caption[s:e].split()
            if len(words_here) >= 2 and words_here[-1] in SHAPES and words_here[-2] in COLOURS:
                assert (words_here[-2], words_here[-1]) not in present   # an absent shape really is absent


def test_scenes_vary_as_promised():
    rng = random.Random(3)
    sizes, counts, backgrounds, border, overlap = set(), set(), set(), 0, 0
    for _ in range(400):
        scene = random_scene(rng)
        sizes.add((scene.width, scene.height))
        assert MIN_SIDE <= scene.width <= MAX_SIDE and MIN_SIDE <= scene.height <= MAX_SIDE
        counts.add(len(scene.objects))
        backgrounds.add(scene.background)
        boxes = [o.box for o in scene.objects]
        border += any(min(b[0], b[1]) <= 0.0 or max(b[2], b[3]) >= 1.0 for b in boxes)
        overlap += any(min(a[2], b[2]) > max(a[0], b[0]) and min(a[3], b[3]) > max(a[1], b[1])
                       for i, a in enumerate(boxes) for b in boxes[i + 1:])
    assert counts == {1, 2, 3, 4, 5}
    assert backgrounds == {"flat", "gradient", "noise", "stripes", "checker", "dots"}
    assert sum(w != h for w, h in sizes) > len(sizes) * 0.9
    assert border > 20 and overlap > 10


def test_captions_stress_the_text_rules():
    rng = random.Random(5)
    captions = [make_caption(rng, random_scene(rng)).text for _ in range(400)]
    joined = "\n".join(captions)
    for pattern in (r"\b(left of|right of|above|below|next to|beside)\b",   # spatial relations
                    r"\b(that is|which sits)\b",                               # relative clauses
                    r", .* and ",                                              # conjunctions
                    r"\b(peace|hope|happiness|freedom|wisdom|love|faith|courage)\b",  # abstract nouns
                    r"\bno (dog|cat|car|tree|person|bird|house|boat|chair|flower)\b",  # absent things
                    r"\b(two|three) \w+ \w+s\b",                               # plurals
                    r"[;.,] (and )?(it|they) (is|are)\b",                      # pronoun references
                    r" on a striped "):                                        # prepositional chains
        assert re.search(pattern, joined), pattern
    assert len(set(captions)) > 390


def test_cli_synth(tmp_path, capsys):
    from grit_pipeline.cli import main

    assert main(["synth", "--output", str(tmp_path / "w"), "--images", "4", "--seed", "1", "--shard-size", "3"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["images"] == 4 and summary["shards"] == 2
    assert (tmp_path / "w" / "00001.tar").is_file() and (tmp_path / "w" / "truth" / "00001.jsonl").is_file()


def test_defects_become_the_right_rejects_and_leave_the_clean_world_unchanged(tmp_path):
    from grit_pipeline.pipeline import PipelineConfig, layout, run_pipeline
    from grit_pipeline.synth.writer import sample_defect

    clean, defective = tmp_path / "clean", tmp_path / "defective"
    write_synthetic_world(clean, 40, seed=3, shard_size=20)
    write_synthetic_world(defective, 40, seed=3, shard_size=20, defect_rate=0.5)
    defects = {f"{i // 20:05d}{i % 20:04d}": sample_defect(3, i, 0.5) for i in range(40)}
    assert set(defects.values()) >= {None, "failed_to_download", "truncated_jpeg", "empty_caption",
                                     "abstract_caption"}
    # clean samples keep their bytes and truth; defective ones have no truth line
    clean_truth = {json.loads(l)["key"]: l for p in sorted((clean / "truth").glob("*.jsonl"))
                   for l in p.read_text().splitlines()}
    bad_truth = {json.loads(l)["key"]: l for p in sorted((defective / "truth").glob("*.jsonl"))
                 for l in p.read_text().splitlines()}
    assert bad_truth == {k: v for k, v in clean_truth.items() if defects[k] is None}
    rows = {r["key"]: r for p in sorted(defective.glob("*.parquet")) for r in pq.read_table(p).to_pylist()}
    assert {k for k, r in rows.items() if r["status"] != "success"} == {
        k for k, d in defects.items() if d == "failed_to_download"}

    build = tmp_path / "build"
    run_pipeline(PipelineConfig(input=str(defective), output=str(build), engine="local", detector="noop",
                                progress=False))
    rejects = {r["key"]: r["status"] for p in sorted(build.glob(f"{layout.REJECTS_DIR}/*.parquet"))
               for r in pq.read_table(p).to_pylist()}
    expected_status = {"failed_to_download": "download_error", "truncated_jpeg": "decode_error",
                       "empty_caption": "bad_caption", "abstract_caption": "no_noun_chunks"}
    for key, defect in defects.items():
        if defect is not None:
            assert rejects.get(key) == expected_status[defect], (key, defect)


def test_curriculum_levels():
    """Level 1: one object, the caption is one phrase naming it; level 2: two objects, the caption names one;
    level 3 is the full world, unchanged by the level option."""
    for level, n_objects in ((1, 1), (2, 2)):
        for index in range(40):
            sample = make_sample(5, index, level)
            objects = sample.scene.objects
            truth = truth_record(sample, f"k{index}")
            assert len(objects) == n_objects and len({(o.shape, o.colour) for o in objects}) == n_objects
            assert len(truth["objects"]) == 1 and truth["absent"] == [] and truth["ignore"] == []
            named = objects[truth["objects"][0]["object_id"]]
            assert truth["objects"][0]["noun_chunk"] == [0, len(truth["caption"])]
            assert named.colour in truth["caption"] and named.shape in truth["caption"]
            assert len(truth["unmentioned_boxes"]) == n_objects - 1
    assert make_sample(5, 3, 3).jpeg == make_sample(5, 3).jpeg
    with pytest.raises(ValueError, match="level"):
        random_scene(random.Random(0), level=4)


def _refs(index, seed=11):
    """{noun chunk: (truth ref_exp, semantic_ref_exp)} of one synthetic sample."""
    truth = truth_record(make_sample(seed, index), "k")
    c = truth["caption"]
    return c, {c[slice(*o["noun_chunk"])]: (c[slice(*o["ref_exp"])], c[slice(*o["semantic_ref_exp"])])
               for o in truth["objects"]}


def test_truth_expressions_follow_the_papers_rule_on_the_generators_tree():
    from grit_pipeline.synth.captions import caption_doc
    from grit_pipeline.text import _is_coordination

    seen = {"list": 0, "comma_modifier": 0, "relation": 0}
    for index in range(400):
        sample = make_sample(11, index)
        doc = caption_doc(sample.caption)           # the tree carries the caption exactly
        assert doc.text == sample.caption.text
        caption, refs = _refs(index)
        for chunk, (ref, semantic) in refs.items():
            assert chunk in ref and ref == ref.strip(" ,;.")
            mention = next(m for m in sample.caption.mentions if caption[slice(*m.span)] == chunk)
            root = doc[mention.token]
            if root.dep_ == "conj" or any(_is_coordination(child) for child in root.children):
                assert ref == chunk                 # lists and coordinated "but no X": never expanded
                seen["list"] += ref != semantic or " and " in caption
            elif re.search(r", (far from|waiting for) ", caption) and caption.endswith(ref[-8:]) and semantic != ref:
                seen["comma_modifier"] += 1         # "the black ring, far from a dog": the subtree keeps it
            elif re.search(r"\b(left of|right of|above|below|next to|beside|near)\b", ref):
                seen["relation"] += 1
    assert all(n > 5 for n in seen.values()), seen


def test_a_comma_set_modifier_belongs_to_the_expression():
    found = {}
    for index in range(400):
        caption, refs = _refs(index)
        for chunk, (ref, _) in refs.items():
            found.setdefault(caption, {})[chunk] = ref
    examples = [(c, r) for c, r in found.items() if re.fullmatch(r"[a-z ]+, far from an? \w+", c)]
    assert examples
    for caption, refs in examples:
        chunk = min(refs, key=caption.index)         # the main phrase, which the comma-set modifier describes
        ref = refs[chunk]
        assert ref == caption[caption.index(chunk):]  # "the black ring, far from a dog": the whole subtree
