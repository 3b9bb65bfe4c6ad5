"""Winogrande (``dev.jsonl``: sentence with "_", option1, option2, answer "1"/"2"), partial scoring: the sentence up
to the blank with each option is the context, the rest of the sentence the scored continuation.

Template: lm-evaluation-harness 0.4 ``winogrande/default.yaml`` (v0.3.0's ``winogrande.py`` writes the same text)."""
from kosmos.tasks.multiple_choice import Doc, language_task, require


def parse(record: dict, where: str) -> Doc:
    sentence = require(record, "sentence", where)
    if "_" not in sentence:
        raise ValueError(f"{where}: the sentence has no '_' blank")
    answer = str(require(record, "answer", where, (str, int))).strip()
    if answer not in ("1", "2"):
        raise ValueError(f"{where}: answer must be '1' or '2', got {answer!r:.20}")
    blank = sentence.index("_")
    options = [require(record, "option1", where), require(record, "option2", where)]
    return Doc(record.get("qID", where), None, options, int(answer) - 1,
               contexts=[sentence[:blank] + option for option in options], target=sentence[blank + 1:].strip())


TASK = language_task("winogrande", "Winogrande (jsonl)", "{sentence before _}{option} | {rest of sentence}", parse,
                     ("dev.jsonl", "*dev*.jsonl", "*val*.jsonl"), ("train_xl.jsonl", "train*.jsonl"),
                     notes="partial scoring")
