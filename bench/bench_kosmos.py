"""kosmos: data-loader samples/s and tiny-preset training throughput on toy shards (CPU, 1 thread)."""
from __future__ import annotations

import tempfile
import time
from pathlib import Path


def run() -> dict:
    import torch

    from kosmos.data import DataConfig, GritShardStream, expand_urls, iter_records
    from kosmos.tokenizer import build_processor, train_tokenizer
    from kosmos.toydata import write_toy_shards
    from kosmos.train import TrainConfig, read_log, train

    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        write_toy_shards(root / "shards", num_shards=2, per_shard=200, width=256, height=192)
        urls = expand_urls(str(root / "shards"))
        processor = build_processor(train_tokenizer([r["caption"] for r in iter_records(urls)], 400), 64)
        stream = iter(GritShardStream(urls, processor, DataConfig(image_size=64, num_image_tokens=16), 16))
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
    return {
        "loader_samples_per_s": round(loader_rate, 1),
        "tiny_train_steps": 60, "tiny_train_wall_s": round(wall, 2),
        "tiny_tokens_per_s": log[-1]["tokens_per_s"], "tiny_samples_per_s": log[-1]["samples_per_s"],
    }
