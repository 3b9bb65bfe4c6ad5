"""``kosmos synth-mixture``: every source format of the training mixture at small scale, from grit's synthetic world.

``OUT/captions/`` image-caption shards (``grit synth``'s img2dataset layout), ``OUT/text/corpus.jsonl`` and
``corpus.parquet`` (documents of sentences about scenes of the world, one sentence per line), ``OUT/text_heldout/``
(the same from another seed, to measure language loss), ``OUT/mmc4/docs.jsonl`` + ``OUT/mmc4/images/`` (MMC4
documents: a sentence per scene, each image before its matched sentence) and ``OUT/obelics/docs.parquet``
(OBELICS-style ``texts``/``images`` lists, images as bytes). Every byte is a function of (seed, sizes).
"""
from __future__ import annotations

import io
import json
import os
import random
from pathlib import Path


def _sentence(seed: int, index: int, level: int) -> str:
    """The caption of scene ``index`` of world ``seed`` (as ``grit synth`` draws it, without rendering)."""
    from grit_pipeline.synth.captions import make_caption
    from grit_pipeline.synth.scene import random_scene
    from grit_pipeline.synth.writer import scene_rng

    rng = scene_rng(seed, index)
    text = make_caption(rng, random_scene(rng, level), level).text.strip()
    return text[0].upper() + text[1:] + ("" if text.endswith(".") else ".")


def text_documents(seed: int, documents: int, level: int = 3, lines: tuple[int, int] = (3, 8)) -> list[str]:
    """Documents of sentences about scenes of the world ``seed`` (one sentence per line)."""
    rng = random.Random(f"kosmos-text:{seed}")
    docs, index = [], 0
    for _ in range(documents):
        n = rng.randint(*lines)
        docs.append("\n".join(_sentence(seed + 10_000, index + i, level) for i in range(n)))
        index += n
    return docs


def _atomic(path: Path, data: bytes) -> None:
    tmp = path.with_name(path.name + f".tmp-{os.getpid()}")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def write_text_corpus(out: Path, seed: int, documents: int, level: int = 3) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    out.mkdir(parents=True, exist_ok=True)
    docs = text_documents(seed, documents, level)
    half = len(docs) // 2
    _atomic(out / "corpus.jsonl", "".join(json.dumps({"text": d, "id": i}) + "\n" for i, d in enumerate(docs[:half])).encode())
    buffer = io.BytesIO()
    pq.write_table(pa.table({"text": docs[half:], "id": list(range(half, len(docs)))}), buffer)
    _atomic(out / "corpus.parquet", buffer.getvalue())


def write_interleaved(out: Path, seed: int, documents: int, level: int, scenes: tuple[int, int] = (2, 4)) -> None:
    """MMC4 jsonl + image folder and OBELICS parquet of multi-scene documents (half of the documents each)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from grit_pipeline.synth.writer import make_sample

    rng = random.Random(f"kosmos-interleaved:{seed}")
    (out / "mmc4" / "images").mkdir(parents=True, exist_ok=True)
    (out / "obelics").mkdir(parents=True, exist_ok=True)
    index = 0
    mmc4_lines, obelics = [], {"texts": [], "images": []}
    for d in range(documents):
        texts, images = [], []
        for _ in range(rng.randint(*scenes)):
            sample = make_sample(seed * 1_000_003 + 7, index, level)
            index += 1
            caption = sample.caption.text.strip()
            texts.append(caption[0].upper() + caption[1:] + ".")
            images.append(sample.jpeg)
        if d % 2 == 0:
            info = []
            for i, jpeg in enumerate(images):
                name = f"{d:06d}_{i}.jpg"
                _atomic(out / "mmc4" / "images" / name, jpeg)
                info.append({"image_name": name, "raw_url": f"synth://{d}/{i}", "matched_text_index": i,
                             "matched_sim": 0.3})
            mmc4_lines.append(json.dumps({"text_list": texts, "image_info": info, "url": f"synth://doc/{d}"}))
        else:
            row_texts, row_images = [], []
            for text, jpeg in zip(texts, images):
                row_texts += [None, text]
                row_images += [{"bytes": jpeg, "path": None}, None]
            obelics["texts"].append(row_texts)
            obelics["images"].append(row_images)
    _atomic(out / "mmc4" / "docs.jsonl", "".join(line + "\n" for line in mmc4_lines).encode())
    buffer = io.BytesIO()
    image_type = pa.list_(pa.struct([("bytes", pa.binary()), ("path", pa.string())]))
    pq.write_table(pa.table({"texts": pa.array(obelics["texts"], pa.list_(pa.string())),
                             "images": pa.array(obelics["images"], image_type)}), buffer)
    _atomic(out / "obelics" / "docs.parquet", buffer.getvalue())


def write_mixture_world(output: str, images: int = 2000, text_documents_n: int = 2000, documents: int = 400,
                        seed: int = 0, level: int = 1, text_level: int = 3) -> dict:
    """Write every format (see the module docstring); returns the folders by source kind."""
    from grit_pipeline.synth.writer import write_synthetic_world

    out = Path(output)
    out.mkdir(parents=True, exist_ok=True)
    if not (out / "captions" / "truth").is_dir():
        write_synthetic_world(out / "captions", images, seed=seed + 100, shard_size=500, level=level)
    write_text_corpus(out / "text", seed, text_documents_n, text_level)
    write_text_corpus(out / "text_heldout", seed + 1, max(50, text_documents_n // 10), text_level)
    write_interleaved(out, seed, documents, level)
    return {"captions": str(out / "captions"), "text": str(out / "text"), "text_heldout": str(out / "text_heldout"),
            "mmc4": str(out / "mmc4" / "docs.jsonl"), "mmc4_images": str(out / "mmc4" / "images"),
            "obelics": str(out / "obelics" / "docs.parquet")}
