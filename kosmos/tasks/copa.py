"""COPA (SuperGLUE ``COPA/val.jsonl``: premise, choice1, choice2, question cause/effect, label 0/1)."""
from kosmos.tasks.multiple_choice import Doc, language_task, require

CONNECTORS = {"cause": "because", "effect": "therefore"}


def parse(record: dict, where: str) -> Doc:
    question = require(record, "question", where)
    if question not in CONNECTORS:
        raise ValueError(f"{where}: question must be 'cause' or 'effect', got {question!r:.30}")
    choices = [require(record, n, where) for n in ("choice1", "choice2")]
    # lm-evaluation-harness: the premise loses its full stop, the connector follows, the choice starts lower-case
    return Doc(record.get("idx", where), require(record, "premise", where).strip()[:-1] + f" {CONNECTORS[question]}",
               [c[:1].lower() + c[1:] for c in choices], int(require(record, "label", where, (int, str))))


TASK = language_task("copa", "COPA (SuperGLUE jsonl)", "{premise without '.'} because|therefore {choice}", parse,
                     ("val.jsonl", "*val*.jsonl"))
