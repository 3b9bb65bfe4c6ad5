"""Detectors from outside grit: ``--detector package.module:Class`` and entry points of group
``grit_pipeline.detectors``, resolved by the same functions the pipeline uses on the driver and in workers
(``detectors.base``), and the two worked adapters of ``examples/detectors/`` (GLIP through a stand-in of its
``maskrcnn_benchmark`` API, Kosmos-2 through a tiny random model) run through grit's normal path.
"""
from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from grit_pipeline.detectors import base
from grit_pipeline.pipeline import PipelineConfig, run_pipeline
from tests.fixtures_shards import healthy_samples, write_shard

REPO = Path(__file__).resolve().parents[1]
PLUGINS = REPO / "tests" / "plugins"
FAKE_GLIP = PLUGINS / "fake_glip"
GLIP = "examples.detectors.glip_detector:GLIPDetector"
KOSMOS2 = "examples.detectors.kosmos2_grounder:Kosmos2Grounder"
STRIPES = "stripes_plugin:StripesDetector"


@pytest.fixture(autouse=True)
def plugin_path(monkeypatch):
    """tests/plugins (the plugin modules) and the repository root (``examples``) on sys.path, and no plugin
    class remembered from another test."""
    monkeypatch.syspath_prepend(str(PLUGINS))
    monkeypatch.syspath_prepend(str(REPO))
    monkeypatch.setattr(base, "_PLUGINS", {})


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    folder = tmp_path_factory.mktemp("plugin_world") / "shards"
    for shard in range(2):
        write_shard(folder, f"{shard:05d}", healthy_samples(shard, 3))
    return folder


def config(input_dir, output_dir, **changes) -> PipelineConfig:
    values = dict(input=str(input_dir), output=str(output_dir), engine="local", progress=False, device="cpu")
    values.update(changes)
    return PipelineConfig(**values)


def grounded_rows(output: Path) -> list[dict]:
    rows = []
    for path in sorted(Path(output).glob("*.parquet")):
        rows.extend(pq.read_table(path).to_pylist())
    return rows


def boxes(row: dict) -> list[tuple[float, ...]]:
    """(x1, y1, x2, y2, score) of each noun chunk of a GRIT record."""
    return [tuple(chunk[2:7]) for chunk in row["noun_chunks"]]


def main(capsys, *args) -> tuple[int, str, str]:
    from grit_pipeline.cli import main as grit

    capsys.readouterr()
    code = grit(list(args))
    out = capsys.readouterr()
    return code, out.out, out.err


def write_entry_points(folder: Path, entries: dict[str, str]) -> Path:
    """A distribution's metadata (dist-info with entry_points.txt) in ``folder``, as pip would install it."""
    info = folder / "grit_test_plugins-0.1.dist-info"
    info.mkdir(parents=True, exist_ok=True)
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: grit-test-plugins\nVersion: 0.1\n")
    lines = ["[grit_pipeline.detectors]"] + [f"{name} = {target}" for name, target in entries.items()]
    (info / "entry_points.txt").write_text("\n".join(lines) + "\n")
    return folder


@pytest.fixture
def entry_points(tmp_path, monkeypatch):
    folder = write_entry_points(tmp_path / "site", {"stripes": STRIPES, "broken": "plugin_missing_dependency:Detector2",
                                                    "noop": STRIPES})
    monkeypatch.syspath_prepend(str(folder))
    return folder


# --- resolution and refusals ----------------------------------------------------------------------------

