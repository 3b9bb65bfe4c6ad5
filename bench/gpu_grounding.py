"""Grounding throughput (images/s) with full-size detector architectures, batched vs one image at a time.

Random weights cost exactly what trained ones do, so no checkpoint download is needed: each architecture is
built from its config (Grounding DINO tiny = Swin-T + BERT-base, Grounding DINO base = Swin-B + BERT-base,
OWLv2 base = ViT-B/16 at 960 px), saved with save_pretrained, and loaded through the same
``get_detector("hf", model=DIR)`` path users take. Images are JPEG-decoded and preprocessed in DataLoader
worker processes (``ImagePreparer``), batched by aspect ratio, so the GPU never waits on decoding; the JSON
reports the fraction of wall time the GPU loop spent waiting for the loader.

    python -m bench.gpu_grounding                                   # on a GPU: fp16, batch sizes 1..64
    python -m bench.gpu_grounding --device cpu --batch-sizes 1 2 --quick   # smoke test without a GPU
"""
from __future__ import annotations

import argparse
import io
import json
import os
import random
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))  # tests/hf_tiny.py: model builders

MODELS = ("grounding-dino-tiny", "grounding-dino-base", "owlv2-base")
# img2dataset --resize_mode keep_ratio --image_size 512: short side 512, common aspect ratios
IMAGE_SIZES = ((683, 512), (512, 683), (512, 512), (768, 432))
PHRASES = ("a dog", "a red car", "the house", "a man with a hat", "two people", "a small boat", "the sky",
           "a big tree", "a white cup", "a street sign")


# --- architectures ----------------------------------------------------------------------------------------

def model_config(name: str, quick: bool):
    """(family, config, processor image size) for a full-size architecture; quick: lower input resolution."""
    from transformers import BertConfig, GroundingDinoConfig, Owlv2Config, SwinConfig

    if name.startswith("grounding-dino"):
        if name == "grounding-dino-tiny":  # IDEA-Research/grounding-dino-tiny
            backbone = SwinConfig(embed_dim=96, depths=[2, 2, 6, 2], num_heads=[3, 6, 12, 24], window_size=7,
                                  image_size=224, out_indices=[2, 3, 4])
        elif name == "grounding-dino-base":  # IDEA-Research/grounding-dino-base
            backbone = SwinConfig(embed_dim=128, depths=[2, 2, 18, 2], num_heads=[4, 8, 16, 32], window_size=12,
                                  image_size=384, out_indices=[2, 3, 4])
        else:
            raise ValueError(name)
        config = GroundingDinoConfig(backbone_config=backbone, text_config=BertConfig())  # bert-base-uncased
        return "grounding-dino", config, ((320, 533) if quick else (800, 1333))
    if name == "owlv2-base":  # google/owlv2-base-patch16-ensemble
        side = 384 if quick else 960
        config = Owlv2Config(
            text_config=dict(vocab_size=49408, bos_token_id=49406, eos_token_id=49407, pad_token_id=0),
            vision_config=dict(image_size=side, patch_size=16),
        )
        return "owl", config, side
    raise ValueError(f"unknown model {name!r}; choose from {MODELS}")


def build_model_dir(name: str, quick: bool, root: Path) -> Path:
    import hf_tiny

    family, config, size = model_config(name, quick)
    out = root / name
    if family == "grounding-dino":
        return hf_tiny.build_grounding_dino(out, config, image_size=size)
    return hf_tiny.build_owlv2(out, config)


# --- data -------------------------------------------------------------------------------------------------

def synthetic_jpegs(count: int, seed: int = 0) -> list[tuple[bytes, int, list[str]]]:
    """(JPEG bytes, aspect group, phrases) with smooth content and rectangles (compresses like photos)."""
    import numpy as np
    from PIL import Image, ImageDraw

    rng = random.Random(seed)
    out = []
    for i in range(count):
        group = i % len(IMAGE_SIZES)
        width, height = IMAGE_SIZES[group]
        x = np.linspace(0, 1, width)[None, :]
        y = np.linspace(0, 1, height)[:, None]
        base = np.stack([x + 0 * y, y + 0 * x, (x + y) / 2], axis=-1) * rng.uniform(100, 255)
        image = Image.fromarray(base.astype("uint8"))
        draw = ImageDraw.Draw(image)
        for _ in range(6):
            x0, y0 = rng.randrange(width - 40), rng.randrange(height - 40)
            draw.rectangle([x0, y0, x0 + rng.randrange(20, 200), y0 + rng.randrange(20, 200)],
                           fill=tuple(rng.randrange(256) for _ in range(3)))
        buffer = io.BytesIO()
        image.save(buffer, "JPEG", quality=90)
        out.append((buffer.getvalue(), group, rng.sample(PHRASES, 3)))
    return out


class _Samples:
    """Map-style dataset: decode + preprocess one image in a DataLoader worker."""

    def __init__(self, items, preparer):
        self.items, self.preparer = items, preparer

    def __len__(self):
        return len(self.items)

    def __getitem__(self, index):
        from grit_pipeline.images import decode_image

        data, _, phrases = self.items[index]
        return self.preparer(decode_image(data)), phrases


def _collate(items):
    return [image for image, _ in items], [phrases for _, phrases in items]


def aspect_grouped_batches(groups: list[int], batch_size: int, seed: int = 0) -> list[list[int]]:
    """Batches of sample indices that share an aspect-ratio group (full batches only)."""
    rng = random.Random(seed)
    order = list(range(len(groups)))
    rng.shuffle(order)
    pending: dict[int, list[int]] = {}
    batches = []
    for index in order:
        bucket = pending.setdefault(groups[index], [])
        bucket.append(index)
        if len(bucket) == batch_size:
            batches.append(bucket)
            pending[groups[index]] = []
    return batches


