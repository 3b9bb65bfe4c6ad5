"""HellaSwag (rowanz/hellaswag ``hellaswag_val.jsonl``: ctx_a, ctx_b, activity_label, endings, label).

Template: lm-evaluation-harness 0.4 ``hellaswag/utils.py`` (v0.3.0's ``hellaswag.py`` writes the same text)."""
import re

from kosmos.tasks.multiple_choice import Doc, language_task, require


def preprocess(text: str) -> str:
    """lm-evaluation-harness's cleaning of WikiHow artifacts."""
    text = text.strip().replace(" [title]", ". ")
    text = re.sub("\\[.*?\\]", "", text)
    return text.replace("  ", " ")


def parse(record: dict, where: str) -> Doc:
    ctx = require(record, "ctx_a", where) + " " + require(record, "ctx_b", where).capitalize()
    endings = require(record, "endings", where, list)
    if not endings or not all(isinstance(e, str) for e in endings):
        raise ValueError(f"{where}: 'endings' must be a list of strings")
    label = require(record, "label", where, (int, str))
    return Doc(record.get("ind", where), preprocess(require(record, "activity_label", where) + ": " + ctx),
               [preprocess(e) for e in endings], int(label))


TASK = language_task("hellaswag", "HellaSwag (jsonl)", "{activity_label}: {ctx_a} {ctx_b} {ending}", parse,
                     ("*val*.jsonl", "*.jsonl"), ("*train*.jsonl",))
