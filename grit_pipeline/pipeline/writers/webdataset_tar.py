"""``_webdataset/NNNNN.tar``: webdataset shard of the grounded samples: KEY.<ext> (original image bytes, normally
jpg), KEY.json (GRIT record + status + source_shard), KEY.txt (grounded text).

Members carry fixed metadata (mtime 0, uid/gid 0, mode 0644) so the same samples give the same bytes.
"""
from __future__ import annotations

import io
import json
import tarfile

from grit_pipeline import status as S
from grit_pipeline.record import GRIT_COLUMNS
from .. import layout

JSON_FIELDS = GRIT_COLUMNS + ("status", "source_shard")
NEEDS_IMAGE_BYTES = True  # the commit streams the samples to this writer with their bytes (shards.BuildSink)


def filename(shard: str) -> str:
    return layout.tar_name(shard)


def _member(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    info.mtime = 0
    info.mode = 0o644
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    tar.addfile(info, io.BytesIO(data))


def write(samples, file, context) -> None:
    with tarfile.open(fileobj=file, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for s in samples:
            if s["status"] not in S.KEPT:
                continue
            key = s["key"]
            _member(tar, f"{key}.{s.get('image_ext') or 'jpg'}", s["image_bytes"] or b"")
            record = {name: s.get(name) for name in JSON_FIELDS}
            _member(tar, f"{key}.json", json.dumps(record, ensure_ascii=False, sort_keys=True).encode("utf-8"))
            _member(tar, f"{key}.txt", (s.get("grounded_text") or "").encode("utf-8"))
