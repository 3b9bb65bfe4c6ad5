"""Winograd Schema Challenge, 273 schemas (the ``winograd_wsc`` wsc273 files: text, pronoun, pronoun_loc, options,
label), partial scoring as lm-evaluation-harness: the text up to the pronoun with each option is the context,
the text after the pronoun the scored continuation.

Template: lm-evaluation-harness 0.4 ``wsc273/default.yaml`` + ``utils.py`` (v0.3.0's ``wsc273.py`` writes the same
text)."""
from kosmos.tasks.multiple_choice import Doc, language_task, require

UPPER_PRONOUNS = ["A", "An", "The", "She", "He", "It", "They", "My", "His", "Her", "Their"]


def normalise_option(text: str, pronoun: str, pronoun_loc: int, option: str) -> str:
    """lm-evaluation-harness: a possessive pronoun makes the option possessive; the option's first word is
    lower-cased inside a sentence."""
    if pronoun.lower() in ("my", "his", "her", "our", "their"):
        option += "'s"
    first = option.split()[0]
    start_of_sentence = text[pronoun_loc - 2] == "."
    if not start_of_sentence and first in UPPER_PRONOUNS:
        return option.replace(first, first.lower())
    return option


def parse(record: dict, where: str) -> Doc:
    text = require(record, "text", where)
    pronoun, loc = require(record, "pronoun", where), require(record, "pronoun_loc", where, int)
    options = require(record, "options", where, list)
    if len(options) != 2 or not all(isinstance(o, str) and o.strip() for o in options):
        raise ValueError(f"{where}: 'options' must be two strings")
    if text[loc:loc + len(pronoun)] != pronoun:
        raise ValueError(f"{where}: pronoun {pronoun!r} is not at pronoun_loc {loc}")
    options = [normalise_option(text, pronoun, loc, o) for o in options]
    return Doc(record.get("idx", where), None, options, int(require(record, "label", where, int)),
               contexts=[text[:loc] + o for o in options], target=text[loc + len(pronoun):].strip())


TASK = language_task("wsc273", "WSC273 (winograd_wsc jsonl/parquet)", "{text before pronoun}{option} | {rest}", parse,
                     ("*wsc273*.jsonl", "*wsc273*.parquet", "test.jsonl", "*.parquet"), ("train*.jsonl",),
                     demonstrations="the evaluation file itself (WSC273 has no training split), query excluded",
                     notes="partial scoring")
