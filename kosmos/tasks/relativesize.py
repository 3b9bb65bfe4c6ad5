"""RelativeSize (Bagherinezhad et al. 2016), one of Kosmos-1's cross-modal transfer tasks (visual commonsense
reasoning, text only): is one object larger than another.

File: the object-pair list as Bagherinezhad et al. distribute it (``sizePairsFull.txt``, also VaLM's
``data/object_size/sizePairsFull.txt``): one pair per line, ``LARGER SMALLER`` separated by white space (486
pairs of 41 objects). Prompt (Kosmos-1): ``Is {Item1} larger than {Item2}? {Answer}``, ``Yes`` and ``No`` ranked by
log-likelihood. ``relativesize`` asks each pair as written (the right answer is always Yes, as in the paper and
VaLM's script); ``relativesize-both`` also asks it reversed (right answer No), so that a model answering Yes to
everything scores 50% instead of 100%."""
from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from kosmos.tasks.base import Inputs, first_existing
from kosmos.tasks.multiple_choice import Doc, language_task

ANSWERS = ["No", "Yes"]  # ties go to the first: a tie counts as No (VaLM counts Yes only when P(Yes) > P(No))
FILES = ("sizePairsFull.txt", "*.txt")


def read_pairs(path, what: str, both: bool = False) -> list[tuple[str, dict]]:
    """``(where, {"id", "item1", "item2", "larger"})`` per question; a line that is not two objects is one error
    naming the file and line."""
    path = Path(path)
    if not path.exists():
        raise ValueError(f"{what} {path}: no such file")
    if path.is_dir():
        raise ValueError(f"{what} {path}: is a directory, expected a file")
    try:
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as error:
        raise ValueError(f"{what} {path}: not UTF-8 text ({error})") from None
    out = []
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        where = f"{what} {path}:{number}"
        objects = line.split()
        if len(objects) != 2:
            raise ValueError(f"{where}: expected two objects, the larger then the smaller, got {line.strip()!r:.60}")
        larger, smaller = objects
        out.append((where, {"id": str(number), "item1": larger, "item2": smaller, "larger": True}))
        if both:
            out.append((where, {"id": f"{number}r", "item1": smaller, "item2": larger, "larger": False}))
    return out


def parse(record: dict, where: str) -> Doc:
    return Doc(record["id"], f"Is {record['item1']} larger than {record['item2']}?", list(ANSWERS),
               ANSWERS.index("Yes" if record["larger"] else "No"))


def find_pairs(root: Path) -> Inputs | None:
    """Suite layout: ``DIR/relativesize/sizePairsFull.txt`` (any ``*.txt`` there), for both tasks."""
    path = first_existing(root / "relativesize", *FILES)
    return Inputs(annotations=str(path), train=str(path)) if path else None


NOTES = "Kosmos-1 cross-modal transfer, text only"
DEMONSTRATIONS = "none in the paper; --train FILE (the suite: the evaluation file, the query excluded)"
TASKS = [
    replace(language_task("relativesize", "RelativeSize (Bagherinezhad et al. 2016 sizePairsFull.txt: LARGER SMALLER "
                                          "per line)", "Is {Item1} larger than {Item2}? {Yes|No}", parse, FILES,
                          demonstrations=DEMONSTRATIONS, notes=NOTES + "; the right answer is always Yes",
                          read=read_pairs), shots=(0,), find=find_pairs),
    replace(language_task("relativesize-both", "RelativeSize, each pair asked both ways (not in the paper)",
                          "Is {Item1} larger than {Item2}? {Yes|No}, and Is {Item2} larger than {Item1}? {Yes|No}",
                          parse, FILES, demonstrations=DEMONSTRATIONS, notes=NOTES + "; Yes and No each half right",
                          read=lambda path, what: read_pairs(path, what, both=True)), shots=(0,), find=find_pairs),
]
