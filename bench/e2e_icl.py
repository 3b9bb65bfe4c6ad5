"""``make e2e-icl``: in-context learning at small scale on CPU, as a benchmark (not a test).

A fast-binding task (Frozen, Tsimpoukelli et al. 2021). In each episode two nonsense names are bound to two kinds
of object in context, and a query image is to be named::

    [image] This is a dax [image] This is a blicket [image] This is a blicket [image] This is a dax
    [query image] Question: What is this? Answer: dax

The names are drawn anew from a pool for every episode, and so are the two kinds (a shape and a colour of grit's
synthetic world, different shapes and different colours), so nothing but the context tells which name is meant.
Images are one-object level-1 scenes of ``grit_pipeline.synth`` (background, position, size and rotation vary)
with the episode's shape and colour.

1. Training documents are written as webdataset documents (``KEY.json`` = ``{"texts", "images"}``, images as
   ``KEY.img0.jpg`` ...), the mixture's ``interleaved`` source: episodes; a share of one-image captions ("A red
   circle.", so that the image features learn colours and shapes); and a share of the same episodes in words, each
   image replaced by its description ("A red circle. This is a dax ..."), from which the decoder learns the binding
   itself on tokens it can already tell apart.
2. ``kosmos train --mix interleaved=...`` trains the tiny preset from scratch at 32-pixel images in 16-pixel
   patches (``--image-size 32 --patch-size 16``: the linear connector's 5 slots per image, so five images take 35
   of the 256 positions) for a time budget, keeping a checkpoint every few hundred steps.
3. Every checkpoint is evaluated on held-out episodes (new renders): the two names are ranked by log-likelihood
   after the prompt (``kosmos.evaluate.rank``, the registry's ranker), 2-way with 2 examples of each name in
   context, and zero-shot (the query image and the question alone).

Prints and writes ``OUT/icl.json``: the training loss curve, few-shot and zero-shot accuracy per checkpoint,
the time of every stage and the machine's load average. Rerunning reuses the episodes and, unless
ICL_FRESH=1, the trained run.

Settings (environment): ICL_DIR (e2e_out/icl), ICL_MINUTES (training budget, 12), ICL_TRAIN_EPISODES (20000),
ICL_EVAL_EPISODES (200), ICL_RENDERS (40: renders of each shape and colour the training episodes draw from; the
held-out episodes draw from their own renders), ICL_BATCH (32), ICL_LR (1e-3), ICL_CHECKPOINT_EVERY (500),
ICL_THREADS (1), ICL_CAPTIONS (0.3: the share of one-image caption documents), ICL_WORDS (0.3: the share of
episodes in words), ICL_SHOTS (examples of each name in context, 2), ICL_CONNECTOR (linear), ICL_IMAGE_SIZE (32),
ICL_PATCH_SIZE (16), ICL_NAMES (how many of ``NAMES`` the episodes draw from, 2: dax and blicket, bound anew in
every episode), ICL_SEED (0), ICL_TRAIN_ARGS (more ``kosmos train`` flags), ICL_FRESH (1: train again).
"""
from __future__ import annotations

import io
import json
import os
import random
import subprocess
import sys
import tarfile
import time
from pathlib import Path

# Nonsense words (Frozen's dax and blicket, then more of the same kind); an episode draws two of them.
NAMES = ("dax", "blicket", "wug", "toma", "fep", "zup", "kiki", "bouba", "gazzer", "modi", "tufa", "pilk", "jop",
         "mib", "voz", "lorp", "snib", "quax", "yalp", "zorb", "teebu", "glorp", "nefa", "plonk", "rulo", "sarf",
         "tasp", "vunk", "wozzle", "yimbo", "zeppo", "blick", "crunda", "drif", "frabble", "gimp", "hoob", "jirk",
         "kalp", "mulx")
QUESTION = "Question: What is this? Answer:"
DEMONSTRATION = "This is a {name}"
IMAGE_SIZE = 64          # renders are stored at this size; the encoder resizes them to the model's (ICL_IMAGE_SIZE)


def _env(name: str, default):
    value = os.environ.get(name, default)
    try:
        return type(default)(value)
    except ValueError:
        raise SystemExit(f"[icl] {name} must be a {type(default).__name__}, got {value!r}") from None


WAYS, SHOTS = 2, _env("ICL_SHOTS", 2)


