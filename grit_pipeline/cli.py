"""The ``grit`` command line. Each subcommand lives in ``grit_pipeline.commands.<module>``.

A command module defines ``HELP`` (one line), ``add_arguments(parser)`` and ``run(args) -> int``;
heavy imports (torch, spaCy, Ray) happen inside ``run`` so ``grit --help`` stays instant.
"""
from __future__ import annotations

import argparse
import importlib
import sys

# (subcommand, module under grit_pipeline.commands)
COMMANDS = [
    ("spans", "spans"),
    ("serialize", "serialize"),
    ("ground", "ground"),
    ("synth", "synth"),
    ("evaluate-grounding", "evaluate_grounding"),
    ("flickr30k", "flickr30k"),
    ("calibrate", "calibrate"),
    ("download", "download"),
    ("run", "run"),
    ("stage", "stage"),
    ("instruct", "instruct"),
    ("stats", "stats"),
    ("card", "card"),
    ("convert", "convert"),
    ("gallery", "gallery"),
    ("report", "report"),
]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="grit", description="Build GRIT grounded image-text data (Kosmos-2) from image-caption shards."
    )
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, module_name in COMMANDS:
        module = importlib.import_module(f"grit_pipeline.commands.{module_name}")
        sub = subparsers.add_parser(name, help=module.HELP, description=module.HELP)
        module.add_arguments(sub)
        sub.set_defaults(_run=module.run)
    return parser


def main(argv: list[str] | None = None) -> int:
    return dispatch(build_parser(), argv)


def dispatch(parser: argparse.ArgumentParser, argv: list[str] | None = None) -> int:
    """Parse ``argv`` and run the chosen subcommand's ``_run`` (help and exit 2 when none was chosen).

    A flag no parser on the command's path knows is reported first, with the closest known flag
    (``--inptu`` -> "did you mean --input?"), rather than as a missing required flag."""
    argv = sys.argv[1:] if argv is None else [str(a) for a in argv]
    unknown = unknown_flag(parser, argv)
    if unknown:
        command_parser, message = unknown
        print(f"{command_parser.prog}: error: {message}; `{command_parser.prog} -h` lists the flags", file=sys.stderr)
        return 2
    args = parser.parse_args(argv)
    if not getattr(args, "_run", None):
        parser.print_help()
        return 2
    try:
        code = int(args._run(args) or 0)
        sys.stdout.flush()
        return code
    except BrokenPipeError:
        return _closed_pipe()
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except Exception as error:  # noqa: BLE001 - the last net: one clear line, never a traceback
        import os

        if os.environ.get("GRIT_TRACEBACK"):
            raise
        print(f"{parser.prog} {args.command}: error: {describe_error(error)}", file=sys.stderr)
        return 1


def _closed_pipe() -> int:
    """The reader of our output went away (``grit stats DIR | head -2``): stop quietly, as Unix tools do.

    Whatever is still buffered for stdout goes to /dev/null, so neither the interpreter's final flush nor a
    library's thread at exit meets the broken pipe (which once ended in a C++ ``terminate``, exit 134)."""
    import os

    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):
        pass
    return 141  # 128 + SIGPIPE, what a Unix tool killed by the closed pipe returns


def unknown_flag(parser: argparse.ArgumentParser, argv: list[str]) -> tuple[argparse.ArgumentParser, str] | None:
    """The first ``--flag`` in ``argv`` that neither ``parser`` nor the subcommand parsers named in ``argv``
    take (exactly or as argparse's unique abbreviation): (the innermost parser, "unrecognized argument --x
    (did you mean --y?)"); None when every flag is known."""
    import difflib

    current, known = parser, set(parser._option_string_actions)
    flags = []
    for token in argv:
        if token == "--":
            break
        if token.startswith("--") and len(token) > 2:
            flags.append(token.split("=", 1)[0])
            continue
        sub = next((a for a in current._actions if isinstance(a, argparse._SubParsersAction)), None)
        if sub is not None and token in sub.choices:
            current = sub.choices[token]
            known |= set(current._option_string_actions)
    for flag in flags:
        if flag in known or len([k for k in known if k.startswith(flag)]) == 1:
            continue
        close = difflib.get_close_matches(flag, sorted(k for k in known if k.startswith("--")), n=1, cutoff=0.6)
        return current, f"unrecognized argument {flag}" + (f" (did you mean {close[0]}?)" if close else "")
    return None


def describe_error(error: BaseException) -> str:
    """One line for an error that reached the command line: what failed, on which file, what to do."""
    import errno

    if isinstance(error, OSError):
        where = f" ({error.filename})" if getattr(error, "filename", None) else ""
        hints = {
            errno.ENOSPC: "no space left on the device; free space and rerun (finished shards are kept)",
            errno.EROFS: "the file system is read-only; choose a writable --output",
            errno.EACCES: "permission denied",
            errno.EDQUOT: "disk quota exceeded; free space and rerun (finished shards are kept)",
        }
        text = hints.get(error.errno) or error.strerror or str(error) or type(error).__name__
        return f"{text}{where}"
    if isinstance(error, MemoryError):
        return "out of memory"
    if isinstance(error, ValueError):  # grit's own refusals (bad values, unsafe files) are worded for users
        return " ".join(str(error).split())[:500]
    message = " ".join(str(error).split())[:500]
    return f"{type(error).__name__}: {message} (GRIT_TRACEBACK=1 shows where)"


if __name__ == "__main__":
    sys.exit(main())