# --- measurement ------------------------------------------------------------------------------------------

def measure(detector, items, batch_size: int, batches: int, workers: int, device: str) -> dict:
    """Run ``batches`` timed batches (after one warm-up batch) through a DataLoader; images/s and loader wait."""
    import torch
    from torch.utils.data import DataLoader

    groups = [group for _, group, _ in items]
    plan = aspect_grouped_batches(groups, batch_size)[: batches + 1]
    if len(plan) < batches + 1:
        raise ValueError(f"not enough images for {batches + 1} batches of {batch_size}")
    loader = DataLoader(_Samples(items, detector.preparer()), batch_sampler=plan, num_workers=workers,
                        collate_fn=_collate, prefetch_factor=4 if workers else None,
                        persistent_workers=False)
    detector.batch_size = batch_size
    cuda = device.startswith("cuda")
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    wait = compute = 0.0
    images = 0
    iterator = iter(loader)
    for k in range(len(plan)):
        t0 = time.perf_counter()
        prepared, phrases = next(iterator)
        t1 = time.perf_counter()
        detector.detect(prepared, phrases)
        if cuda:
            torch.cuda.synchronize()
        t2 = time.perf_counter()
        if k:  # batch 0 warms up (kernels, allocator, worker start)
            wait += t1 - t0
            compute += t2 - t1
            images += len(prepared)
    total = wait + compute
    result = {"batch_size": batch_size, "images": images, "seconds": round(total, 3),
              "images_per_s": round(images / total, 2), "loader_wait_fraction": round(wait / total, 4)}
    if cuda:
        result["peak_memory_gb"] = round(torch.cuda.max_memory_allocated() / 2**30, 2)
    return result


def run_benchmark(models, batch_sizes, device, dtype, batches, workers, quick, image_batching="exact",
                  log=lambda message: print(message, file=sys.stderr, flush=True)) -> dict:
    import torch
    import transformers

    from grit_pipeline.detectors.base import get_detector

    report = {"device": device, "dtype": dtype, "quick": quick, "torch": torch.__version__,
              "transformers": transformers.__version__, "workers": workers, "batches_timed": batches,
              "image_sizes": [list(s) for s in IMAGE_SIZES], "phrases_per_image": 3, "models": {}}
    if device.startswith("cuda"):
        report["gpu"] = torch.cuda.get_device_name(torch.device(device))
    needed = (batches + 1) * max(batch_sizes) * len(IMAGE_SIZES)
    items = synthetic_jpegs(min(needed, 64 * len(IMAGE_SIZES)))
    items = [items[i % len(items)] for i in range(needed)]
    with tempfile.TemporaryDirectory(prefix="grit-gpu-bench-") as root:
        for name in models:
            started = time.perf_counter()
            log(f"[gpu_grounding] building {name} (random weights) ...")
            model_dir = build_model_dir(name, quick, Path(root))
            detector = get_detector("hf", model=str(model_dir), device=device, dtype=dtype,
                                    batch_size=max(batch_sizes), image_batching=image_batching)
            params = sum(p.numel() for p in detector.model.parameters())
            runs = []
            for batch_size in batch_sizes:
                try:
                    runs.append(measure(detector, items, batch_size, batches, workers, device))
                except torch.cuda.OutOfMemoryError:
                    runs.append({"batch_size": batch_size, "error": "CUDA out of memory"})
                    torch.cuda.empty_cache()
                log(f"[gpu_grounding] {name} {runs[-1]}")
            rates = {r["batch_size"]: r["images_per_s"] for r in runs if "images_per_s" in r}
            entry = {"parameters_m": round(params / 1e6, 1), "runs": runs,
                     "setup_s": round(time.perf_counter() - started, 1)}
            if 1 in rates and len(rates) > 1:
                best = max(rates, key=rates.get)
                entry["best_batch_size"] = best
                entry["speedup_best_vs_batch_1"] = round(rates[best] / rates[1], 2)
            report["models"][name] = entry
            del detector
            if device.startswith("cuda"):
                torch.cuda.empty_cache()
            for path in sorted(model_dir.rglob("*"), reverse=True):  # free disk before the next model
                path.unlink() if path.is_file() else path.rmdir()
    return report


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", default=list(MODELS), choices=MODELS)
    parser.add_argument("--batch-sizes", nargs="+", type=int, default=[1, 2, 4, 8, 16, 32, 64])
    parser.add_argument("--device", default="auto")
    parser.add_argument("--dtype", default="float16", help="float16 (default), bfloat16 or float32; CPU: float32")
    parser.add_argument("--batches", type=int, default=None, help="timed batches per batch size (default 5; quick 2)")
    parser.add_argument("--workers", type=int, default=None, help="DataLoader workers (default min(8, cores - 1))")
    parser.add_argument("--image-batching", default="exact", choices=("exact", "pad"))
    parser.add_argument("--quick", action="store_true",
                        help="smoke test: lower input resolution (GDINO 320 px, OWLv2 384 px), 2 timed batches")
    parser.add_argument("--output", default=None, help="also write the JSON here")
    args = parser.parse_args(argv)

    from grit_pipeline.detectors.hf import resolve_device

    device = resolve_device(args.device)
    dtype = args.dtype if device.startswith("cuda") else "float32"
    batches = args.batches or (2 if args.quick else 5)
    workers = args.workers if args.workers is not None else max(0, min(8, (os.cpu_count() or 1) - 1))
    report = run_benchmark(args.models, sorted(set(args.batch_sizes)), device, dtype, batches, workers, args.quick,
                           args.image_batching)
    text = json.dumps(report, indent=2)
    print(text)
    if args.output:
        Path(args.output).write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
