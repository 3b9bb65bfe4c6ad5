"""``make instruct-study``: what instruction tuning does, on CPU (a benchmark, not a test).

A tiny model pre-trained on GRIT of a level-1 synthetic world (20,000 images, one object each, captions such as
"a red square") is instruction-tuned with ``kosmos train --recipe instruct --init MODEL`` on that world's GRIT pairs
plus ``grit instruct`` data built from the same GRIT build. Before and after tuning, on held-out images (another seed):

- box -> expression: the held-out images' GRIT build (``grit run --detector demo``) through ``grit instruct
  --templates what_is_it`` gives one question per box ("What is<phrase> it</phrase><object>..</object>?"); the
  model answers with the training conversation template (``kosmos.chat.answer``: ``kosmos chat``'s code path,
  greedy). An answer is right when the colours it names are exactly the boxed object's colour and the shapes it
  names exactly its shape (the world's truth for the object the box overlaps most);
- expression -> box: ``kosmos predict rec`` + ``kosmos score rec`` on the held-out images (RefCOCO format).

Runs: ``untuned`` (the pre-trained model), ``recipe_defaults`` (the recipe as it comes) and ``tuned`` (the recipe
with STUDY_TUNE_ARGS, the settings docs/instruct.md reports). Prints one JSON object (also OUT/study.json).
Every stage is skipped when its output exists, so a rerun resumes.

Settings (environment): STUDY_DIR (e2e_out/instruct_study), STUDY_WORLD (STUDY_DIR/world: synth/, grit/,
heldout/, refcoco_heldout/; built when missing), STUDY_TRAIN_IMAGES (20000) and STUDY_HELDOUT_IMAGES (1000), when
the world is built, STUDY_VISION_STEPS (32000: the world's CLIP, STUDY_WORLD/clip, whose ViT the untuned model
starts from, frozen but its last layer; 0: a ViT from scratch), STUDY_MODEL (the untuned model; default:
pre-trained in STUDY_WORLD/run_untuned for STUDY_PRETRAIN_STEPS, 12000, with STUDY_PRETRAIN_ARGS, "--connector
linear --location-embedding-init random --decay-fraction 1 --image-size 32 --patch-size 4"), STUDY_TUNE_ARGS (flags of the tuned
run), STUDY_THREADS (1).
"""
from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
import tarfile
import time
from pathlib import Path

# The tuned run's flags (docs/instruct.md, "Proof at small scale"): the tiny recipe's 67 steps at lr 5e-5 barely
# move a model pre-trained at lr 1e-3 for 5,000 steps; with --init's location loss (weight 1, exact cell) this
# tiny model lost 10 points of REC, with the pre-training's (10, 1.5 cells) it kept it; the ViT stays as it was
# pre-trained (CLIP's, frozen but its last layer).
DEFAULT_TUNE_ARGS = ("--steps 1500 --lr 5e-4 --warmup-steps 50 --location-loss-weight 10 --location-sigma 1.5 "
                     "--freeze-vision all-but-last")
# The untuned model's world and pre-training (docs/instruct.md). A from-scratch ViT learns the seven shapes slowly
# from captions: a shape probe of the tiny ViT memorised 4,000 images (27-33% held-out after 10,000 steps) and
# climbed past 60% on 20,000; it learns faster from 4-px patches of a 32-px image than from 8-px patches of a 64-px
# one (the same 65 slots); the captioning model itself still named the right shape on only 30% of held-out images
# after 7,500 steps. So, as the papers start from CLIP, the study first trains a CLIP of the tiny ViT's sizes on the
# world's image-caption pairs (DEFAULT_VISION_STEPS) and starts the ViT from it (kosmos train --vision-init).
DEFAULT_TRAIN_IMAGES = 20000
# Held-out images (one object each): REC before and after tuning differ by a few borderline boxes (IoU 0.45-0.55
# on small objects), so 200 images measure the difference within +-1.5 points; 1,000 within about +-0.7.
DEFAULT_HELDOUT_IMAGES = 1000
# The tuned answers name the shape about as often as the untuned model's own captions, which follow its CLIP:
# 16,000 CLIP steps (81.5% zero-shot) and 8,000 of pre-training named it on 77.4% of held-out images (tuned 75.9%);
# 32,000 (83.0%) and 12,000 on 86.3% (tuned 87.5%; docs/instruct.md).
DEFAULT_VISION_STEPS = 32000
DEFAULT_PRETRAIN_STEPS = 12000
# the settings the study was measured with (tiny's connector and location rows before merged / sincos2d)
DEFAULT_PRETRAIN_ARGS = ("--connector linear --location-embedding-init random --decay-fraction 1 --image-size 32 "
                         "--patch-size 4")
