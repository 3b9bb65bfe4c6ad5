"""The GrIT-20M record (the columns of the released GrIT-20M data): type, pyarrow schema and validation."""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any, Iterable

import pyarrow as pa

# [start_char, end_char, x_min, y_min, x_max, y_max, score]
SPAN_FIELDS = ("start", "end", "x_min", "y_min", "x_max", "y_max", "score")
SPAN_COLUMNS = ("noun_chunks", "ref_exps")

GRIT_SCHEMA = pa.schema(
    [
        pa.field("key", pa.string()),
        pa.field("clip_similarity_vitb32", pa.float64()),
        pa.field("clip_similarity_vitl14", pa.float64()),
        pa.field("id", pa.int64()),
        pa.field("url", pa.string()),
        pa.field("caption", pa.string()),
        pa.field("width", pa.int64()),
        pa.field("height", pa.int64()),
        pa.field("noun_chunks", pa.list_(pa.list_(pa.float64()))),
        pa.field("ref_exps", pa.list_(pa.list_(pa.float64()))),
    ]
)
GRIT_COLUMNS = tuple(GRIT_SCHEMA.names)


class RecordError(ValueError):
    """An invalid GRIT record; the message names the record and the field."""

    def __init__(self, key: Any, field_name: str, problem: str):
        self.key, self.field_name, self.problem = key, field_name, problem
        super().__init__(f"record {key!r}: field {field_name!r}: {problem}")


@dataclass
class GritRecord:
    """One grounded image-text pair, as GrIT-20M stores it."""

    key: str
    caption: str
    width: int
    height: int
    noun_chunks: list[list[float]] = field(default_factory=list)
    ref_exps: list[list[float]] = field(default_factory=list)
    id: int | None = None
    url: str | None = None
    clip_similarity_vitb32: float | None = None
    clip_similarity_vitl14: float | None = None

    @classmethod
    def from_dict(cls, row: dict[str, Any]) -> "GritRecord":
        """Build from a dict with GrIT-20M column names (extra keys are ignored); validates."""
        key = row.get("key", row.get("id", "<no key>"))
        if not isinstance(row, dict):
            raise RecordError(key, "<record>", f"expected a JSON object, got {type(row).__name__}")
        for name in ("caption", "width", "height"):
            if row.get(name) is None:
                raise RecordError(key, name, "missing")
        record = cls(
            key=str(key),
            caption=row["caption"],
            width=row["width"],
            height=row["height"],
            noun_chunks=_span_list(key, "noun_chunks", row.get("noun_chunks")),
            ref_exps=_span_list(key, "ref_exps", row.get("ref_exps")),
            id=row.get("id"),
            url=row.get("url"),
            clip_similarity_vitb32=row.get("clip_similarity_vitb32"),
            clip_similarity_vitl14=row.get("clip_similarity_vitl14"),
        )
        record.validate()
        return record

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def validate(self) -> "GritRecord":
        """Raise RecordError naming the first invalid field; return self when valid."""
        key = self.key
        if not isinstance(self.caption, str):
            raise RecordError(key, "caption", f"must be a string, got {type(self.caption).__name__}")
        for name in ("width", "height"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
                raise RecordError(key, name, f"must be a positive integer, got {value!r}")
        for name in SPAN_COLUMNS:
            for i, span in enumerate(getattr(self, name)):
                validate_span(key, f"{name}[{i}]", span, self.caption)
        if len(self.noun_chunks) != len(self.ref_exps):
            raise RecordError(
                key, "ref_exps",
                f"must be one-to-one with noun_chunks ({len(self.ref_exps)} vs {len(self.noun_chunks)})",
            )
        return self


def _span_list(key, name, value) -> list[list[float]]:
    if value is None:
        return []
    if hasattr(value, "tolist"):  # numpy arrays from pandas / pyarrow
        value = value.tolist()
    if not isinstance(value, (list, tuple)):
        raise RecordError(key, name, f"must be a list of spans, got {type(value).__name__}")
    out = []
    for i, span in enumerate(value):
        if hasattr(span, "tolist"):
            span = span.tolist()
        if not isinstance(span, (list, tuple)):
            raise RecordError(key, f"{name}[{i}]", f"must be a list of 7 numbers, got {span!r}")
        out.append(list(span))
    return out


def validate_span(key, field_name: str, span, caption: str) -> None:
    """Check one [start, end, x1, y1, x2, y2, score] item against its caption."""
    if len(span) != 7:
        raise RecordError(key, field_name, f"must have 7 numbers {SPAN_FIELDS}, got {len(span)}")
    for name, value in zip(SPAN_FIELDS, span):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise RecordError(key, f"{field_name}.{name}", f"must be a finite number, got {value!r}")
    start, end, x1, y1, x2, y2, score = span
    if start != int(start) or end != int(end):
        raise RecordError(key, field_name, f"character offsets must be whole numbers, got {start}, {end}")
    if not (0 <= start < end <= len(caption)):
        raise RecordError(
            key, field_name, f"offsets [{start}, {end}) must satisfy 0 <= start < end <= {len(caption)}"
        )
    for name, value in zip(("x_min", "y_min", "x_max", "y_max"), (x1, y1, x2, y2)):
        if not 0.0 <= value <= 1.0:
            raise RecordError(key, f"{field_name}.{name}", f"must be in [0, 1], got {value}")
    if not (x2 > x1 and y2 > y1):
        raise RecordError(key, field_name, f"box must have x_max > x_min and y_max > y_min, got {span[2:6]}")
    if not 0.0 <= score <= 1.0:
        raise RecordError(key, f"{field_name}.score", f"must be in [0, 1], got {score}")


def records_to_table(records: Iterable[GritRecord], schema: pa.Schema = GRIT_SCHEMA) -> pa.Table:
    """GRIT records -> pyarrow table with the GrIT-20M column types."""
    rows = [r.to_dict() for r in records]
    return pa.Table.from_pylist(rows, schema=schema)
