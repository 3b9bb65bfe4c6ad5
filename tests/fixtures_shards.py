"""Small img2dataset-layout shards for pipeline tests, including broken ones.

``write_shard(folder, name, samples)`` writes ``name.tar`` (webdataset: KEY.jpg/.txt/.json for each
successful sample) and ``name.parquet`` (one row per sample, img2dataset's columns), like img2dataset.
``healthy_samples`` makes plain samples; the ``break_*`` helpers damage a written shard.
"""
from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

CAPTIONS = (
    "a red dog sitting on the grass next to a blue car",
    "two cats on a table in front of a house",
    "a man with a hat and a woman near a tree",
    "the sky over a small boat on the water",
    "a picture of a bird in a field of flowers",
    "a green bus on the street with people",
)

PARQUET_SCHEMA = pa.schema([
    ("url", pa.string()), ("caption", pa.string()), ("key", pa.string()), ("status", pa.string()),
    ("error_message", pa.string()), ("width", pa.int32()), ("height", pa.int32()),
    ("original_width", pa.int32()), ("original_height", pa.int32()),
])


def jpeg_bytes(seed: int, size: tuple[int, int] = (48, 32)) -> bytes:
    """A small JPEG with a coloured rectangle, different per seed."""
    from PIL import Image, ImageDraw

    image = Image.new("RGB", size, ((seed * 53) % 256, (seed * 97) % 256, (seed * 31) % 256))
    ImageDraw.Draw(image).rectangle([size[0] // 4, size[1] // 4, size[0] // 2, size[1] // 2], fill=(250, 250, 250))
    out = io.BytesIO()
    image.save(out, format="JPEG", quality=80)
    return out.getvalue()


def healthy_samples(shard: int, count: int, offset: int = 0) -> list[dict]:
    samples = []
    for i in range(count):
        n = shard * 1000 + offset + i
        samples.append({"key": f"{shard:05d}{offset + i:04d}", "caption": CAPTIONS[n % len(CAPTIONS)],
                        "image": jpeg_bytes(n), "url": f"http://example.invalid/{n}.jpg"})
    return samples


def write_shard(folder: Path, name: str, samples: list[dict], tar: bool = True, parquet: bool = True) -> None:
    """Write one img2dataset shard. A sample dict: key, caption, image (bytes or None), url, and optionally
    status/error_message (default success), width/height/original_width/original_height."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    rows = []
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tf:
        for s in samples:
            status = s.get("status", "success")
            width, height = s.get("width", 48), s.get("height", 32)
            meta = {"url": s.get("url"), "caption": s["caption"] if isinstance(s["caption"], str) else None,
                    "key": s["key"], "status": status, "error_message": s.get("error_message"),
                    "width": width if status == "success" else None,
                    "height": height if status == "success" else None,
                    "original_width": s.get("original_width", width) if status == "success" else None,
                    "original_height": s.get("original_height", height) if status == "success" else None}
            rows.append(meta)
            if status != "success":
                continue
            caption = s["caption"]
            txt = caption if isinstance(caption, bytes) else str(caption if caption is not None else "").encode("utf-8")
            members = {"txt": txt, "json": json.dumps(meta).encode("utf-8")}
            if s.get("image") is not None:
                members = {s.get("ext", "jpg"): s["image"], **members}
            for ext, data in members.items():
                info = tarfile.TarInfo(f"{s['key']}.{ext}")
                info.size = len(data)
                tf.addfile(info, io.BytesIO(data))
    if tar:
        (folder / f"{name}.tar").write_bytes(buffer.getvalue())
    if parquet:
        pq.write_table(pa.Table.from_pylist(rows, schema=PARQUET_SCHEMA), folder / f"{name}.parquet")


def truncate(path: Path, keep_fraction: float) -> None:
    """Cut a file (e.g. a tar) short, as an interrupted copy would."""
    data = Path(path).read_bytes()
    Path(path).write_bytes(data[: int(len(data) * keep_fraction)])


def write_broken_world(folder: Path) -> dict[str, dict[str, str]]:
    """Shards exercising every ingest problem; returns {shard: {key: expected status}} (None: any
    status the stages decide, i.e. grounded / no_box / no_noun_chunks)."""
    folder = Path(folder)
    expected: dict[str, dict[str, str | None]] = {}

    # 00000: healthy samples, a corrupt image, an empty image, a failed download, bad captions,
    #        a letterboxed sample, a sample without an image member, a caption without noun chunks.
    samples = healthy_samples(0, 4)
    samples += [
        {"key": "000000100", "caption": "a dog on a road", "image": b"\xff\xd8\xff\xe0 definitely not a jpeg"},
        {"key": "000000101", "caption": "a cat on a chair", "image": jpeg_bytes(7)[:40]},
        {"key": "000000102", "caption": "a bird", "image": None, "status": "failed_to_download",
         "error_message": "HTTP Error 404: Not Found"},
        {"key": "000000103", "caption": "   ", "image": jpeg_bytes(8)},
        {"key": "000000104", "caption": b"\xff\xfe not utf-8 \xc3", "image": jpeg_bytes(9)},
        {"key": "000000105", "caption": "a horse in a field", "image": jpeg_bytes(10), "width": 32, "height": 32,
         "original_width": 64, "original_height": 32},
        {"key": "000000106", "caption": "a tree near a house", "image": None},
        {"key": "000000107", "caption": "love and happiness", "image": jpeg_bytes(11)},
    ]
    write_shard(folder, "00000", samples)
    expected["00000"] = {s["key"]: None for s in samples[:4]} | {
        "000000100": "decode_error", "000000101": "decode_error", "000000102": "download_error",
        "000000103": "bad_caption", "000000104": "bad_caption", "000000105": "letterboxed",
        "000000106": "decode_error", "000000107": "no_noun_chunks"}

    # 00001: truncated tar (the parquet still lists every key).
    samples = healthy_samples(1, 6)
    write_shard(folder, "00001", samples)
    truncate(folder / "00001.tar", 0.5)
    expected["00001"] = {s["key"]: "?" for s in samples}  # first ones survive, the rest shard_error

    # 00002: tar without its parquet; 00003: parquet without its tar.
    samples = healthy_samples(2, 3)
    write_shard(folder, "00002", samples, parquet=False)
    expected["00002"] = {s["key"]: None for s in samples}
    samples = healthy_samples(3, 3) + [{"key": "000030009", "caption": "a cup", "image": None,
                                        "status": "failed_to_download", "error_message": "timeout"}]
    write_shard(folder, "00003", samples, tar=False)
    expected["00003"] = {s["key"]: "shard_error" for s in samples[:3]} | {"000030009": "download_error"}

    # 00004: an empty shard (img2dataset writes one when every url of a shard fails to resolve).
    write_shard(folder, "00004", [])
    expected["00004"] = {}
    return expected
