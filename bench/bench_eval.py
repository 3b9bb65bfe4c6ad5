"""``make bench`` entry ``eval``: the ranking scorer's candidates/s on a 4-way task (the shared context encoded once
with a KV cache vs one whole sequence per candidate; target >= 2x), and few-shot generation items/s at 0, 2 and 4
shots (interleaved prompts, greedy, 10 new tokens, tiny preset). Random weights, one CPU thread."""
from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path

# Ranking on the small preset (42M parameters): on the tiny one (0.6M) a forward costs about the same whatever its
# length, so fixed per-call costs, not the context, dominate and the comparison says little about real models.
RANK_PRESET = "small"
WORDS = ("the a an of photo image question answer what is colour red blue green square circle left right on "
         "under man woman dog cat runs sits jumps then after before because therefore yes no")


def _model(preset_name: str):
    from kosmos.presets import build_model, get_preset
    from kosmos.tokenizer import build_processor, train_tokenizer

    tokenizer = train_tokenizer([WORDS, WORDS.title(), "? : . ,"] * 5, vocab_size=300)
    preset = get_preset(preset_name)
    model = build_model(preset, len(tokenizer), seed=0, pad_token_id=tokenizer.pad_token_id,
                        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id).eval()
    return model, build_processor(tokenizer, preset.image_size)


def _images(folder: Path, n: int) -> list[str]:
    from PIL import Image, ImageDraw

    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(n):
        image = Image.new("RGB", (64, 64), (245, 245, 245))
        ImageDraw.Draw(image).rectangle((4 + i % 20, 4, 40, 40 - i % 10), fill=(40 * (i % 6), 90, 200))
        image.save(folder / f"{i}.png")
        paths.append(str(folder / f"{i}.png"))
    return paths


def run() -> dict:
    import random

    import torch

    from kosmos.evaluate.generate import Decoding, Query, generate
    from kosmos.evaluate.rank import Option, RankItem, rank

    torch.set_num_threads(1)
    rng = random.Random(0)
    words = WORDS.split()
    result = {"load_average": round(os.getloadavg()[0], 2), "threads": 1, "rank_preset": RANK_PRESET,
              "generate_preset": "tiny"}
    with tempfile.TemporaryDirectory() as tmp:
        model, processor = _model(RANK_PRESET)
        images = _images(Path(tmp), 24)
        # 4-way multiple choice after an image and a 4-shot text context (~100 tokens), like HellaSwag 4-shot
        items = []
        for n in range(12):
            context = "\n\n".join(" ".join(rng.choice(words) for _ in range(25)) for _ in range(4))
            items.append(RankItem(n, [Option((("image", images[n]), ("text", context)),
                                             " " + " ".join(rng.choice(words) for _ in range(6))) for _ in range(4)]))
        list(rank(model, processor, items[:2]))  # warm-up
        for name, shared in (("shared_prefix", True), ("one_sequence_per_candidate", False)):
            started = time.perf_counter()
            list(rank(model, processor, items, shared_prefix=shared))
            result[f"rank_{name}_candidates_per_s"] = round(4 * len(items) / (time.perf_counter() - started), 1)
        result["rank_speedup"] = round(result["rank_shared_prefix_candidates_per_s"]
                                       / result["rank_one_sequence_per_candidate_candidates_per_s"], 2)
        model, processor = _model("tiny")
        decoding = {"bench": Decoding("Question: what colour is the square? Answer:", max_new_tokens=10)}
        for shots in (0, 2, 4):
            queries = []
            for n in range(16):
                demos = ()
                for d in range(shots):
                    demos += (("image", images[(n + d + 1) % len(images)]),
                              ("text", "Question: what colour is the square? Answer: blue"))
                queries.append(Query(n, images[n], decoding["bench"].prompt, "bench", demos))
            list(generate(model, processor, queries[:2], decoding, batch_size=8))  # warm-up
            started = time.perf_counter()
            list(generate(model, processor, queries, decoding, batch_size=8))
            result[f"generate_{shots}shot_items_per_s"] = round(len(queries) / (time.perf_counter() - started), 2)
    return result
