"""CommitmentBank (SuperGLUE ``CB/val.jsonl``: premise, hypothesis, label entailment/contradiction/neutral).

Template: lm-evaluation-harness 0.4 ``super_glue/cb/default.yaml`` ("True, False, or Neither?"; v0.3.0's
``superglue.py`` wrote "True, False or Neither?", not offered)."""
from kosmos.tasks.multiple_choice import Doc, language_task, require

LABELS = {"entailment": 0, "contradiction": 1, "neutral": 2}


def parse(record: dict, where: str) -> Doc:
    label = require(record, "label", where, (str, int))
    if isinstance(label, str) and label not in LABELS:
        raise ValueError(f"{where}: label must be one of {sorted(LABELS)}, got {label!r:.30}")
    return Doc(record.get("idx", where), f"{require(record, 'premise', where)}\nQuestion: "
               f"{require(record, 'hypothesis', where)}. True, False, or Neither?\nAnswer:",
               ["True", "False", "Neither"], LABELS[label] if isinstance(label, str) else label)


TASK = language_task("cb", "CommitmentBank (SuperGLUE jsonl)",
                     "{premise}\nQuestion: {hypothesis}. True, False, or Neither?\nAnswer: {True|False|Neither}",
                     parse, ("val.jsonl", "*val*.jsonl"))