# The pre-training data settings of the untuned model, kept while tuning (the grounded rows look as before).
# whole images: the study was measured without the tiny preset's zoom (docs/instruct.md)
DATA_ARGS = ["--image-mode", "square", "--grounding-prob", "1.0", "--zoom-min-scale", "1.0"]
GRIT = [sys.executable, "-m", "grit_pipeline"]
KOSMOS = [sys.executable, "-m", "kosmos.cli"]
ENV = {**os.environ, "NO_ALBUMENTATIONS_UPDATE": "1", "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}


def run_logged(argv: list[str], log: Path) -> float:
    """Run a command with its output appended to ``log``; seconds taken; exits with a one-line error on failure."""
    started = time.perf_counter()
    print(f"[study] $ {shlex.join(str(a) for a in argv)}", file=sys.stderr, flush=True)
    with open(log, "a") as handle:
        code = subprocess.run([str(a) for a in argv], stdout=handle, stderr=subprocess.STDOUT, env=ENV).returncode
    if code:
        raise SystemExit(f"[study] command failed ({code}); see {log}")
    return round(time.perf_counter() - started, 1)


def build_world(world: Path, train_images: int, heldout_images: int, log: Path) -> None:
    """The level-1 world when missing: ``train_images`` training images (seed 10) with their GRIT build,
    ``heldout_images`` held-out images (seed 11) as synthetic shards and as RefCOCO json."""
    world.mkdir(parents=True, exist_ok=True)
    for name, seed, images, shard in (("synth", 10, train_images, 1000), ("heldout", 11, heldout_images, 250)):
        if not (world / name / "truth").is_dir():
            run_logged(GRIT + ["synth", "--output", world / name, "--images", images, "--seed", seed,
                               "--shard-size", shard, "--level", "1"], log)
    if not (world / "grit" / "_stats.json").exists():
        run_logged(GRIT + ["run", "--input", world / "synth", "--output", world / "grit", "--engine", "local",
                           "--detector", "demo", "--no-progress"], log)
    if not (world / "refcoco_heldout" / "finetune_refcoco_val.json").exists():
        run_logged(KOSMOS + ["synth-refcoco", "--synth", world / "heldout", "--output", world / "refcoco_heldout"],
                   log)


def read_pairs(folder: Path, image_size: int):
    """(pixels, captions, labels) of a synthetic world's shards: each image fitted square to ``image_size`` and
    preprocessed as ``kosmos train`` does; its caption; its truth label (e.g. "large blue ring")."""
    import io

    import torch
    from PIL import Image

    from kosmos.images import prepare_image
    from kosmos.tokenizer import build_image_processor

    from grit_pipeline.evaluate import load_truth

    processor = build_image_processor(image_size)
    truth = {key: record["objects"][0]["label"] if record["objects"] else ""
             for key, record in load_truth(folder / "truth").items()}
    pixels, captions, labels = [], [], []
    for shard in sorted(folder.glob("*.tar")):
        with tarfile.open(shard) as tar:
            members = {m.name: m for m in tar.getmembers()}
            for name in sorted(n for n in members if n.endswith(".jpg")):
                key = name[:-4]
                image = Image.open(io.BytesIO(tar.extractfile(members[name]).read())).convert("RGB")
                pixels.append(processor(prepare_image(image, image_size, "square")[0],
                                        return_tensors="pt")["pixel_values"][0])
                captions.append(tar.extractfile(members[key + ".txt"]).read().decode("utf-8").strip().lower())
                labels.append(truth.get(Path(key).name, ""))
    return torch.stack(pixels), captions, labels


def pretrain_vision(world: Path, sizes: dict, steps: int, threads: int) -> Path:
    """The study's stand-in for CLIP ViT-L/14 (which Kosmos-1/2 start from): a CLIP of the tiny preset's ViT
    sizes trained contrastively on the world's image-caption pairs (``synth/``: the captions only, no boxes, no
    labels; images mirrored at random), in-batch rows with the same caption counted as positives. Saved with
    ``save_pretrained`` to ``world/clip`` for ``kosmos train --vision-init``. Prints its zero-shot shape accuracy on
    the held-out images (each image matched against "a {colour} {shape}" for every colour and shape of the world)."""
    import re

    import torch
    import torch.nn.functional as F
    from transformers import CLIPConfig, CLIPModel

    from grit_pipeline.synth.vocab import COLOURS, SHAPES

    out = world / "clip"
    if (out / "config.json").exists():
        return out
    torch.manual_seed(0)
    torch.set_num_threads(threads)
    started = time.perf_counter()
    pixels, captions, _ = read_pairs(world / "synth", sizes["image_size"])
    heldout_pixels, _, heldout_labels = read_pairs(world / "heldout", sizes["image_size"])
    prompts = [f"a {colour} {shape}" for colour in COLOURS for shape in SHAPES]
    words = sorted({w for text in captions + prompts for w in re.findall(r"[a-z]+", text)})
    vocab = {word: index for index, word in enumerate(words, start=2)}  # 0 padding, 1 end (CLIP pools there)

    def tokens(texts: list[str]) -> tuple:
        rows = [[vocab.get(w, 0) for w in re.findall(r"[a-z]+", t)][:15] + [1] for t in texts]
        ids = torch.zeros(len(rows), 16, dtype=torch.long)
        for i, row in enumerate(rows):
            ids[i, :len(row)] = torch.tensor(row)
        return ids, (ids != 0).long()

    caption_ids = {text: i for i, text in enumerate(sorted(set(captions)))}
    caption_index = torch.tensor([caption_ids[t] for t in captions])
    all_ids, all_mask = tokens(captions)
    model = CLIPModel(CLIPConfig(vision_config=sizes, text_config=dict(
        vocab_size=len(vocab) + 2, hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
        max_position_embeddings=16, pad_token_id=0, bos_token_id=1, eos_token_id=1), projection_dim=64))
    optimiser = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.01)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimiser, lambda s: min(1.0, (s + 1) / 100) * (1 - s / steps))

    def zero_shot_shape() -> float:
        model.eval()
        with torch.no_grad():
            ids, mask = tokens(prompts)
            logits = model(input_ids=ids, attention_mask=mask, pixel_values=heldout_pixels).logits_per_image
        model.train()
        named = [prompts[i].split()[-1] for i in logits.argmax(-1).tolist()]
        return round(100.0 * sum(n == label.split()[-1] for n, label in zip(named, heldout_labels)) / len(named), 1)

    for step in range(1, steps + 1):
        batch = torch.randint(0, len(captions), (64,))
        images = pixels[batch]
        flip = torch.rand(len(batch)) < 0.5  # mirrored: the level-1 captions name no side
        images = torch.where(flip[:, None, None, None], images.flip(-1), images)
        logits = model(input_ids=all_ids[batch], attention_mask=all_mask[batch], pixel_values=images).logits_per_image
        same = (caption_index[batch, None] == caption_index[None, batch]).float()
        targets = same / same.sum(1, keepdim=True)
        loss = (F.cross_entropy(logits, targets) + F.cross_entropy(logits.t(), targets)) / 2
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
        schedule.step()
        if step % 500 == 0 or step == steps:
            print(f"[study] vision pre-training step {step}/{steps}: loss {loss.item():.3f}, held-out zero-shot "
                  f"shape {zero_shot_shape()}%", file=sys.stderr, flush=True)
    model.save_pretrained(out)
    (out / "study_vision.json").write_text(json.dumps({
        "steps": steps, "pairs": len(captions), "heldout_zero_shot_shape_accuracy": zero_shot_shape(),
        "seconds": round(time.perf_counter() - started, 1)}))
    return out


