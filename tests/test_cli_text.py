"""`grit spans` and `grit serialize` as users call them."""
import io
import json
import subprocess
import sys

import pyarrow.parquet as pq

from grit_pipeline.cli import main
from grit_pipeline.record import GritRecord, records_to_table


def run_cli(capsys, monkeypatch, argv, stdin=""):
    monkeypatch.setattr(sys, "stdin", io.StringIO(stdin))
    code = main(argv)
    out, err = capsys.readouterr()
    return code, out, err


def test_spans_from_arguments_and_stdin(capsys, monkeypatch):
    code, out, _ = run_cli(capsys, monkeypatch, ["spans", "a dog in a field of flowers"])
    assert code == 0
    row = json.loads(out)
    assert row == {"caption": "a dog in a field of flowers", "noun_chunks": [[0, 5], [9, 16], [20, 27]],
                   "ref_exps": [[0, 27], [9, 27], [20, 27]]}
    code, out, _ = run_cli(capsys, monkeypatch, ["spans", "--text"], stdin="a moment of peace\n\na red cube\n")
    rows = [json.loads(line) for line in out.splitlines()]
    assert [r["caption"] for r in rows] == ["a moment of peace", "", "a red cube"]
    assert rows[0]["noun_chunk_texts"] == ["a moment"]
    assert rows[1]["error"] == "caption is empty or whitespace only"
    code, out, _ = run_cli(capsys, monkeypatch, ["spans", "--abstract-nouns", "", "a moment of peace"])
    assert json.loads(out)["noun_chunks"] == [[0, 8], [12, 17]]


def record_line(key, caption, spans):
    return json.dumps({"key": key, "caption": caption, "width": 10, "height": 10,
                       "noun_chunks": spans, "ref_exps": spans})


def test_serialize_reports_bad_records_and_continues(capsys, monkeypatch):
    good = record_line("good", "a dog", [[0, 5, 0.1, 0.1, 0.5, 0.5, 0.9]])
    low = record_line("low", "a cat", [[0, 5, 0.1, 0.1, 0.5, 0.5, 0.5]])
    bad = record_line("bad", "a", [[0, 5, 0.1, 0.1, 0.5, 0.5, 0.9]])
    stdin = "\n".join([good, "{not json", bad, low, "[1, 2]"]) + "\n"
    code, out, err = run_cli(capsys, monkeypatch, ["serialize"], stdin=stdin)
    assert code == 1
    # (0.1, 0.1, 0.5, 0.5): the lower-right corner lies on a cell edge, the released loader's cell 16 * 32 + 16;
    # the low-score record has no link left: its plain caption, without <grounding>
    assert out.splitlines() == ["<grounding><phrase>a dog</phrase><object><patch_index_0099><patch_index_0528></object>",
                                "a cat"]
    assert "line 2: not valid JSON" in err
    assert "record 'bad': field 'noun_chunks[0]'" in err
    assert "line 5: expected a JSON object" in err
    assert "3 of 5 records failed" in err


def test_serialize_flags_and_parquet_input(capsys, monkeypatch, tmp_path):
    record = GritRecord(key="k", caption="a dog", width=10, height=10,
                        noun_chunks=[[0, 5, 0.1, 0.1, 0.5, 0.5, 0.5]], ref_exps=[[0, 5, 0.1, 0.1, 0.5, 0.5, 0.5]])
    path = tmp_path / "g.parquet"
    pq.write_table(records_to_table([record]), path)
    code, out, _ = run_cli(capsys, monkeypatch, ["serialize", "--input", str(path), "--format", "paper",
                                                 "--min-score", "0.4", "--jsonl"])
    assert code == 0
    assert json.loads(out) == {"key": "k", "grounded_text": "<grounding><p>a dog</p><box><loc_99><loc_528></box>"}
    code, out, _ = run_cli(capsys, monkeypatch, ["serialize", "--input", str(path), "--min-score", "0.4",
                                                 "--cell-rule", "transformers"])
    assert out.strip() == "<grounding><phrase>a dog</phrase><object><patch_index_0099><patch_index_0495></object>"
    code, _, err = run_cli(capsys, monkeypatch, ["serialize", "--input", str(tmp_path / "missing.parquet")])
    assert code == 1 and "cannot read parquet" in err


def test_serialize_hostile_lines_are_one_line_errors(capsys, monkeypatch):
    good = record_line("good", "a dog", [[0, 5, 0.1, 0.1, 0.5, 0.5, 0.9]])
    huge_int = good.replace("0.9]", "9" * 5000 + "]")
    huge_float = good.replace("0.9]", "1" + "0" * 400 + "]")
    deep = "[" * 100_000 + "]" * 100_000
    stdin = "\n".join([huge_int, huge_float, deep, good]) + "\n"
    code, out, err = run_cli(capsys, monkeypatch, ["serialize"], stdin=stdin)
    assert code == 1 and len(out.splitlines()) == 1
    lines = err.splitlines()
    assert lines[0].startswith("grit serialize: line 1: not valid JSON") and "4300 digits" in lines[0]
    assert lines[1].startswith("grit serialize: line 2: ") or lines[1].startswith("grit serialize: record 'good'")
    assert lines[2] == "grit serialize: line 3: not valid JSON: nested too deeply"
    assert lines[3] == "grit serialize: 3 of 4 records failed" and "Traceback" not in err


def test_serialize_grid_must_be_positive(capsys, monkeypatch):
    good = record_line("good", "a dog", [[0, 5, 0.1, 0.1, 0.5, 0.5, 0.9]])
    for grid in ("0", "-1", "x"):
        try:
            code = main(["serialize", "--grid", grid])
        except SystemExit as exit_:
            code = exit_.code
        _, err = capsys.readouterr()
        assert code == 2 and "argument --grid" in err and "Traceback" not in err
    code, out, _ = run_cli(capsys, monkeypatch, ["serialize", "--grid", "1"], stdin=good + "\n")
    assert code == 0 and out.strip().endswith("<patch_index_0000><patch_index_0000></object>")


def test_console_script_runs():
    result = subprocess.run([sys.executable, "-m", "grit_pipeline", "spans", "two cats"], capture_output=True,
                            text=True, check=True)
    assert json.loads(result.stdout)["noun_chunks"] == [[0, 8]]