# ----------------------------------------------------------------------------------------------- episodes

def render(rng: random.Random, shape: str, colour: str) -> bytes:
    """A one-object level-1 scene of grit's synthetic world with the given shape and colour, as a JPEG."""
    from grit_pipeline.synth.scene import random_scene, render_scene

    scene = random_scene(rng, level=1)
    obj = scene.objects[0]
    obj.shape, obj.colour = shape, colour
    # large enough to stay recognisable at 64 pixels: radius 18-30% of the short side, kept inside the image
    short = min(scene.width, scene.height)
    obj.radius = short * rng.uniform(0.18, 0.30)
    obj.centre = (rng.uniform(obj.radius, scene.width - obj.radius), rng.uniform(obj.radius, scene.height - obj.radius))
    image = render_scene(scene).resize((IMAGE_SIZE, IMAGE_SIZE))
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", quality=90)
    return buffer.getvalue()


def image_bank(tag: str, per_kind: int) -> dict[tuple[str, str], list[bytes]]:
    """``per_kind`` renders of every (shape, colour) kind; ``tag`` seeds them (training and held-out banks differ)."""
    from grit_pipeline.synth.vocab import COLOURS, SHAPES

    return {(shape, colour): [render(random.Random(f"{tag}/{shape}/{colour}/{n}"), shape, colour)
                              for n in range(per_kind)]
            for shape in SHAPES for colour in sorted(COLOURS)}


def episode(rng: random.Random, bank: dict, ways: int = WAYS, shots: int = SHOTS) -> dict:
    """One episode: ``ways`` names bound to kinds (distinct shapes, distinct colours), ``shots`` context images of
    each in random order, and a query of one of them (another render of its kind). Images are JPEG bytes."""
    from grit_pipeline.synth.vocab import COLOURS, SHAPES

    names = rng.sample(NAMES[:_env("ICL_NAMES", 2)], ways)
    kinds = list(zip(rng.sample(SHAPES, ways), rng.sample(sorted(COLOURS), ways)))
    answer = rng.randrange(ways)
    renders = {kind: rng.sample(bank[kind], shots + (kind == kinds[answer])) for kind in kinds}
    context = [(name, renders[kind][n]) for name, kind in zip(names, kinds) for n in range(shots)]
    rng.shuffle(context)
    return {"names": names, "kinds": kinds, "answer": answer, "context": context, "query": renders[kinds[answer]][-1]}


def describe(kind: tuple[str, str]) -> str:
    """A kind (shape, colour) in words, as the caption documents write it: "A red circle."."""
    return f"A {kind[1]} {kind[0]}."


def episode_document(ep: dict, in_words: bool = False) -> tuple[dict, list[bytes]]:
    """An episode as an OBELICS-style document (Frozen's order: each image before its sentence); ``in_words``:
    every image replaced by its description, a text-only document."""
    kind_of = dict(zip(ep["names"], ep["kinds"]))
    texts, images, data = [], [], []

    def add(image: bytes, kind: tuple[str, str], sentence: str):
        if in_words:
            texts.extend([describe(kind), sentence])
            images.extend([None, None])
            return
        texts.extend([None, sentence])
        images.extend([f"img{len(data)}.jpg", None])
        data.append(image)

    for name, image in ep["context"]:
        add(image, kind_of[name], DEMONSTRATION.format(name=name))
    answer = ep["names"][ep["answer"]]
    add(ep["query"], kind_of[answer], f"{QUESTION} {answer}")
    return {"texts": texts, "images": images}, data


