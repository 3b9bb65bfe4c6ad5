"""Train the demo detector (``grit_pipeline/detectors/demo.py``, its network ``demo_model.py``) on the synthetic
world, on the CPU.

Read top to bottom: build a training set of synthetic scenes (JPEG round trip, 128x128), then a plain
AdamW loop with a cosine schedule. Targets, FCOS-style: the grid cells near an object's centre regress its
box and align with every phrase that names it; all other (cell, phrase) pairs are negatives, including
absent things, pronouns, backgrounds and hard negatives (right shape, wrong colour and vice versa).

``python -m grit_pipeline.detectors.demo_train --output grit_pipeline/data/demo_detector.pt`` (``make demo-detector``).
"""
from __future__ import annotations

import argparse
import io
import json
import math
import random
import sys
import time
from multiprocessing import Pool
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torchvision.ops import box_iou, generalized_box_iou_loss

from ..synth.captions import OBJECT
from ..synth.scene import Scene
from ..synth.vocab import COLOURS, COUNT_WORDS, LARGE_WORDS, PLURAL, SHAPES, SMALL_WORDS, article, vocabulary
from ..synth.writer import make_sample
from .demo_model import INPUT_SIZE, DemoGroundingModel, WordVocabulary, save_checkpoint

MAX_OBJECTS = 5
MAX_PHRASES = 12
TRAIN_SEED = 1000          # the world the shipped checkpoint was trained on; benchmarks use other seeds


def _extra_phrases(rng: random.Random, scene: Scene) -> list[tuple[str, list[int]]]:
    """Hard negatives (absent shape/colour combos) and re-worded positives."""
    present = {(o.shape, o.colour) for o in scene.objects}
    out: list[tuple[str, list[int]]] = []
    for _ in range(3):
        ref = rng.choice(scene.objects) if scene.objects else None
        shape = ref.shape if ref and rng.random() < 0.5 else rng.choice(SHAPES)
        colour = ref.colour if ref and rng.random() < 0.5 else rng.choice(list(COLOURS))
        if (shape, colour) in present:
            continue
        if rng.random() < 0.3:
            out.append((f"{rng.choice(['two', 'the', 'some'])} {colour} {PLURAL[shape]}", []))
        else:
            size = rng.choice(["", "", rng.choice(SMALL_WORDS + LARGE_WORDS) + " "])
            out.append((f"{article(size or colour)} {size}{colour} {shape}", []))
    # the hardest negatives: the colour of one object with the shape of another ("a blue circle" beside a
    # red circle and a blue square), so the alignment must bind colour and shape together
    crosses = sorted({(a.colour, b.shape) for a in scene.objects for b in scene.objects
                      if (b.shape, a.colour) not in present})
    for colour, shape in rng.sample(crosses, min(3, len(crosses))):
        out.append((f"{rng.choice(['a', 'the'])} {colour} {shape}", []))
    if scene.objects:
        group = rng.choice(scene.objects).group
        members = [i for i, o in enumerate(scene.objects) if o.group == group]
        o = scene.objects[members[0]]
        if len(members) > 1:
            out.append((f"{rng.choice(['', 'the ', COUNT_WORDS[len(members)] + ' '])}{o.colour} {PLURAL[o.shape]}", members))
        else:
            out.append((f"{rng.choice(['the', 'a', 'one'])} {o.colour} {o.shape}", members))
    return out


def _training_example(args: tuple[int, int]) -> tuple[np.ndarray, np.ndarray, list[tuple[str, list[int]]]]:
    seed, index = args
    sample = make_sample(seed, index)
    image = Image.open(io.BytesIO(sample.jpeg)).convert("RGB").resize((INPUT_SIZE, INPUT_SIZE), Image.BILINEAR)
    boxes = np.array([o.box for o in sample.scene.objects], dtype=np.float32).reshape(-1, 4)
    text = sample.caption.text
    phrases = [(text[m.span[0]:m.span[1]], m.objects if m.kind == OBJECT else [])
               for m in sample.caption.mentions]
    rng = random.Random(f"extra:{seed}:{index}")
    phrases += _extra_phrases(rng, sample.scene)
    rng.shuffle(phrases)
    return np.asarray(image).transpose(2, 0, 1).copy(), boxes, phrases[:MAX_PHRASES]


