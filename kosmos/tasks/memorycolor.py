"""MemoryColor (Norlund et al. 2021), one of Kosmos-1's cross-modal transfer tasks (visual commonsense reasoning,
text only): the typical colour of an object, ranked over the 11 basic colour words.

File: the CSV as Norlund et al.'s data is distributed (VaLM's ``data/object_color/memory_color_data.csv``),
header ``Index,Descriptor,Item,Color``: ``Descriptor`` is optional ("a", "the inside of a", or empty) and goes
before the item ("the inside of a pineapple"); ``Color`` is one of the 11 colours. Prompt (Kosmos-1):
``The color of {object} is? {colour}``, every colour scored as the continuation, the highest summed
log-likelihood wins (``acc``; ``acc_norm`` beside it). ColorTerms (``colorterms.py``) shares all of this but its
file."""
from __future__ import annotations

from dataclasses import replace
from typing import Callable

from kosmos.tasks.base import Task
from kosmos.tasks.multiple_choice import Doc, language_task, require

# Berlin and Kay's basic colour terms, spelt as both files spell them ("grey"); the order breaks ties (first wins)
COLOURS = ("red", "white", "green", "yellow", "blue", "black", "brown", "orange", "pink", "grey", "purple")
SPELLINGS = {"gray": "grey"}
PROMPT = "The color of {object} is?"


def line_id(where: str) -> str:
    """The line (or row) number of a record: its id when the file has none (stable however the path is spelt)."""
    return where.rsplit(":", 1)[-1].strip()


def colour_index(value: str, where: str) -> int:
    colour = " ".join(value.split()).lower()
    colour = SPELLINGS.get(colour, colour)
    if colour not in COLOURS:
        raise ValueError(f"{where}: colour {value!r:.30} is not one of the 11 basic colours ({', '.join(COLOURS)})")
    return COLOURS.index(colour)


def colour_doc(doc_id, obj: str, colour: str, where: str) -> Doc:
    """One item: the paper's prompt about ``obj``, the 11 colours as candidates, ``colour`` the right one."""
    obj = " ".join(obj.split())
    if not obj:
        raise ValueError(f"{where}: the object is empty")
    return Doc(doc_id, PROMPT.format(object=obj), list(COLOURS), colour_index(colour, where))


def parse(record: dict, where: str) -> Doc:
    descriptor = record.get("Descriptor") or ""
    if not isinstance(descriptor, str):
        raise ValueError(f"{where}: field 'Descriptor' must be str, got {descriptor!r:.30}")
    index = record.get("Index")
    return colour_doc(str(index).strip() if index not in (None, "") else line_id(where),
                      f"{descriptor} {require(record, 'Item', where)}", require(record, "Color", where), where)


def colour_task(name: str, benchmark: str, prompt: str, parse: Callable[[dict, str], Doc],
                eval_files: tuple[str, ...]) -> Task:
    """A zero-shot colour task (the paper's); ``--shots k`` with ``--train`` works as for any multiple-choice task,
    and the suite's pool is the evaluation file itself, the query excluded."""
    task = language_task(name, benchmark, prompt, parse, eval_files, train_files=("train.csv",),
                         demonstrations="none in the paper; --train FILE (the suite: the evaluation file, the query "
                                        "excluded)",
                         notes="Kosmos-1 cross-modal transfer, text only; candidates: the 11 basic colours")
    return replace(task, shots=(0,))


TASK = colour_task("memorycolor", "MemoryColor (Norlund et al. 2021 CSV: Index, Descriptor, Item, Color)",
                   "The color of {Descriptor} {Item} is? {red|white|green|yellow|blue|black|brown|orange|pink|grey|"
                   "purple}", parse, ("memory_color_data.csv", "*.csv"))
