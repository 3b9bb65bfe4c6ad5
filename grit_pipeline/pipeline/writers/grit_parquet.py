"""``NNNNN.parquet``: the grounded samples, GrIT-20M columns plus grounded_text, status, lineage."""
from __future__ import annotations

import pyarrow as pa
import pyarrow.parquet as pq

from grit_pipeline import status as S
from grit_pipeline.record import GRIT_SCHEMA

from ..sample import FLOATS
from .. import layout

SCHEMA = pa.schema(
    list(GRIT_SCHEMA)
    + [
        pa.field("grounded_text", pa.string()),
        pa.field("status", pa.string()),
        pa.field("source_shard", pa.string()),
        pa.field("dropped_boxes", FLOATS),
    ]
)


def filename(shard: str) -> str:
    return layout.pairs_name(shard)


def rows(samples):
    return [{name: s.get(name) for name in SCHEMA.names} for s in samples if s["status"] in S.KEPT]


def write(samples, file, context) -> None:
    pq.write_table(pa.Table.from_pylist(rows(samples), schema=SCHEMA), file, compression="zstd")