def build_dataset(n: int, seed: int, vocab: WordVocabulary, workers: int = 2) -> dict[str, torch.Tensor]:
    """n synthetic scenes as padded tensors: pixels, boxes (+valid), phrase word ids, phrase->object links."""
    with Pool(workers) as pool:
        examples = pool.map(_training_example, [(seed, i) for i in range(n)], chunksize=64)
    pixels = torch.from_numpy(np.stack([e[0] for e in examples]))
    boxes = torch.zeros((n, MAX_OBJECTS, 4))
    box_valid = torch.zeros((n, MAX_OBJECTS), dtype=torch.bool)
    words = torch.zeros((n, MAX_PHRASES, 8), dtype=torch.long)
    phrase_valid = torch.zeros((n, MAX_PHRASES), dtype=torch.bool)
    links = torch.zeros((n, MAX_PHRASES, MAX_OBJECTS), dtype=torch.bool)
    for i, (_, b, phrases) in enumerate(examples):
        boxes[i, :len(b)] = torch.from_numpy(b)
        box_valid[i, :len(b)] = True
        for p, (text, objects) in enumerate(phrases):
            ids = vocab.encode(text)[:8]
            words[i, p, :len(ids)] = torch.tensor(ids)
            phrase_valid[i, p] = True
            for o in objects:
                links[i, p, o] = True
    return {"pixels": pixels, "boxes": boxes, "box_valid": box_valid, "words": words,
            "phrase_valid": phrase_valid, "links": links}


def _flip(batch: dict[str, torch.Tensor], generator: torch.Generator) -> dict[str, torch.Tensor]:
    """Random horizontal and vertical flips (phrases name no left/right, so they stay true)."""
    pixels, boxes = batch["pixels"].clone(), batch["boxes"].clone()
    for dim, (lo, hi) in ((3, (0, 2)), (2, (1, 3))):
        flip = torch.rand(pixels.shape[0], generator=generator) < 0.5
        pixels[flip] = pixels[flip].flip(dim)
        lo_new = 1 - boxes[flip][..., hi]
        hi_new = 1 - boxes[flip][..., lo]
        b = boxes[flip]
        b[..., lo], b[..., hi] = lo_new, hi_new
        boxes[flip] = b
    return {**batch, "pixels": pixels, "boxes": boxes}