REFUSALS = [
    ("plugin_nowhere:Thing", "detector 'plugin_nowhere:Thing': cannot import module 'plugin_nowhere' "
                             "(ModuleNotFoundError: No module named 'plugin_nowhere')"),
    ("plugin_missing_dependency:Detector2", "detector 'plugin_missing_dependency:Detector2': cannot import module "
     "'plugin_missing_dependency' (ModuleNotFoundError: No module named 'grit_no_such_dependency')"),
    ("refused_plugins:Nope", "detector 'refused_plugins:Nope': module 'refused_plugins' has no attribute 'Nope'"),
    ("refused_plugins:NotADetector", "detector 'refused_plugins:NotADetector': refused_plugins:NotADetector is not "
                                     "a Detector (no detect method)"),
    ("refused_plugins:make_detector", "detector 'refused_plugins:make_detector': refused_plugins:make_detector is "
                                      "not a Detector (not a class but a function)"),
    ("refused_plugins:Unfinished", "detector 'refused_plugins:Unfinished': refused_plugins:Unfinished is abstract "
                                   "(does not implement detect)"),
    ("refused_plugins:CheckRaises", "detector 'refused_plugins:CheckRaises': check_options failed (RuntimeError: "
                                    "licence server unreachable at 10.0.0.1:27000 retry later)"),
    ("refused_plugins:CheckRefuses", "detector 'refused_plugins:CheckRefuses': give --detector-option weights=PATH"),
    ("refused_plugins:NarrowConstructor", "detector 'refused_plugins:NarrowConstructor': its constructor does not "
                                          "take these options: got an unexpected keyword argument 'device'"),
    ("refused_plugins.py:X", "detector 'refused_plugins.py:X': cannot import module 'refused_plugins.py'"),
    ("a:b:c", "detector 'a:b:c': expected package.module:ClassName"),
    ("nope", "unknown detector 'nope'; available: demo, hf, noop (or package.module:Class, or an entry point of "
             "group grit_pipeline.detectors)"),
]


@pytest.mark.parametrize("name,message", REFUSALS, ids=[name for name, _ in REFUSALS])
def test_a_backend_that_cannot_be_used_is_refused_in_one_line(name, message):
    with pytest.raises(ValueError) as refused:
        base.check_detector(name, device="cpu", batch_size=2)
    assert str(refused.value).startswith(message)
    assert "\n" not in str(refused.value) and len(str(refused.value)) < 500


def test_module_class_resolves_through_the_pipelines_functions():
    from stripes_plugin import StripesDetector

    base.check_detector(STRIPES, device="cpu", batch_size=2, score="0.7")
    detector = base.get_detector(STRIPES, device="cpu", batch_size=2, score="0.7")
    assert isinstance(detector, StripesDetector) and detector.score == 0.7
    assert base.detector_parameters(STRIPES) is None  # takes **options
    assert base.detector_parameters("refused_plugins:NarrowConstructor") == {"threshold"}
    with pytest.raises(ValueError, match=r"^detector 'stripes_plugin:StripesDetector': stripes: score must be in"):
        base.check_detector(STRIPES, device="cpu", batch_size=2, score=2)
    # not a Detector subclass, but with a callable detect: accepted
    duck = base.get_detector("refused_plugins:DuckDetector", device="cpu", batch_size=2)
    assert duck.detect([None], [["a", "b"]])[0][1].phrase_index == 1
    # built-in names are untouched
    assert type(base.get_detector("noop")).__name__ == "NoopDetector"
    assert {"demo", "hf", "noop"} <= set(base.available_detectors()) and STRIPES not in base.available_detectors()


def test_a_module_of_the_current_folder_is_found_like_python_m_would(tmp_path, monkeypatch):
    (tmp_path / "my_cwd_adapter.py").write_text(
        "from grit_pipeline.detectors.base import Detector\n"
        "class Mine(Detector):\n"
        "    def __init__(self, **options):\n        pass\n"
        "    def detect(self, images, phrases):\n        return [[] for _ in images]\n")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "path", [p for p in sys.path if p not in ("", ".", str(tmp_path))])
    monkeypatch.delitem(sys.modules, "my_cwd_adapter", raising=False)
    assert type(base.get_detector("my_cwd_adapter:Mine")).__name__ == "Mine"
    assert sys.path[-1] == str(tmp_path)  # appended: never shadows an installed module
    assert base.plugin_import_paths("my_cwd_adapter:Mine") == [str(tmp_path)]


def test_entry_points_resolve_after_built_ins_and_are_listed(entry_points):
    from stripes_plugin import StripesDetector

    names = base.available_detectors()
    assert names == sorted(set(names)) and {"broken", "demo", "hf", "noop", "stripes"} <= set(names)
    assert isinstance(base.get_detector("stripes", device="cpu", batch_size=2), StripesDetector)
    assert type(base.get_detector("noop")).__name__ == "NoopDetector"  # a built-in name wins over an entry point
    with pytest.raises(ValueError) as refused:
        base.check_detector("broken", device="cpu", batch_size=2)
    assert str(refused.value) == ("detector 'broken' (entry point 'plugin_missing_dependency:Detector2' of group "
                                  "grit_pipeline.detectors): cannot import module 'plugin_missing_dependency' "
                                  "(ModuleNotFoundError: No module named 'grit_no_such_dependency')")
    with pytest.raises(ValueError, match=r"^detector 'stripes': stripes: score must be in \[0, 1\], got 5$"):
        base.check_detector("stripes", device="cpu", batch_size=2, score=5)
    with pytest.raises(ValueError, match=r"^unknown detector 'nope'; available: broken, demo, hf, noop, stripes"):
        base.get_detector("nope")
    # what a worker needs on its PYTHONPATH: the module's folder and the folder of the distribution metadata
    assert base.plugin_import_paths("stripes") == [str(PLUGINS), str(entry_points)]
    assert base.plugin_import_paths(STRIPES) == [str(PLUGINS)]
    assert base.plugin_import_paths("noop") == base.plugin_import_paths("nope") == []