def pretrain_sizes(extra: list[str]) -> dict:
    """The tiny preset's ViT sizes under the pre-training flags ``extra`` (its --image-size/--patch-size)."""
    from kosmos.presets import get_preset

    sizes = get_preset("tiny").vision_sizes()
    for flag, name in (("--image-size", "image_size"), ("--patch-size", "patch_size")):
        if flag in extra:
            sizes[name] = int(extra[extra.index(flag) + 1])
    return sizes


def pretrain(world: Path, steps: int, extra: list[str], threads: int, log: Path) -> Path:
    """The untuned model: the tiny preset on the world's GRIT alone (square images, every sample grounded), with
    ``extra`` flags (STUDY_PRETRAIN_ARGS)."""
    run = world / "run_untuned"
    if not (run / "done").exists():
        run_logged(KOSMOS + ["train", "--data", world / "grit", "--output", run, "--preset", "tiny", "--steps", steps,
                             "--threads", threads, "--loader-workers", "1", "--log-every", "250",
                             "--checkpoint-every", "2500", *DATA_ARGS, *extra]
                   + (["--resume"] if (run / "checkpoints" / "latest").exists() else []), log)
        (run / "done").write_text("")
    return run


def instruct(out: Path, world: Path, log: Path) -> tuple[Path, Path]:
    """``grit instruct`` training data from the world's GRIT build (defaults: one pair of each task per record),
    and the held-out questions: the held-out images' GRIT build, one "What is it" question per record."""
    train = out / "instruct_train"
    if not (train / "_run.json").exists() or not list(train.glob("*.done")):
        run_logged(GRIT + ["instruct", "--input", world / "grit", "--output", train, "--engine", "local",
                           "--no-progress"], log)
    heldout_grit, questions = out / "heldout_grit", out / "heldout_questions"
    if not list(heldout_grit.glob("*.done")):
        run_logged(GRIT + ["run", "--input", world / "heldout", "--output", heldout_grit, "--engine", "local",
                           "--detector", "demo", "--no-progress"], log)
    if not list(questions.glob("*.done")):
        run_logged(GRIT + ["instruct", "--input", heldout_grit, "--output", questions, "--engine", "local",
                           "--no-progress", "--templates", "what_is_it", "--expression-to-box", "0",
                           "--box-to-expression", "1"], log)
    return train, questions


