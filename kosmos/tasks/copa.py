"""COPA (SuperGLUE ``COPA/val.jsonl``: premise, choice1, choice2, question cause/effect, label 0/1).

Two lm-evaluation-harness templates, the same context (the premise without its full stop, then "because" or
"therefore"), choices written differently (``--template``):

- ``harness-legacy`` (default): lm-evaluation-harness v0.3.0, ``lm_eval/tasks/superglue.py`` class ``Copa``: each
  choice's first letter lower-cased (``convert_choice``), as the harness of Kosmos-1's time scored it;
- ``harness-current``: the YAML task of the 0.4 line, ``lm_eval/tasks/super_glue/copa/default.yaml`` (task version
  1.0): ``doc_to_choice: [choice1, choice2]``, the choices as written.
"""
from kosmos.tasks.multiple_choice import Doc, language_task, require

CONNECTORS = {"cause": "because", "effect": "therefore"}


def parse_as_written(record: dict, where: str) -> Doc:
    question = require(record, "question", where)
    if question not in CONNECTORS:
        raise ValueError(f"{where}: question must be 'cause' or 'effect', got {question!r:.30}")
    choices = [require(record, n, where) for n in ("choice1", "choice2")]
    # the harness: the premise loses its full stop, the connector follows
    return Doc(record.get("idx", where), require(record, "premise", where).strip()[:-1] + f" {CONNECTORS[question]}",
               choices, int(require(record, "label", where, (int, str))))


def parse(record: dict, where: str) -> Doc:
    """The v0.3.0 template: as written, then each choice starts lower-case."""
    doc = parse_as_written(record, where)
    return Doc(doc.id, doc.context, [c[:1].lower() + c[1:] for c in doc.choices], doc.gold)


TASK = language_task("copa", "COPA (SuperGLUE jsonl)", "{premise without '.'} because|therefore {choice}",
                     {"harness-legacy": parse, "harness-current": parse_as_written}, ("val.jsonl", "*val*.jsonl"),
                     notes="templates: harness-legacy (lm-eval v0.3.0, choices lower-cased; default), harness-current "
                           "(super_glue/copa/default.yaml, choices as written)")
