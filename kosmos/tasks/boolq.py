"""BoolQ (SuperGLUE ``BoolQ/val.jsonl``: passage, question, label true/false, idx).

Template: lm-evaluation-harness 0.4 ``super_glue/boolq/default.yaml`` (v0.3.0's ``superglue.py`` writes the same
text)."""
from kosmos.tasks.multiple_choice import Doc, language_task, require


def parse(record: dict, where: str) -> Doc:
    label = require(record, "label", where, (bool, int))
    return Doc(record.get("idx", where), f"{require(record, 'passage', where)}\nQuestion: "
               f"{require(record, 'question', where)}?\nAnswer:", ["no", "yes"], int(bool(label)))


TASK = language_task("boolq", "BoolQ (SuperGLUE jsonl)", "{passage}\nQuestion: {question}?\nAnswer: {no|yes}", parse,
                     ("val.jsonl", "*val*.jsonl"))