def tune(out: Path, name: str, model: Path, world: Path, train: Path, extra: list[str], threads: int,
         log: Path) -> Path:
    """``kosmos train --recipe instruct --init MODEL``: the world's GRIT pairs + its ``grit instruct`` data."""
    run = out / name
    if not (run / "done").exists():
        run_logged(KOSMOS + ["train", "--recipe", "instruct", "--init", model, "--output", run,
                             "--data", world / "grit", "--mix", f"grit_instruct={train}", "--threads", threads,
                             "--loader-workers", "1", "--log-every", "25", "--checkpoint-every", "500",
                             *DATA_ARGS, *extra]
                   + (["--resume"] if (run / "checkpoints" / "latest").exists() else []), log)
        (run / "done").write_text("")
    return run


def named_words(text: str) -> tuple[set[str], set[str]]:
    """The colours and shapes (singular) a text names, in the world's vocabulary."""
    from grit_pipeline.synth.vocab import COLOURS, PLURAL, SHAPES, tokenize

    singular = {plural: shape for shape, plural in PLURAL.items()} | {s: s for s in SHAPES}
    words = tokenize(text)
    return {w for w in words if w in COLOURS}, {singular[w] for w in words if w in singular}


def heldout_questions(questions: Path, truth_dir: Path) -> list[dict]:
    """Each held-out question with its image (PIL) and the truth colour/shape of the object its box overlaps most."""
    import io

    import pyarrow.parquet as pq
    import torch
    from PIL import Image
    from torchvision.ops import box_iou

    from grit_pipeline.evaluate import load_truth

    truth = load_truth(truth_dir)
    items = []
    for index in sorted(questions.glob("*.parquet")):
        if index.name.endswith("_rejects.parquet"):
            continue
        rows = [r for r in pq.read_table(index).to_pylist() if r["task"] == "box_to_expression"]
        with tarfile.open(index.with_suffix(".tar")) as tar:
            images = {Path(m.name).stem: tar.extractfile(m).read() for m in tar.getmembers()
                      if m.name.endswith(".jpg")}
        for row in rows:
            objects = truth[row["key"]]["objects"]
            iou = box_iou(torch.tensor(row["boxes"][:1]), torch.tensor([o["box"] for o in objects]))[0]
            best = int(iou.argmax())
            colours, shapes = named_words(objects[best]["label"])
            items.append({"key": row["key"], "question": row["instruction"], "expression": row["expression"],
                          "image": Image.open(io.BytesIO(images[row["key"]])).convert("RGB"),
                          "colour": colours, "shape": shapes, "box_iou": float(iou[best])})
    return items


