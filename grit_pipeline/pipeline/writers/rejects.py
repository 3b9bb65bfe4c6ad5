"""``_rejects/NNNNN.parquet``: every sample that did not become a GRIT row, with status and reason."""
from __future__ import annotations

import pyarrow as pa
import pyarrow.parquet as pq

from grit_pipeline import status as S

from ..sample import FLOATS
from .. import layout

SCHEMA = pa.schema(
    [
        pa.field("key", pa.string()),
        pa.field("status", pa.string()),
        pa.field("reason", pa.string()),
        pa.field("stage", pa.string()),
        pa.field("caption", pa.string()),
        pa.field("url", pa.string()),
        pa.field("source_shard", pa.string()),
        pa.field("dropped_boxes", FLOATS),
    ]
)


def filename(shard: str) -> str:
    return layout.rejects_name(shard)


def rows(samples):
    return [{name: s.get(name) for name in SCHEMA.names} for s in samples if s["status"] not in S.KEPT]


def write(samples, file, context) -> None:
    pq.write_table(pa.Table.from_pylist(rows(samples), schema=SCHEMA), file, compression="zstd")
