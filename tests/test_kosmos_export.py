"""kosmos export: a run's model as a folder stock transformers loads, generating what kosmos predict generates."""
import json
import random
import re
import subprocess
import sys

import pytest
import torch

from grit_pipeline.serialize import parse_grounded_text
from kosmos.cli import main
from kosmos.export import ExportError, check_exportable, model_folder
from kosmos.toydata import toy_record, write_toy_shards
from kosmos.train import TrainConfig, train

torch.set_num_threads(1)

# Runs in a fresh interpreter with transformers only: the README's lines, then greedy generation with kosmos
# predict's rec settings for every query; prints what it generated and which grit modules it imported (none).
STOCK = r"""
import json, sys
import torch
from PIL import Image
from transformers import AutoProcessor, Kosmos2ForConditionalGeneration

torch.set_num_threads(1)
folder, queries, readme_code = sys.argv[1], json.loads(sys.argv[2]), sys.argv[3]
exec(readme_code)  # the README's example, as a user pastes it
readme_result = {"caption": caption, "entities": entities}
model, loading = Kosmos2ForConditionalGeneration.from_pretrained(folder, output_loading_info=True)
model.eval()
processor = AutoProcessor.from_pretrained(folder)
results = []
for query in queries:
    image = Image.open(query["image"]).convert("RGB")
    inputs = processor(text=query["prompt"], images=image, return_tensors="pt",
                       num_image_tokens=model.config.latent_query_num)
    with torch.no_grad():
        ids = model.generate(pixel_values=inputs["pixel_values"], input_ids=inputs["input_ids"],
                             attention_mask=inputs["attention_mask"],
                             image_embeds_position_mask=inputs["image_embeds_position_mask"],
                             max_new_tokens=16, no_repeat_ngram_size=3, do_sample=False, num_beams=1)
    text = processor.batch_decode(ids, skip_special_tokens=True)[0]
    results.append({"text": processor.post_process_generation(text, cleanup_and_extract=False),
                    "entities": processor.post_process_generation(text)[1]})
print(json.dumps({"loading": {k: sorted(map(str, v)) for k, v in loading.items()}, "results": results,
                  "readme": readme_result, "model_class": type(model).__name__,
                  "grit_modules": sorted(m for m in sys.modules if m.split(".")[0] in ("kosmos", "grit_pipeline"))}))
"""


@pytest.fixture(scope="module")
def resampler_run(tmp_path_factory):
    """A tiny run with transformers' own connector (the resampler), trained until its greedy REC answers carry
    boxes (40 steps), and a RefCOCO-format file of square images of three sizes."""
    root = tmp_path_factory.mktemp("export_run")
    write_toy_shards(root / "shards", num_shards=1, per_shard=16)
    train(TrainConfig(data=[str(root / "shards")], output=str(root / "run"), preset="tiny", connector="resampler",
                      steps=40, batch_size=8, log_every=10, checkpoint_every=40, loader_workers=0, lr=3e-3,
                      warmup_steps=2, data_options={"shuffle_buffer": 0}), log=lambda m: None)
    rng = random.Random(5)
    (root / "val" / "images").mkdir(parents=True)
    images, annotations = [], []
    for i, side in enumerate((64, 96, 130, 64)):
        image, record = toy_record(rng, f"v{i}", side, side)
        image.save(root / "val" / "images" / f"v{i}.png")
        start, end, x1, y1, x2, y2, _ = record["ref_exps"][0]
        images.append({"id": i, "file_name": f"v{i}.png", "width": side, "height": side,
                       "caption": record["caption"][int(start):int(end)]})
        annotations.append({"id": i, "image_id": i, "bbox": [x1 * side, y1 * side, (x2 - x1) * side, (y2 - y1) * side]})
    (root / "val" / "refcoco.json").write_text(json.dumps({"images": images, "annotations": annotations}))
    return root


