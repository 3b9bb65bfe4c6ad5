"""The Makefile's variables, read from the Makefile itself: `make help` (each target, its description and the
variables it reads with their defaults) and the check that refuses a variable the Makefile does not know
(``make noun-chunks DETECTER=hf``: "unknown variable DETECTER (did you mean DETECTOR?)").

A variable you may set is one the Makefile assigns with ``?=``; a target is documented by ``## text`` at the
end of its rule line. Standard library only: the Makefile runs this file with the system Python, before the
virtual environment exists (``python3 grit_pipeline/make_vars.py help Makefile``).
"""
from __future__ import annotations

import difflib
import re
import sys
from pathlib import Path

ASSIGNMENT = re.compile(r"^(?:export\s+)?([A-Za-z_][A-Za-z0-9_]*)\s*(\?=|:=|::=|\+=|=)\s*(.*)$")
RULE = re.compile(r"^([a-z][a-z0-9-]*)\s*:(?!=)([^#]*?)(?:##\s*(.*))?$")
REFERENCE = re.compile(r"\$[({]([A-Za-z_][A-Za-z0-9_]*)[)}]|\$\(call\s+\w+,([A-Z_][A-Z0-9_]*)")
PASS_THROUGH = re.compile(r"^PASS_THROUGH_PREFIXES\s*:?=\s*(.*)$", re.M)


def definitions(text: str) -> dict[str, tuple[str, str]]:
    """Every variable the Makefile assigns: name -> (operator, value text), continuation lines joined."""
    out: dict[str, tuple[str, str]] = {}
    for line in _logical_lines(text):
        if line.startswith("\t"):
            continue
        match = ASSIGNMENT.match(line)
        if match and not RULE.match(line):
            name, operator, value = match.groups()
            out.setdefault(name, (operator, value.strip()))
    return out


def settable(text: str) -> dict[str, str]:
    """The variables a user sets (assigned with ``?=``): name -> default text."""
    return {name: value for name, (op, value) in definitions(text).items() if op == "?="}


def targets(text: str) -> list[tuple[str, str, list[str]]]:
    """(target, description, settable variables it reads) for every rule with a ``## description``."""
    lines = _logical_lines(text)
    defs, user = definitions(text), settable(text)
    out = []
    for index, line in enumerate(lines):
        match = RULE.match(line)
        if not match or not match.group(3):
            continue
        body = [match.group(2)]
        for following in lines[index + 1:]:
            if not following.startswith("\t"):
                break
            body.append(following)
        used = _closure(" ".join(body), defs)
        out.append((match.group(1), match.group(3).strip(), [name for name in user if name in used]))
    return out


def help_text(text: str) -> str:
    """`make help`: each documented target, then the variables it reads with their defaults."""
    import textwrap

    user = settable(text)
    rows = []
    for target, description, names in targets(text):
        rows.append(f"make {target:<15} {description}")
        names = [name for name in names if name != "PYTHON_BOOT"]  # every target's, for make setup
        if names:
            rows.extend(textwrap.wrap(" ".join(f"{name}={_shown(user[name])}" for name in names), width=118,
                                      initial_indent=" " * 21, subsequent_indent=" " * 21, break_on_hyphens=False))
    rows.append("Variables are set on the command line (make pipeline INPUT=shards OUTPUT=grit); an unknown one is "
                "refused.")
    return "\n".join(rows)


def unknown_variable(names: list[str], text: str) -> str | None:
    """One line for the first of ``names`` (variables set on make's command line) the Makefile does not know."""
    defs = definitions(text)
    known = set(defs) | {m.group(1) or m.group(2) for m in REFERENCE.finditer(text)}
    prefixes = tuple(PASS_THROUGH.search(text).group(1).split()) if PASS_THROUGH.search(text) else ()
    for name in names:
        if name in known or (prefixes and name.startswith(prefixes)) or not re.match(r"^[A-Za-z_]\w*$", name):
            continue
        close = difflib.get_close_matches(name.upper(), sorted(settable(text)), n=1, cutoff=0.6)
        hint = f" (did you mean {close[0]}?)" if close else ""
        return f"unknown variable {name}{hint}; `make help` lists each target's variables"
    return None


def _shown(default: str) -> str:
    if "$(shell" in default:
        default = default[: default.index("$(shell")] + "..."
    return default if " " not in default else f"'{default}'"


def _closure(text: str, defs: dict[str, tuple[str, str]]) -> set[str]:
    """The variables ``text`` reads, directly or through the definitions of those it reads."""
    seen: set[str] = set()
    todo = [m.group(1) or m.group(2) for m in REFERENCE.finditer(text)]
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        if name in defs:
            todo.extend(m.group(1) or m.group(2) for m in REFERENCE.finditer(defs[name][1]))
    return seen


def _logical_lines(text: str) -> list[str]:
    """The Makefile's lines with backslash continuations joined and comment-only lines dropped."""
    out, current = [], ""
    for raw in text.splitlines():
        if not current and raw.lstrip().startswith("#"):
            continue
        if raw.endswith("\\"):
            current += raw[:-1] + " "
            continue
        out.append(current + raw)
        current = ""
    if current:
        out.append(current)
    return out


def main(argv: list[str]) -> int:
    if len(argv) >= 2 and argv[0] == "help":
        print(help_text(Path(argv[1]).read_text()))
        return 0
    if len(argv) >= 2 and argv[0] == "check":
        problem = unknown_variable(argv[2:], Path(argv[1]).read_text())
        if problem:
            print(problem)
        return 0
    print("usage: make_vars.py help MAKEFILE | check MAKEFILE NAME...", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