def score_answer(text: str, item: dict) -> dict:
    """Whether ``text`` names exactly the item's colour, exactly its shape, and both."""
    colours, shapes = named_words(text)
    right = {"colour": colours == item["colour"], "shape": shapes == item["shape"]}
    return {**right, "colour_and_shape": right["colour"] and right["shape"]}


def accuracy(scored: list[dict]) -> dict:
    return {f"{name}_accuracy": round(100.0 * sum(s[name] for s in scored) / len(scored), 2)
            for name in ("colour", "shape", "colour_and_shape")}


def own_caption(model, processor, image) -> str:
    """The model's grounded caption of ``image`` (the pre-training prompt ``<grounding>``, greedy): the first
    phrase's words, i.e. what the model itself names in the image."""
    import torch

    from kosmos.chat import parse_answer
    from kosmos.sequence import Image, SequenceEncoder, Text

    encoder = SequenceEncoder(processor, model.config.latent_query_num, model.config.vision_config.image_size,
                              "square")
    row = encoder.encode([Image(encoder.pixels(image)[0]), Text("<grounding>", train=False)], add_eos=False)
    inputs = {name: row[name].unsqueeze(0) for name in ("input_ids", "attention_mask", "image_embeds_position_mask")}
    with torch.no_grad():
        output = model.generate(**inputs, pixel_values=row["pixel_values"], max_new_tokens=24, do_sample=False,
                                num_beams=1, pad_token_id=processor.tokenizer.pad_token_id,
                                eos_token_id=processor.tokenizer.eos_token_id)
    raw = processor.batch_decode(output[:, inputs["input_ids"].size(1):], skip_special_tokens=True)[0]
    entities = parse_answer(raw.strip()).entities
    return entities[0][0] if entities else parse_answer(raw.strip()).text


def box_to_expression(model_dir: Path, items: list[dict], threads: int) -> dict:
    """Greedy answers to the held-out questions (``kosmos chat``'s code path and template) scored for colour and
    shape; beside them the same scores of the model's own caption of each image (what it can name at all)."""
    import torch

    from kosmos.chat import answer
    from kosmos.predict import load_model

    torch.set_num_threads(threads)
    model, processor = load_model(str(model_dir), torch.device("cpu"))
    answers, captions = [], []
    for item in items:
        reply = answer(model, processor, item["image"], item["question"], max_new_tokens=24)
        caption = own_caption(model, processor, item["image"])
        answers.append({"key": item["key"], "truth": item["expression"], "answer": reply.raw,
                        **score_answer(reply.text, item), "own_caption": caption,
                        "own_caption_right": score_answer(caption, item)})
        captions.append(answers[-1]["own_caption_right"])
    return {"boxes": len(items), **accuracy(answers),
            "empty_answers": sum(1 for a in answers if not a["answer"]),
            "own_caption": accuracy(captions), "examples": answers[:5], "answers": answers}


def rec(model_dir: Path, world: Path, out: Path, threads: int, log: Path) -> dict:
    """``kosmos predict rec`` + ``kosmos score rec`` on the held-out images."""
    refcoco = world / "refcoco_heldout" / "finetune_refcoco_val.json"
    predictions = out / "rec_predictions.jsonl"
    predictions.parent.mkdir(parents=True, exist_ok=True)
    run_logged(KOSMOS + ["predict", "rec", "--model", model_dir, "--images", refcoco.parent / "images",
                         "--annotations", refcoco, "--output", predictions, "--threads", threads], log)
    score = subprocess.run([str(a) for a in KOSMOS + ["score", "rec", "--predictions", predictions,
                                                      "--annotations", refcoco]],
                           capture_output=True, text=True, check=True, env=ENV)
    result = json.loads(score.stdout.strip().splitlines()[-1])
    return {"accuracy": round(result["accuracy_pct"], 2), "total": result["total"], "no_box": result["no_box"]}