def test_init_ray_gives_local_workers_the_plugins_folder(monkeypatch):
    import ray

    from grit_pipeline.pipeline import engine_ray

    calls = []
    monkeypatch.setattr(ray, "is_initialized", lambda: False)
    monkeypatch.setattr(ray, "init", lambda **kwargs: calls.append(kwargs))
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    monkeypatch.setenv("PYTHONPATH", "/opt/site-extra")
    engine_ray.init_ray(config("in", "out", engine="ray", num_cpus=2, detector=STRIPES))
    engine_ray.init_ray(config("in", "out", engine="ray", num_cpus=2, detector="noop"))
    assert calls[0]["runtime_env"] == {"env_vars": {"PYTHONPATH": os.pathsep.join([str(PLUGINS), "/opt/site-extra"])}}
    assert calls[1]["runtime_env"] is None  # built-in backends: Ray's defaults, as before


# --- the CLI ---------------------------------------------------------------------------------------------

def test_grit_run_with_a_plugin_and_its_refusals(world, tmp_path, capsys):
    output = tmp_path / "grit"
    common = ("--input", str(world), "--output", str(output), "--engine", "local", "--no-progress")
    for name, message in (("refused_plugins:CheckRaises", "check_options failed (RuntimeError: licence server"),
                          ("plugin_nowhere:Thing", "cannot import module 'plugin_nowhere'")):
        code, out, err = main(capsys, "run", *common, "--detector", name)
        assert code == 2 and message in err and len(err.strip().splitlines()) == 1, err
    code, _, err = main(capsys, "run", *common, "--detector", STRIPES, "--detector-option", "score=7")
    assert code == 2 and "stripes: score must be in [0, 1], got 7" in err and len(err.strip().splitlines()) == 1, err
    assert not output.exists()  # refused before anything was written
    code, out, err = main(capsys, "run", *common, "--detector", STRIPES)
    assert code == 0, err
    rows = grounded_rows(output)
    assert rows and all(box[1] == 0.25 and box[3] == 0.75 and box[4] == pytest.approx(0.8)
                        for row in rows for box in boxes(row))


def test_grit_ground_with_a_plugin_and_its_refusals(tmp_path, capsys):
    from PIL import Image

    Image.new("RGB", (40, 30), (200, 30, 30)).save(tmp_path / "dog.jpg")
    (tmp_path / "in.jsonl").write_text(json.dumps({"key": "k1", "image": "dog.jpg", "caption": "a dog on a table"}))
    common = ("ground", "--input", str(tmp_path / "in.jsonl"))
    code, _, err = main(capsys, *common, "--detector", "refused_plugins:NotADetector")
    assert code == 2 and err.strip() == ("grit ground: detector 'refused_plugins:NotADetector': "
                                         "refused_plugins:NotADetector is not a Detector (no detect method)"), err
    code, out, err = main(capsys, *common, "--detector", STRIPES)
    assert code == 0, err
    (record,) = [json.loads(line) for line in out.splitlines()]
    assert record["status"] == "grounded" and [b[1] for b in boxes(record)] == [0.25, 0.25]


# --- GLIP, through a stand-in of its maskrcnn_benchmark API ----------------------------------------------

@pytest.fixture
def glip_files(tmp_path, monkeypatch):
    """The stand-in maskrcnn_benchmark on sys.path, a checkpoint file and a GLIP config of 12 query tokens."""
    monkeypatch.syspath_prepend(str(FAKE_GLIP))
    weights = tmp_path / "glip_tiny.pth"
    weights.write_bytes(b"not really weights")
    cfg = tmp_path / "glip_tiny.yaml"
    cfg.write_text("MODEL:\n  RPN_ARCHITECTURE: VLDYHEAD\n  LANGUAGE_BACKBONE:\n    MAX_QUERY_LEN: 12\n")
    return str(weights), str(cfg)