def test_exported_folder_loads_in_stock_transformers_and_generates_as_kosmos_predict(resampler_run, tmp_path,
                                                                                      capsys):
    run, val = resampler_run / "run", resampler_run / "val"
    assert main(["predict", "rec", "--annotations", str(val / "refcoco.json"), "--images", str(val / "images"),
                 "--model", str(run), "--output", str(tmp_path / "rec.jsonl"), "--device", "cpu"]) == 0
    assert main(["export", str(run), "--output", str(tmp_path / "hf")]) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["num_image_tokens"] == 16 and summary["source"].endswith("step_0000040/model")
    assert {"config.json", "model.safetensors", "processor_config.json", "tokenizer.json", "README.md"} <= set(
        summary["files"])
    assert not any(name.endswith((".bin", ".py")) for name in summary["files"])  # weights only, no code

    grit = [json.loads(line) for line in (tmp_path / "rec.jsonl").read_text().splitlines()]
    annotations = json.loads((val / "refcoco.json").read_text())["images"]
    queries = [{"image": str(val / "images" / image["file_name"]), "prompt": f"<grounding><phrase>{image['caption']}</phrase>"}
               for image in annotations]
    readme = (tmp_path / "hf" / "README.md").read_text()
    code = re.search(r"```python\n(.*?)```", readme, re.S).group(1)
    code = code.replace("THIS_FOLDER", str(tmp_path / "hf")).replace("image.jpg", queries[0]["image"])
    stock = subprocess.run([sys.executable, "-c", STOCK, str(tmp_path / "hf"), json.dumps(queries), code],
                           capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert stock.returncode == 0, stock.stderr[-2000:]
    out = json.loads(stock.stdout.strip().splitlines()[-1])
    assert out["grit_modules"] == [] and out["model_class"] == "Kosmos2ForConditionalGeneration"
    assert out["loading"] == {"missing_keys": [], "unexpected_keys": [], "mismatched_keys": [], "error_msgs": []}
    assert out["readme"]["entities"] and isinstance(out["readme"]["caption"], str)  # the README's lines run

    boxes = 0
    for ours, theirs in zip(grit, out["results"], strict=True):
        assert theirs["text"] == ours["text"]  # the same tokens, prompt and location tokens included
        grit_boxes = [box for entity in parse_grounded_text(ours["text"]).entities for box in entity.boxes]
        stock_boxes = [value for _, _, found in theirs["entities"] for box in found for value in box]
        assert stock_boxes == pytest.approx([value for box in grit_boxes for value in box])
        boxes += len(grit_boxes)
    assert boxes >= len(grit)  # every answer carries a box: the comparison covers the location tokens


def write_config(folder, connector):
    from kosmos.presets import build_config, get_preset

    build_config(get_preset("tiny"), vocab_size=1200, connector=connector).save_pretrained(folder)
    return folder


@pytest.mark.parametrize("connector", ["merged", "linear"])
def test_small_preset_connectors_are_refused_in_one_line(connector, tmp_path, capsys):
    write_config(tmp_path / "model", connector)
    assert main(["export", str(tmp_path / "model"), "--output", str(tmp_path / "hf")]) == 2
    error = capsys.readouterr().err
    assert error.count("\n") == 1 and error.startswith("kosmos export: ")
    assert f"the {connector} connector" in error and "--connector resampler" in error and "paper preset" in error
    assert not (tmp_path / "hf").exists()
    check_exportable(__import__("transformers").Kosmos2Config())  # transformers' own config: the resampler


def test_export_refuses_what_it_cannot_read_or_would_overwrite(resampler_run, tmp_path, capsys):
    with pytest.raises(ExportError, match="is not a folder"):
        model_folder(tmp_path / "missing")
    with pytest.raises(ExportError, match="holds no model"):
        model_folder(tmp_path)
    (tmp_path / "taken").mkdir()
    (tmp_path / "taken" / "notes.txt").write_text("mine")
    assert main(["export", str(resampler_run / "run"), "--output", str(tmp_path / "taken")]) == 2
    assert "exists and is not an empty folder" in capsys.readouterr().err
    assert (tmp_path / "taken" / "notes.txt").read_text() == "mine"
    # a checkpoint folder and its model folder name the same model
    checkpoint = resampler_run / "run" / "checkpoints" / "step_0000040"
    assert model_folder(checkpoint) == model_folder(resampler_run / "run") == checkpoint / "model"
