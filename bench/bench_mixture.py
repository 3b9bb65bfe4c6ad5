"""``make bench`` entry ``mixture``: loader rows/s per source and for the whole mixture (one process, no loader
workers), beside the tiny preset's training samples/s on the same mixture and machine. Target: the loader at least
2x faster than training, so that it is never the bottleneck."""
from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path


def run() -> dict:
    import torch

    from kosmos.mix import Mixture, parse_mix
    from kosmos.presets import get_preset, image_slots
    from kosmos.sequence import SequenceEncoder
    from kosmos.sources import DataConfig, build_source
    from kosmos.stream import SourceStream
    from kosmos.tokenizer import build_processor, train_tokenizer
    from kosmos.toydata import write_toy_shards
    from kosmos.train import TrainConfig, read_log, train
    from kosmos.train.recipes import default_batch_sizes
    from kosmos.worlds import write_mixture_world

    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        write_toy_shards(root / "grit", num_shards=2, per_shard=200, width=256, height=192)
        world = write_mixture_world(str(root / "world"), images=400, text_documents_n=400, documents=100)
        entries = [f"grounded={root / 'grit'}:16", f"captions={world['captions']}:16", f"text={world['text']}",
                   f"interleaved={world['mmc4']},{world['obelics']}"]
        specs = default_batch_sizes(parse_mix(entries), 16)
        tiny = get_preset("tiny")  # its image size, its connector's image slots and its positions
        processor = build_processor(train_tokenizer(["a red square left of a blue circle"] * 10, 400), tiny.image_size)
        slots = image_slots(tiny.image_size, tiny.patch_size, tiny.connector, tiny.latent_query_num)
        config = DataConfig(image_size=tiny.image_size, num_image_tokens=slots, sequence_length=tiny.max_positions,
                            images_from=world["mmc4_images"])
        encoder = SequenceEncoder(processor, slots, tiny.image_size, config.image_mode)
        result = {"batch_sizes": {s.label: s.batch_size for s in specs}, "load_average": os.getloadavg()[0]}
        for spec in specs:
            stream = iter(SourceStream(build_source(spec, encoder, config), 16))
            next(stream)
            started = time.perf_counter()
            rows = sum(next(stream)["input_ids"].size(0) for _ in range(8))
            result[f"loader_{spec.label}_rows_per_s"] = round(rows / (time.perf_counter() - started), 1)
        mixture = Mixture(specs, encoder, config)
        mixture.next_step()
        started = time.perf_counter()
        rows = sum(b["input_ids"].size(0) for _ in range(8) for b in mixture.next_step().values())
        result["loader_mixed_rows_per_s"] = round(rows / (time.perf_counter() - started), 1)
        cfg = TrainConfig(data=[str(root / "grit")], mix=entries[1:], output=str(root / "run"), preset="tiny",
                          steps=30, batch_size=16, log_every=10, checkpoint_every=1000, loader_workers=1, threads=1,
                          data_options={"images_from": world["mmc4_images"]})
        train(cfg, log=lambda m: None)
        result["tiny_train_samples_per_s"] = read_log(root / "run")[-1]["samples_per_s"]
        result["loader_over_training"] = round(result["loader_mixed_rows_per_s"] / result["tiny_train_samples_per_s"], 2)
    return result