def test_glip_adapter_maps_glip_predictions_to_detections(glip_files, capsys):
    from PIL import Image

    from maskrcnn_benchmark.config import cfg as glip_defaults
    from maskrcnn_benchmark.engine.predictor_glip import CALLS

    weights, cfg = glip_files
    detector = base.get_detector(GLIP, model=weights, config_file=cfg, device="cpu", batch_size=2)
    assert glip_defaults.MODEL.WEIGHT == "" and detector.demo.cfg.MODEL.WEIGHT == weights  # defaults untouched
    CALLS.clear()
    red = Image.new("RGB", (40, 30), (255, 0, 0))
    out = detector.detect([red, red], [["a dog", "a hot.dog", "the big red car on the road"], ["?"]])
    assert out[1] == []  # nothing left of the chunk to ask for
    # GLIP's caption format, one entity per chunk; a caption over MAX_QUERY_LEN (12) tokens is split
    assert [(c["caption"], c["entities"]) for c in CALLS] == [
        ("a dog . a hot dog . ", ["a dog", "a hot dog"]),
        ("the big red car on the road . ", ["the big red car on the road"])]
    assert CALLS[0]["pixel"] == [0, 0, 255] and CALLS[0]["shape"] == (30, 40, 3)  # OpenCV BGR, H x W
    assert capsys.readouterr().out == ""  # GLIP's prints kept off stdout
    by_phrase = {}
    for d in out[0]:
        assert all(0.0 <= v <= 1.0 for v in d.box) and 0.0 <= d.score <= 1.0
        by_phrase.setdefault(d.phrase_index, []).append(d)
    # labels (1-based, VLDYHEAD) mapped back to chunks, boxes normalised by the original image size
    assert [d.box for d in by_phrase[0]][0] == pytest.approx((0.0, 0.1, 0.5, 0.9))
    assert [d.box for d in by_phrase[1]][0] == pytest.approx((0.5, 0.1, 1.0, 0.9))
    assert [d.box for d in by_phrase[2]][0] == pytest.approx((0.0, 0.1, 1.0, 0.9))
    assert sorted(round(d.score, 2) for d in out[0]) == [0.3, 0.3, 0.8, 0.8, 0.9, 0.9, 0.9]


def test_glip_adapter_check_options(glip_files, tmp_path, monkeypatch):
    weights, cfg = glip_files
    for options, message in (({}, "glip: give the checkpoint with --model PATH.pth"),
                             ({"model": str(tmp_path / "no.pth")}, "glip: no checkpoint file"),
                             ({"model": weights}, "glip: give its config with --detector-option config_file="),
                             ({"model": weights, "config_file": "no.yaml"}, "glip: no config file no.yaml"),
                             ({"model": weights, "config_file": cfg, "dtype": "float16"}, "glip: runs in float32"),
                             ({"model": weights, "config_file": cfg, "min_image_size": "big"},
                              "glip: min_image_size must be an integer")):
        with pytest.raises(ValueError, match=f"^detector '{GLIP}': {message}"):
            base.check_detector(GLIP, device="cpu", batch_size=2, **options)
    base.check_detector(GLIP, device="cpu", batch_size=2, model=weights, config_file=cfg)
    monkeypatch.setattr(sys, "path", [p for p in sys.path if p != str(FAKE_GLIP)])
    for module in [m for m in sys.modules if m.split(".")[0] == "maskrcnn_benchmark"]:
        monkeypatch.delitem(sys.modules, module)
    with pytest.raises(ValueError, match="glip: maskrcnn_benchmark is not installed"):
        base.check_detector(GLIP, device="cpu", batch_size=2, model=weights, config_file=cfg)


