"""``make bench`` entry for the grounding stage: images/s batched vs one image at a time on the CPU.

Small random-weight Grounding DINO and OWLv2 (a few million parameters, low resolution, so one run takes
seconds on a laptop core), loaded through ``get_detector("hf", model=DIR)``. One run each, no repetition:
the figures are indicative on a shared 2-core machine. The GPU figures with full-size architectures come
from ``python -m bench.gpu_grounding`` (docs/benchmarks.md, "GPU grounding").
"""
from __future__ import annotations

import tempfile
import time
from pathlib import Path

from bench import gpu_grounding

IMAGES = 16
BATCH_SIZE = 8


def _small_grounding_dino(out: Path) -> Path:
    import hf_tiny
    from transformers import BertConfig, GroundingDinoConfig, SwinConfig

    config = GroundingDinoConfig(
        backbone_config=SwinConfig(embed_dim=32, depths=[1, 1, 2, 1], num_heads=[1, 2, 4, 8], window_size=7,
                                   out_indices=[2, 3, 4]),
        text_config=BertConfig(vocab_size=hf_tiny.BERT_VOCAB_SIZE, hidden_size=128, num_hidden_layers=2,
                               num_attention_heads=4, intermediate_size=256),
        d_model=64, encoder_layers=2, decoder_layers=2, encoder_ffn_dim=256, decoder_ffn_dim=256,
        encoder_attention_heads=4, decoder_attention_heads=4, num_queries=100, max_text_len=64,
    )
    return hf_tiny.build_grounding_dino(out, config, image_size=(224, 320))


def _small_owlv2(out: Path) -> Path:
    import hf_tiny
    from transformers import Owlv2Config

    vocab = 49408
    config = Owlv2Config(
        text_config=dict(vocab_size=vocab, hidden_size=128, intermediate_size=256, num_hidden_layers=2,
                         num_attention_heads=4, bos_token_id=vocab - 2, eos_token_id=vocab - 1, pad_token_id=0),
        vision_config=dict(hidden_size=192, intermediate_size=384, num_hidden_layers=4, num_attention_heads=4,
                           image_size=384, patch_size=16),
        projection_dim=128,
    )
    return hf_tiny.build_owlv2(out, config)


def _rate(detector, images, phrases, per_call: int) -> float:
    started = time.perf_counter()
    for start in range(0, len(images), per_call):
        detector.detect(images[start:start + per_call], phrases[start:start + per_call])
    return len(images) / (time.perf_counter() - started)


def run() -> dict:
    import torch

    from grit_pipeline.detectors.base import get_detector
    from grit_pipeline.images import decode_image

    items = gpu_grounding.synthetic_jpegs(IMAGES)
    # two aspect ratios: Grounding DINO batches images of equal preprocessed size together
    items = [item for item in items if item[1] in (0, 2)][:IMAGES // 2] * 2
    images = [decode_image(data) for data, _, _ in items]
    phrases = [p for _, _, p in items]
    result = {"device": "cpu", "torch_threads": torch.get_num_threads(), "images": len(images),
              "batch_size": BATCH_SIZE, "phrases_per_image": 3}
    with tempfile.TemporaryDirectory(prefix="grit-bench-grounding-") as root:
        for name, build in (("grounding_dino_small", _small_grounding_dino), ("owlv2_small", _small_owlv2)):
            model_dir = build(Path(root) / name)
            detector = get_detector("hf", model=str(model_dir), device="cpu", batch_size=BATCH_SIZE)
            detector.detect(images[:2], phrases[:2])  # warm-up
            one = _rate(detector, images, phrases, per_call=1)
            batched = _rate(detector, images, phrases, per_call=len(images))
            result[name] = {
                "parameters_m": round(sum(p.numel() for p in detector.model.parameters()) / 1e6, 2),
                "one_at_a_time_images_per_s": round(one, 2),
                "batched_images_per_s": round(batched, 2),
                "speedup": round(batched / one, 2),
            }
    return result


if __name__ == "__main__":
    import json

    print(json.dumps(run(), indent=2))