def write_training_tars(folder: Path, episodes: int, seed: int, bank: dict, captions: float = 0.0,
                        words: float = 0.0, per_tar: int = 5000) -> list[str]:
    """Training documents as webdataset tars (``KEY.json`` + ``KEY.img0.jpg`` ...), the interleaved source's form:
    episodes, a share ``captions`` of one-image documents captioned with the object's colour and shape, and a
    share ``words`` of episodes with every image replaced by its description."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for shard, start in enumerate(range(0, episodes, per_tar)):
        path = folder / f"episodes-{shard:04d}.tar"
        paths.append(str(path))
        if path.exists():
            continue
        tmp = path.with_suffix(".tar.tmp")
        with tarfile.open(tmp, "w") as tar:
            for index in range(start, min(episodes, start + per_tar)):
                rng = random.Random(f"train/{seed}/{index}")
                draw = rng.random()
                if draw < captions:  # an image-caption document: "[image] A red circle."
                    kind = rng.choice(sorted(bank))
                    document, images = {"texts": [None, describe(kind)], "images": ["img0.jpg", None]}, \
                        [rng.choice(bank[kind])]
                else:
                    document, images = episode_document(episode(rng, bank), in_words=draw < captions + words)
                key = f"{index:08d}"
                members = [(f"{key}.json", json.dumps(document).encode())]
                members += [(f"{key}.img{i}.jpg", image) for i, image in enumerate(images)]
                for name, payload in members:
                    info = tarfile.TarInfo(name)
                    info.size = len(payload)
                    tar.addfile(info, io.BytesIO(payload))
        os.replace(tmp, path)
    return paths


def write_eval_episodes(folder: Path, episodes: int, seed: int, bank: dict) -> list[dict]:
    """Held-out episodes (images rendered from another seed) as image files + ``episodes.jsonl``."""
    listing = folder / "episodes.jsonl"
    if listing.exists():
        return [json.loads(line) for line in listing.read_text().splitlines()]
    out = []
    for index in range(episodes):
        ep = episode(random.Random(f"eval/{seed}/{index}"), bank)
        files = []
        for n, (_, image) in enumerate(ep["context"] + [(None, ep["query"])]):
            path = folder / f"{index:05d}_{n}.jpg"
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(image)
            files.append(str(path))
        out.append({"id": index, "names": ep["names"], "answer": ep["answer"], "kinds": ep["kinds"],
                    "context": [[name, f] for (name, _), f in zip(ep["context"], files)], "query": files[-1]})
    listing.write_text("".join(json.dumps(e) + "\n" for e in out))
    return out


def rank_items(episodes: list[dict], shots: bool):
    """The registry's rank items: the episode's names ranked after (context,) query image and question."""
    from kosmos.evaluate.rank import Option, RankItem

    items = []
    for ep in episodes:
        context = ()
        if shots:
            for name, path in ep["context"]:
                context += (("image", path), ("text", DEMONSTRATION.format(name=name)))
        context += (("image", ep["query"]), ("text", QUESTION))
        items.append(RankItem(ep["id"], [Option(context, " " + name) for name in ep["names"]]))
    return items


def accuracy(model, processor, episodes: list[dict], shots: bool) -> float:
    from kosmos.evaluate.rank import rank

    hits = 0
    for episode_, result in zip(episodes, rank(model, processor, rank_items(episodes, shots))):
        lls = result["loglikelihoods"]
        hits += max(range(len(lls)), key=lambda i: (lls[i], -i)) == episode_["answer"]
    return round(100 * hits / len(episodes), 1)


# ----------------------------------------------------------------------------------------------- the run

def load_average() -> list[float]:
    return [round(v, 2) for v in os.getloadavg()]


def main() -> int:
    import torch

    out = Path(_env("ICL_DIR", "e2e_out/icl")).resolve()
    minutes = _env("ICL_MINUTES", 12.0)
    train_episodes, eval_episodes = _env("ICL_TRAIN_EPISODES", 20000), _env("ICL_EVAL_EPISODES", 200)
    seed, threads = _env("ICL_SEED", 0), _env("ICL_THREADS", 1)
    torch.set_num_threads(threads)
    timings, loads = {}, {"start": load_average()}
    started = time.perf_counter()

    renders = _env("ICL_RENDERS", 40)
    tars = write_training_tars(out / "train", train_episodes, seed, image_bank(f"train/{seed}", renders),
                               _env("ICL_CAPTIONS", 0.3), _env("ICL_WORDS", 0.3))
    episodes = write_eval_episodes(out / "eval", eval_episodes, seed, image_bank(f"eval/{seed}", SHOTS + 1))
    timings["episodes_s"] = round(time.perf_counter() - started, 1)
    print(f"[icl] {train_episodes} training episodes in {len(tars)} tars, {len(episodes)} held-out episodes "
          f"({timings['episodes_s']} s)", file=sys.stderr, flush=True)

    run = out / "run"
    if _env("ICL_FRESH", 0) or not (run / "checkpoints").is_dir():
        argv = [sys.executable, "-m", "kosmos.cli", "train", "--output", str(run), "--overwrite", "--preset", "tiny",
                "--connector", _env("ICL_CONNECTOR", "linear"), "--image-size", str(_env("ICL_IMAGE_SIZE", 32)),
                # the documented figures' settings (tiny's defaults before sincos2d and the late lr decay)
                "--location-embedding-init", "random", "--decay-fraction", "1",
                "--patch-size", str(_env("ICL_PATCH_SIZE", 16)),
                "--mix", "interleaved=" + ",".join(tars) + f":{_env('ICL_BATCH', 32)}", "--sequence-length", "256",
                "--max-images-per-sequence", str(WAYS * SHOTS + 1), "--image-mode", "square",
                "--lr", str(_env("ICL_LR", 1e-3)),
                "--steps", "1000000", "--max-minutes", str(minutes), "--threads", str(threads),
                "--checkpoint-every", str(_env("ICL_CHECKPOINT_EVERY", 500)), "--keep-checkpoints", "1000",
                "--log-every", "25", "--device", "cpu", "--seed", str(seed)]
        argv += os.environ.get("ICL_TRAIN_ARGS", "").split()
        print(f"[icl] $ {' '.join(argv)}", file=sys.stderr, flush=True)
        train_started = time.perf_counter()
        env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
        with open(out / "train.log", "w") as log:
            code = subprocess.run(argv, stdout=log, stderr=subprocess.STDOUT, env=env).returncode
        if code != 0:
            raise SystemExit(f"[icl] kosmos train failed ({code}); see {out / 'train.log'}")
        timings["train_s"] = round(time.perf_counter() - train_started, 1)
    loads["after_training"] = load_average()

    from kosmos.evaluate.model import load_model

    log_lines = [json.loads(l) for l in (run / "train_log.jsonl").read_text().splitlines() if l.strip()]
    loss_curve = [{"step": e["step"], "loss": round(e["loss"], 3)} for e in log_lines if "loss" in e and "step" in e]
    checkpoints = sorted((p for p in (run / "checkpoints").iterdir() if p.is_dir() and (p / "model").is_dir()),
                         key=lambda p: int("".join(c for c in p.name if c.isdigit()) or 0))
    eval_started = time.perf_counter()
    curve = []
    for checkpoint in checkpoints:
        model, processor = load_model(str(checkpoint), torch.device("cpu"))
        step = int("".join(c for c in checkpoint.name if c.isdigit()) or 0)
        point = {"step": step, "few_shot": accuracy(model, processor, episodes, True),
                 "zero_shot": accuracy(model, processor, episodes, False)}
        curve.append(point)
        print(f"[icl] step {step}: {WAYS}-way {SHOTS}-shot {point['few_shot']}%, zero-shot {point['zero_shot']}%",
              file=sys.stderr, flush=True)
    timings["eval_s"] = round(time.perf_counter() - eval_started, 1)
    timings["total_s"] = round(time.perf_counter() - started, 1)
    loads["end"] = load_average()
    final = curve[-1] if curve else {}
    result = {"task": f"fast binding, {WAYS}-way, {SHOTS} examples of each name in context",
              "names": _env("ICL_NAMES", 2), "caption_share": _env("ICL_CAPTIONS", 0.3),
              "words_share": _env("ICL_WORDS", 0.3), "connector": _env("ICL_CONNECTOR", "linear"),
              "image_size": _env("ICL_IMAGE_SIZE", 32), "patch_size": _env("ICL_PATCH_SIZE", 16),
              "batch": _env("ICL_BATCH", 32), "lr": _env("ICL_LR", 1e-3),
              "train_episodes": train_episodes, "eval_episodes": len(episodes), "minutes_budget": minutes,
              "threads": threads, "few_shot_accuracy": final.get("few_shot"),
              "zero_shot_accuracy": final.get("zero_shot"), "curve": curve, "loss_curve": loss_curve,
              "timings": timings, "load_average": loads, "cpu_count": os.cpu_count()}
    (out / "icl.json").write_text(json.dumps(result, indent=1))
    print(json.dumps(result, indent=1))
    return 0


def run() -> dict:
    """``python -m bench``-style entry (not named bench_*: it trains for ICL_MINUTES, so ``make bench`` skips it)."""
    main()
    return json.loads((Path(_env("ICL_DIR", "e2e_out/icl")).resolve() / "icl.json").read_text())


if __name__ == "__main__":
    sys.exit(main())