def test_glip_adapter_through_run_pipeline(glip_files, world, tmp_path):
    weights, _ = glip_files
    output = tmp_path / "grit"
    cfg = tmp_path / "glip_256.yaml"  # room for every caption's chunks in one query (12 tokens would split them)
    cfg.write_text("MODEL:\n  LANGUAGE_BACKBONE:\n    MAX_QUERY_LEN: 256\n")
    summary = run_pipeline(config(world, output, detector=GLIP, model=weights,
                                  detector_options={"config_file": str(cfg)}))
    assert summary.counts.get("grounded", 0) == 6
    for row in grounded_rows(output):
        found = boxes(row)
        n = len(found)  # every chunk kept, once: the 0.8 duplicate removed by NMS, the 0.3 box by the threshold
        assert n >= 1 and all(score == pytest.approx(0.9) for *_, score in found)
        assert sorted(round(x1 * n, 6) for x1, *_ in found) == list(range(n))
        assert all(y1 == pytest.approx(0.1) and y2 == pytest.approx(0.9) for _, y1, _, y2, _ in found)


# --- Kosmos-2 as a phrase grounder, with a tiny random Kosmos-2 ----------------------------------------

@pytest.fixture(scope="module")
def kosmos2_dir(tmp_path_factory):
    """A random Kosmos2ForConditionalGeneration (28 px images, 64 latent queries) and its processor with a
    tokenizer learnt from a few captions plus Kosmos-2's tag and 1,024 location tokens, saved as on the hub."""
    import torch
    from transformers import Kosmos2Config, Kosmos2ForConditionalGeneration

    from kosmos.tokenizer import build_processor, train_tokenizer
    from tests.fixtures_shards import CAPTIONS

    tokenizer = train_tokenizer(list(CAPTIONS) * 10, vocab_size=300)
    processor = build_processor(tokenizer, 28)
    model_config = Kosmos2Config(
        text_config=dict(vocab_size=len(tokenizer), embed_dim=32, layers=1, attention_heads=2, ffn_dim=64,
                         max_position_embeddings=256),
        vision_config=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2,
                           image_size=28, patch_size=14),
        latent_query_num=64)
    torch.manual_seed(0)
    folder = tmp_path_factory.mktemp("kosmos2") / "model"
    model = Kosmos2ForConditionalGeneration(model_config)
    with torch.no_grad():  # peaked logits: a random model's near-uniform ones make argmax ties float noise decides
        model.get_output_embeddings().weight.mul_(40.0)
    model.save_pretrained(folder)
    processor.save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def kosmos2(kosmos2_dir):
    sys.path.insert(0, str(REPO))
    try:
        return base.resolve_detector(KOSMOS2)(model=str(kosmos2_dir), device="cpu", batch_size=4)
    finally:
        sys.path.remove(str(REPO))


def test_kosmos2_grounder_decodes_what_generate_writes(kosmos2):
    """One box per chunk: the two location tokens Kosmos-2's own generate picks (restricted to location
    tokens, lower-right not above/left of upper-left), decoded by Kosmos2Processor.post_process_generation."""
    import torch
    from PIL import Image

    image = Image.new("RGB", (60, 40), (20, 120, 200))
    phrases = ["a red dog", "the sky"]
    (found,) = kosmos2.detect([image], [phrases])
    assert [d.phrase_index for d in found] == [0, 1]
    processor, model = kosmos2.processor, kosmos2.model
    patch = kosmos2.patch_ids.tolist()
    square = image.resize((kosmos2.side, kosmos2.side), Image.BICUBIC)
    for detection, phrase in zip(found, phrases):
        inputs = processor(images=square, text=f"<grounding><phrase> {phrase}</phrase><object>", return_tensors="pt")
        start = inputs["input_ids"].shape[1]

        def allowed(_, ids):
            if ids.shape[0] == start:
                return patch
            first = patch.index(int(ids[start]))
            return [patch[j] for j in range(len(patch)) if kosmos2.allowed_after[first, j]]

        with torch.no_grad():
            embeds = model.get_image_features(inputs["pixel_values"], return_dict=True).pooler_output
            generated = model.generate(input_ids=inputs["input_ids"], attention_mask=inputs["attention_mask"],
                                       image_embeds=embeds,
                                       image_embeds_position_mask=inputs["image_embeds_position_mask"],
                                       max_new_tokens=2, do_sample=False, prefix_allowed_tokens_fn=allowed,
                                       output_logits=True, return_dict_in_generate=True)
        text = processor.batch_decode(generated.sequences, skip_special_tokens=False)[0] + "</object>"
        _, entities = processor.post_process_generation(text)
        ((name, _, (box,)),) = entities
        assert name == phrase and detection.box == pytest.approx(box)
        chosen = generated.sequences[0, start:]
        probabilities = [torch.softmax(step[0].float(), -1)[token].item()
                         for step, token in zip(generated.logits, chosen)]
        assert detection.score == pytest.approx(sum(probabilities) / 2, rel=1e-4)


