"""PIQA (``valid.jsonl``: goal, sol1, sol2, with ``label`` in the record or in the ``valid-labels.lst`` beside it).

Template: lm-evaluation-harness 0.4 ``piqa/piqa.yaml`` (v0.3.0's ``piqa.py`` writes the same text)."""
from pathlib import Path

from kosmos.tasks.multiple_choice import Doc, language_task, require


def parse(record: dict, where: str) -> Doc:
    return Doc(record.get("id", where), f"Question: {require(record, 'goal', where)}\nAnswer:",
               [require(record, "sol1", where), require(record, "sol2", where)],
               int(require(record, "label", where, (int, str))))


def read(path: str, what: str) -> list:
    """PIQA's own layout keeps the labels in ``NAME-labels.lst``, one per line: merged into the records."""
    from kosmos.evaluate.formats.common import read_records

    records = read_records(path, what)
    labels = Path(path).with_name(Path(path).stem + "-labels.lst")
    if not labels.exists():
        return records
    values = [line.strip() for line in labels.read_text().splitlines() if line.strip()]
    if len(values) != len(records):
        raise ValueError(f"{what} {labels}: {len(values)} labels for the {len(records)} records of {path}")
    return [(where, {**record, "label": label}) for (where, record), label in zip(records, values)]


TASK = language_task("piqa", "PIQA (jsonl; labels inline or in NAME-labels.lst)", "Question: {goal}\nAnswer: {sol}",
                     parse, ("valid.jsonl", "*val*.jsonl"), ("train.jsonl",), read=read)
