"""kosmos: data-loader samples/s and tiny-preset training throughput on toy shards (CPU, 1 thread), and the
image-sensitivity probe (``kosmos.probe``) of a fresh and a briefly trained tiny model.

The probe of any trained model: BENCH_PROBE_MODEL=RUN/best BENCH_PROBE_REFCOCO=DIR/finetune_refcoco_val.json
(images in images/ beside it) adds ``probe_given_model``.
"""
from __future__ import annotations

import json
import os
import random
import tempfile
import time
from pathlib import Path


def run() -> dict:
    import torch

    from kosmos.sequence import SequenceEncoder
    from kosmos.sources import DataConfig, SourceSpec, build_source
    from kosmos.sources.grounded import iter_records
    from kosmos.shards import expand_urls
    from kosmos.stream import SourceStream
    from kosmos.tokenizer import build_processor, train_tokenizer
    from kosmos.toydata import write_toy_shards
    from kosmos.train import TrainConfig, read_log, train

    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        write_toy_shards(root / "shards", num_shards=2, per_shard=200, width=256, height=192)
        urls = expand_urls(str(root / "shards"))
        processor = build_processor(train_tokenizer([r["caption"] for r in iter_records(urls)], 400), 64)
        config = DataConfig(image_size=64, num_image_tokens=16)
        source = build_source(SourceSpec("grounded", urls), SequenceEncoder(processor, 16, 64, config.image_mode), config)
        stream = iter(SourceStream(source, 16))
        next(stream)
        started = time.perf_counter()
        for _ in range(10):
            next(stream)
        loader_rate = 160 / (time.perf_counter() - started)
        cfg = TrainConfig(data=[str(root / "shards")], output=str(root / "run"), preset="tiny", steps=60,
                          batch_size=16, log_every=20, checkpoint_every=1000, loader_workers=1, threads=1)
        started = time.perf_counter()
        train(cfg, log=lambda m: None)
        wall = time.perf_counter() - started
        log = read_log(root / "run")
        result = {
            "loader_samples_per_s": round(loader_rate, 1),
            "tiny_train_steps": 60, "tiny_train_wall_s": round(wall, 2),
            "tiny_tokens_per_s": log[-1]["tokens_per_s"], "tiny_samples_per_s": log[-1]["samples_per_s"],
        }
        result["image_sensitivity"] = sensitivity_fresh_vs_trained(root)
    if os.environ.get("BENCH_PROBE_MODEL"):
        result["probe_given_model"] = probe_model(os.environ["BENCH_PROBE_MODEL"], os.environ["BENCH_PROBE_REFCOCO"])
    return result


PROBE_STEPS = 400


def sensitivity_fresh_vs_trained(root: Path) -> dict:
    """How much the first location token's distribution moves when the image is swapped: a fresh tiny model
    vs the same model after PROBE_STEPS steps on toy shards (one or two large shapes), 40 held-out images."""
    from kosmos.predict import load_model
    from kosmos.presets import build_model, get_preset
    from kosmos.probe import image_sensitivity
    from kosmos.toydata import toy_record, write_toy_shards
    from kosmos.train import TrainConfig, read_log, train

    write_toy_shards(root / "probe_shards", num_shards=2, per_shard=500, seed=1)
    rng = random.Random(7)
    queries = []
    (root / "probe_images").mkdir()
    for i in range(40):
        image, record = toy_record(rng, f"h{i}", 80, 64)
        path = root / "probe_images" / f"h{i}.jpg"
        image.save(path)
        s, e = record["ref_exps"][0][:2]
        queries.append((str(path), record["caption"][int(s):int(e)]))
    cfg = TrainConfig(data=[str(root / "probe_shards")], output=str(root / "probe_run"), preset="tiny",
                      steps=PROBE_STEPS, batch_size=16, log_every=50, checkpoint_every=PROBE_STEPS,
                      loader_workers=1, threads=1, data_options={"grounding_prob": 1.0, "image_mode": "square"})
    train(cfg, log=lambda m: None)
    model, processor = load_model(str(root / "probe_run"), "cpu")
    trained = image_sensitivity(model, processor, queries)
    tok = processor.tokenizer  # the run's initial weights: same preset, vocabulary and seed
    initial = build_model(get_preset("tiny"), len(tok), seed=cfg.seed, pad_token_id=tok.pad_token_id,
                          bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id)
    fresh = image_sensitivity(initial, processor, queries)
    return {"fresh": fresh, f"trained_{PROBE_STEPS}_steps": trained,
            "trained_loc_loss": read_log(root / "probe_run")[-1]["loc_loss"]}


def probe_model(model_dir: str, refcoco_json: str, limit: int = 100) -> dict:
    from kosmos.predict import load_model
    from kosmos.probe import image_sensitivity, refcoco_queries

    annotations = json.loads(Path(refcoco_json).read_text())
    queries = refcoco_queries(annotations, str(Path(refcoco_json).parent / "images"), limit)
    return {"model": model_dir, **image_sensitivity(*load_model(model_dir, "cpu"), queries)}