def assign_cells(boxes: torch.Tensor, valid: torch.Tensor, grid: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Each grid cell near an object's centre is assigned that object (the smallest one if several).
    Returns (assigned object index [B,N], positive mask [B,N])."""
    centres = (torch.arange(grid, dtype=torch.float32) + 0.5) / grid
    cy, cx = torch.meshgrid(centres, centres, indexing="ij")
    cx, cy = cx.flatten(), cy.flatten()                                     # [N]
    bx = (boxes[..., 0] + boxes[..., 2]) / 2
    by = (boxes[..., 1] + boxes[..., 3]) / 2
    w = boxes[..., 2] - boxes[..., 0]
    h = boxes[..., 3] - boxes[..., 1]
    rx = torch.clamp(0.2 * w, min=0.75 / grid)[..., None]
    ry = torch.clamp(0.2 * h, min=0.75 / grid)[..., None]
    inside = ((cx - bx[..., None]).abs() <= rx) & ((cy - by[..., None]).abs() <= ry) & valid[..., None]  # [B,O,N]
    cost = torch.where(inside, (w * h)[..., None], torch.full_like(inside, math.inf, dtype=torch.float32))
    best, assigned = cost.min(dim=1)
    return assigned, torch.isfinite(best)


def losses(model: DemoGroundingModel, batch: dict[str, torch.Tensor], pos_weight: float) -> dict[str, torch.Tensor]:
    pixels = batch["pixels"].float() / 255.0
    regions, pred_boxes = model.image_features(pixels)
    b, n, _ = regions.shape
    grid = int(round(math.sqrt(n)))
    assigned, positive = assign_cells(batch["boxes"], batch["box_valid"], grid)
    words = batch["words"]
    p = words.shape[1]
    phrase_emb = model.phrase_features(words.view(b * p, -1)).view(b, p, -1)
    logits = model.align(regions, phrase_emb)                                # [B,P,N]
    linked = torch.gather(batch["links"], 2, assigned[:, None, :].expand(b, p, n))  # phrase names cell's object
    target = (linked & positive[:, None, :]).float()
    weight = batch["phrase_valid"][..., None].float().expand_as(target)
    bce = F.binary_cross_entropy_with_logits(logits, target, weight=weight,
                                             pos_weight=torch.tensor(pos_weight), reduction="sum")
    score_loss = bce / weight.sum().clamp(min=1) * 50.0
    target_boxes = torch.gather(batch["boxes"], 1, assigned[..., None].expand(b, n, 4))
    if positive.any():
        pb, tb = pred_boxes[positive], target_boxes[positive]
        box_loss = generalized_box_iou_loss(pb, tb, reduction="mean") + 2.0 * F.l1_loss(pb, tb)
    else:
        box_loss = pred_boxes.sum() * 0.0
    return {"score": score_loss, "box": box_loss, "total": score_loss + box_loss}


@torch.no_grad()
def quick_eval(model: DemoGroundingModel, data: dict[str, torch.Tensor], threshold: float = 0.65) -> dict:
    """Best-cell check per phrase: does a named object get its box above threshold; do negatives stay below."""
    model.eval()
    hits = named = neg_above = negs = 0
    for start in range(0, data["pixels"].shape[0], 64):
        batch = {k: v[start:start + 64] for k, v in data.items()}
        regions, boxes = model.image_features(batch["pixels"].float() / 255.0)
        b, n, _ = regions.shape
        p = batch["words"].shape[1]
        scores = torch.sigmoid(model.align(regions, model.phrase_features(batch["words"].view(b * p, -1)).view(b, p, -1)))
        for i in range(b):
            for j in range(p):
                if not batch["phrase_valid"][i, j]:
                    continue
                objects = batch["links"][i, j].nonzero().flatten()
                top = scores[i, j].argmax()
                if len(objects) == 0:
                    negs += 1
                    neg_above += int(scores[i, j, top] > threshold)
                    continue
                named += 1
                iou = box_iou(boxes[i, top][None], batch["boxes"][i, objects]).max()
                hits += int(scores[i, j, top] > threshold and iou >= 0.5)
    model.train()
    return {"named_top1_hit": round(hits / max(1, named), 4), "negative_above": round(neg_above / max(1, negs), 4)}


def train(output: Path, images: int = 10000, steps: int = 2000, batch_size: int = 32, lr: float = 3e-3,
          seed: int = TRAIN_SEED, pos_weight: float = 10.0, threads: int = 1, log_every: int = 100,
          workers: int = 2) -> dict:
    torch.manual_seed(seed)
    torch.set_num_threads(threads)
    started = time.perf_counter()
    vocab = WordVocabulary(vocabulary())
    print(f"[train] building {images} synthetic scenes (seed {seed}) ...", file=sys.stderr, flush=True)
    data = build_dataset(images, seed, vocab, workers=workers)
    held_out = build_dataset(300, seed + 1, vocab, workers=workers)
    data_s = time.perf_counter() - started
    print(f"[train] data ready in {data_s:.0f}s", file=sys.stderr, flush=True)
    model = DemoGroundingModel(len(vocab))
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=1e-4)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=lr, total_steps=steps, pct_start=0.05)
    generator = torch.Generator().manual_seed(seed)
    model.train()
    for step in range(1, steps + 1):
        index = torch.randint(0, images, (batch_size,), generator=generator)
        batch = _flip({k: v[index] for k, v in data.items()}, generator)
        loss = losses(model, batch, pos_weight)
        optimizer.zero_grad(set_to_none=True)
        loss["total"].backward()
        optimizer.step()
        schedule.step()
        if step % log_every == 0 or step == steps:
            elapsed = time.perf_counter() - started
            line = f"[train] step {step}/{steps} score {loss['score'].item():.4f} box {loss['box'].item():.4f} {elapsed:.0f}s"
            if step % (log_every * 5) == 0 or step == steps:
                line += " " + json.dumps(quick_eval(model, held_out))
                if step < steps:   # a snapshot to look at while training goes on
                    save_checkpoint(output.with_name(output.stem + ".partial.pt"), model, vocab, {"step": step})
            print(line, file=sys.stderr, flush=True)
    model.eval()
    summary = {"images": images, "steps": steps, "batch_size": batch_size, "lr": lr, "seed": seed,
               "pos_weight": pos_weight, "train_s": round(time.perf_counter() - started, 1),
               "data_s": round(data_s, 1), "held_out": quick_eval(model, held_out)}
    save_checkpoint(output, model, vocab, summary)
    output.with_name(output.stem + ".partial.pt").unlink(missing_ok=True)
    summary["output"] = str(output)
    summary["bytes"] = output.stat().st_size
    return summary


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Train the demo detector on the synthetic world (CPU).")
    parser.add_argument("--output", type=Path, default=Path("grit_pipeline/data/demo_detector.pt"))
    parser.add_argument("--images", type=int, default=10000, help="synthetic training scenes")
    parser.add_argument("--steps", type=int, default=2000)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--lr", type=float, default=3e-3)
    parser.add_argument("--seed", type=int, default=TRAIN_SEED)
    parser.add_argument("--pos-weight", type=float, default=10.0)
    # One torch thread: these small convolutions gain little from a second one, and on a shared machine
    # two threads ran 4x slower per step than one (oversubscription); scene building uses --workers.
    parser.add_argument("--threads", type=int, default=1, help="torch threads for training (default 1)")
    parser.add_argument("--workers", type=int, default=2, help="processes building the scenes (default 2)")
    args = parser.parse_args(argv)
    summary = train(args.output, args.images, args.steps, args.batch_size, args.lr, args.seed, args.pos_weight,
                    args.threads, workers=args.workers)
    print(json.dumps(summary, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