def final_model(run: Path) -> Path:
    """A training output's final model: its latest checkpoint's ``model/``."""
    from kosmos.checkpoint import latest_checkpoint

    return latest_checkpoint(run / "checkpoints") / "model"


def log_summary(run: Path) -> dict:
    from kosmos.train import read_log

    entries = read_log(run)
    first, last = entries[0], entries[-1]
    return {"steps": last["step"], "lr_peak": max(e["lr"] for e in entries),
            "first_logged": {k: first.get(k) for k in ("step", "loss", "text_loss", "loc_loss")},
            "last_logged": {k: last.get(k) for k in ("step", "loss", "text_loss", "loc_loss")},
            "last_per_source": {s: {k: v.get(k) for k in ("loss", "text_loss", "loc_loss")}
                                for s, v in last.get("sources", {}).items()}}


def main() -> int:
    out = Path(os.environ.get("STUDY_DIR", "e2e_out/instruct_study")).resolve()
    world = Path(os.environ.get("STUDY_WORLD", str(out / "world"))).resolve()
    threads = int(os.environ.get("STUDY_THREADS", "1"))
    tune_args = shlex.split(os.environ.get("STUDY_TUNE_ARGS", DEFAULT_TUNE_ARGS))
    out.mkdir(parents=True, exist_ok=True)
    log = out / "study.log"
    print(f"[study] in {out}; every command's output goes to {log}", file=sys.stderr, flush=True)
    build_world(world, int(os.environ.get("STUDY_TRAIN_IMAGES", str(DEFAULT_TRAIN_IMAGES))),
                int(os.environ.get("STUDY_HELDOUT_IMAGES", str(DEFAULT_HELDOUT_IMAGES))), log)
    if os.environ.get("STUDY_MODEL"):
        untuned = Path(os.environ["STUDY_MODEL"]).resolve()
    else:
        steps = int(os.environ.get("STUDY_PRETRAIN_STEPS", str(DEFAULT_PRETRAIN_STEPS)))
        extra = shlex.split(os.environ.get("STUDY_PRETRAIN_ARGS", DEFAULT_PRETRAIN_ARGS))
        vision_steps = int(os.environ.get("STUDY_VISION_STEPS", str(DEFAULT_VISION_STEPS)))
        if vision_steps:
            sizes = pretrain_sizes(extra)
            extra += ["--vision-init", str(pretrain_vision(world, sizes, vision_steps, threads)),
                      "--freeze-vision", "all-but-last"]
        untuned = final_model(pretrain(world, steps, extra, threads, log))
    train, questions = instruct(out, world, log)
    items = heldout_questions(questions, world / "heldout" / "truth")
    models = {"untuned": untuned}
    for name, extra in (("recipe_defaults", []), ("tuned", tune_args)):
        models[name] = final_model(tune(out, name, untuned, world, train, extra, threads, log))
    results: dict = {"untuned_model": str(untuned), "tune_args": shlex.join(tune_args),
                     "heldout_boxes": len(items),
                     "heldout_box_iou_min": round(min(i["box_iou"] for i in items), 3)}
    for name, model in models.items():
        print(f"[study] evaluating {name} ({model})", file=sys.stderr, flush=True)
        evaluation = box_to_expression(model, items, threads)
        (out / f"{name}_answers.jsonl").write_text(
            "".join(json.dumps(a) + "\n" for a in evaluation.pop("answers")))
        results[name] = {"box_to_expression": evaluation, "rec": rec(model, world, out / name, threads, log)}
        if name != "untuned":
            results[name]["training"] = log_summary(out / name)
    tuned, before = results["tuned"], results["untuned"]
    results["target_met"] = (tuned["box_to_expression"]["colour_and_shape_accuracy"] >= 80.0
                             and tuned["rec"]["accuracy"] >= before["rec"]["accuracy"])
    (out / "study.json").write_text(json.dumps(results, indent=2))
    print(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
