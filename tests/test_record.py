"""The GrIT-20M record: validation and parquet schema (the released GrIT-20M columns)."""
import pyarrow.parquet as pq
import pytest

from grit_pipeline.record import GRIT_COLUMNS, GRIT_SCHEMA, GritRecord, RecordError, records_to_table

WIRE_CAPTION = "a wire hanger with a paper cover that reads we heart our customers"


def wire_hanger(**overrides):
    row = dict(key="000373938", id=1, url="http://example.com/a.jpg", caption=WIRE_CAPTION, width=320, height=480,
               clip_similarity_vitb32=0.31, clip_similarity_vitl14=0.29,
               noun_chunks=[[19, 32, 0.2, 0.1, 0.9, 0.8, 0.71], [0, 13, 0.1, 0.0, 0.95, 0.9, 0.68]],
               ref_exps=[[19, 66, 0.2, 0.1, 0.9, 0.8, 0.71], [0, 66, 0.1, 0.0, 0.95, 0.9, 0.68]])
    row.update(overrides)
    return row


def test_official_example_is_valid_and_spans_read_back():
    record = GritRecord.from_dict(wire_hanger())
    assert [WIRE_CAPTION[int(s):int(e)] for s, e, *_ in record.noun_chunks] == ["a paper cover", "a wire hanger"]
    assert len(WIRE_CAPTION) == 66


def test_schema_has_the_released_columns_and_types(tmp_path):
    assert GRIT_COLUMNS == ("key", "clip_similarity_vitb32", "clip_similarity_vitl14", "id", "url", "caption",
                            "width", "height", "noun_chunks", "ref_exps")
    table = records_to_table([GritRecord.from_dict(wire_hanger())])
    pq.write_table(table, tmp_path / "x.parquet")
    back = pq.read_table(tmp_path / "x.parquet")
    assert back.schema.equals(GRIT_SCHEMA)
    assert str(back.schema.field("noun_chunks").type) == "list<element: list<element: double>>"
    assert str(back.schema.field("width").type) == "int64"
    assert GritRecord.from_dict(back.to_pylist()[0]) == GritRecord.from_dict(wire_hanger())


@pytest.mark.parametrize("overrides, field, message", [
    ({"noun_chunks": [[19, 70, 0.2, 0.1, 0.9, 0.8, 0.7]], "ref_exps": [[19, 66, 0.2, 0.1, 0.9, 0.8, 0.7]]},
     "noun_chunks[0]", "start < end <= 66"),
    ({"ref_exps": [[30, 30, 0.2, 0.1, 0.9, 0.8, 0.7], [0, 66, 0.1, 0, 1, 1, 0.7]]}, "ref_exps[0]", "start < end"),
    ({"ref_exps": [[19, 66, 0.2, 0.1, 1.2, 0.8, 0.7], [0, 66, 0.1, 0, 1, 1, 0.7]]}, "ref_exps[0].x_max", "[0, 1]"),
    ({"ref_exps": [[19, 66, 0.5, 0.1, 0.4, 0.8, 0.7], [0, 66, 0.1, 0, 1, 1, 0.7]]}, "ref_exps[0]", "x_max > x_min"),
    ({"ref_exps": [[19, 66, 0.2, 0.1, 0.9, 0.8, 1.5], [0, 66, 0.1, 0, 1, 1, 0.7]]}, "ref_exps[0].score", "[0, 1]"),
    ({"ref_exps": [[19, 66, 0.2, 0.1, 0.9, 0.8], [0, 66, 0.1, 0, 1, 1, 0.7]]}, "ref_exps[0]", "7 numbers"),
    ({"ref_exps": [[19, 66, 0.2, float("nan"), 0.9, 0.8, 0.7], [0, 66, 0.1, 0, 1, 1, 0.7]]}, "ref_exps[0].y_min",
     "finite"),
    ({"ref_exps": [[19.5, 66, 0.2, 0.1, 0.9, 0.8, 0.7], [0, 66, 0.1, 0, 1, 1, 0.7]]}, "ref_exps[0]", "whole numbers"),
    ({"ref_exps": [[19, 66, 0.2, 0.1, 0.9, 0.8, 0.7]]}, "ref_exps", "one-to-one"),
    ({"width": 0}, "width", "positive integer"),
    ({"caption": None}, "caption", "missing"),
    ({"noun_chunks": "oops"}, "noun_chunks", "list of spans"),
])
def test_invalid_record_names_record_and_field(overrides, field, message):
    with pytest.raises(RecordError) as info:
        GritRecord.from_dict(wire_hanger(**overrides))
    assert info.value.key == "000373938"
    assert info.value.field_name == field
    assert message in str(info.value)
    assert "000373938" in str(info.value) and field in str(info.value)
