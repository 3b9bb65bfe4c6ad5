"""Hand-made hostile webdataset tars and img2dataset shards for the hostile-input tests and bench."""
from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path

GIB = 1024 ** 3


def tar_bytes(members, compression: str = "") -> bytes:
    """A tar from ``members``: (name, data) pairs, or (name, data, pax_headers) for crafted headers."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode=f"w:{compression}" if compression else "w",
                      format=tarfile.PAX_FORMAT) as tar:
        for member in members:
            name, data, *rest = member
            info = tarfile.TarInfo(name)
            info.size = len(data)
            if rest:
                info.pax_headers = dict(rest[0])
            tar.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def sparse_member(name: str, declared: int = GIB) -> tuple[str, bytes, dict]:
    """A GNU sparse (PAX 0.1) member: 10 stored bytes that read back as ``declared`` bytes of zeros."""
    return name, b"\0" * 10, {"GNU.sparse.map": "0,10", "GNU.sparse.size": str(declared)}


def gzip_tar_declaring(name: str, declared: int, kind: bytes = tarfile.REGTYPE) -> bytes:
    """A gzip tar holding one member of ``declared`` zero bytes (1 GiB compresses to a few MiB at level 1);
    ``kind=tarfile.XHDTYPE`` makes it a pax header record that size instead."""
    import gzip

    header = tarfile.TarInfo(name)
    header.type = kind
    header.size = declared
    out = io.BytesIO()
    with gzip.GzipFile(fileobj=out, mode="wb", compresslevel=1, mtime=0) as gz:
        gz.write(header.tobuf(format=tarfile.USTAR_FORMAT))
        chunk = b"\0" * (1 << 20)
        left = declared
        while left:
            gz.write(chunk[: min(left, len(chunk))])
            left -= min(left, len(chunk))
        gz.write(b"\0" * ((512 - declared % 512) % 512) + b"\0" * 1024)
    return out.getvalue()


def meta_json(key: str, caption: str, **fields) -> bytes:
    return json.dumps({"key": key, "caption": caption, "status": "success", "url": f"http://x.invalid/{key}.jpg",
                       **fields}).encode("utf-8")


def write_raw_shard(folder: Path, name: str, members, parquet_rows: list[dict] | None = None) -> None:
    """An img2dataset-layout shard whose tar holds exactly ``members`` (and an optional parquet)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{name}.tar").write_bytes(tar_bytes(members))
    if parquet_rows is not None:
        pq.write_table(pa.Table.from_pylist(parquet_rows), folder / f"{name}.parquet")