def test_kosmos2_grounder_batched_equals_one_at_a_time(kosmos2):
    from PIL import Image

    images = [Image.new("RGB", (60, 40), (200, 20, 20)), Image.new("RGB", (30, 90), (10, 200, 10)),
              Image.new("RGB", (50, 50), (10, 10, 200))]
    phrases = [["a dog", "a big red car on the road"], [], ["the cat", "a tree", "two people"]]
    batched = kosmos2.detect(images, phrases)
    assert [len(found) for found in batched] == [2, 0, 3]
    alone = [kosmos2.detect([image], [p])[0] for image, p in zip(images, phrases)]
    for a, b in zip(batched, alone):
        assert [d.box for d in a] == [d.box for d in b]
        assert [d.score for d in a] == pytest.approx([d.score for d in b], rel=1e-5)
    kosmos2.rows_per_pass, before = 2, kosmos2.rows_per_pass  # rows split over several passes: same answer
    try:
        again = kosmos2.detect(images, phrases)
    finally:
        kosmos2.rows_per_pass = before
    for a, b in zip(again, batched):
        assert [d.box for d in a] == [d.box for d in b]
        assert [d.score for d in a] == pytest.approx([d.score for d in b], rel=1e-5)


def test_kosmos2_grounder_check_options(kosmos2_dir, tmp_path):
    (tmp_path / "bert").mkdir()
    (tmp_path / "bert" / "config.json").write_text('{"model_type": "bert"}')
    for options, message in (({}, "kosmos2: give the model with --model"),
                             ({"model": str(tmp_path / "bert")}, "kosmos2: --model .* is a 'bert' model, not Kosmos-2"),
                             ({"model": str(tmp_path / "none")}, "kosmos2: --model .*: no readable config.json"),
                             ({"model": str(kosmos2_dir), "dtype": "float8"}, "unknown dtype 'float8'"),
                             ({"model": str(kosmos2_dir), "rows_per_pass": "0"}, "kosmos2: rows_per_pass must be")):
        with pytest.raises(ValueError, match=f"^detector '{KOSMOS2}': {message}"):
            base.check_detector(KOSMOS2, device="cpu", batch_size=2, **options)
    base.check_detector(KOSMOS2, device="cpu", batch_size=2, model=str(kosmos2_dir))


def test_kosmos2_grounder_through_run_pipeline(kosmos2_dir, world, tmp_path):
    output = tmp_path / "grit"
    # a random model is unsure of everything (scores ~1/1000): a threshold of 0 keeps its boxes
    summary = run_pipeline(config(world, output, detector=KOSMOS2, model=str(kosmos2_dir), box_threshold=0.0,
                                  ground_batch_size=2))
    assert summary.counts.get("grounded", 0) == 6
    for row in grounded_rows(output):
        for x1, y1, x2, y2, score in boxes(row):
            assert 0.0 <= x1 < x2 <= 1.0 and 0.0 <= y1 < y2 <= 1.0 and 0.0 < score < 1.0
            assert all(round(v * 64, 6) == int(round(v * 64, 6)) for v in (x1, y1, x2, y2))  # Kosmos-2's 32 x 32 grid


# --- under Ray ------------------------------------------------------------------------------------------

@pytest.mark.slow
@pytest.mark.ray
def test_plugin_and_entry_point_under_ray_with_local_workers(world, entry_points, tmp_path):
    """A module of tests/plugins (``module:Class``) and an entry point whose metadata lies in a temporary
    folder: neither is in site-packages nor the current folder, so only the PYTHONPATH that init_ray gives the
    local Ray lets the actors import them. The builds equal the local engine's."""
    import ray

    if ray.is_initialized():
        pytest.skip("a Ray session of another test is running: init_ray would not start its own")
    local = tmp_path / "local"
    run_pipeline(config(world, local, detector=STRIPES))
    reference = grounded_rows(local)
    assert reference
    for name in (STRIPES, "stripes"):
        output = tmp_path / name.replace(":", "_")
        summary = run_pipeline(config(world, output, detector=name, engine="ray", num_cpus=2, ground_batch_size=2,
                                      text_batch_size=4, object_store_limit_mb=64))
        assert summary.counts.get("grounded", 0) == 6, name
        assert grounded_rows(output) == reference, name
    assert not ray.is_initialized()
