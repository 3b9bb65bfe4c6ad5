"""Command-line flags generated from config dataclasses: every setting is declared once, as a field.

A field becomes the flag ``--field-name`` with the field's default and the help text of its metadata::

    box_threshold: float = field(default=0.65, metadata={"help": "keep (chunk, box) pairs with score > this"})

The type comes from the annotation (``int``, ``float``, ``str``, their ``| None`` forms, ``bool``,
``tuple``/``list`` and ``dict``). Optional metadata keys, for flags that are not plain:

- ``flag``: the flag's spelling when it is not ``--field-name`` (e.g. ``"--no-letterbox-check"``);
- ``cli``: ``False`` for a field that has no flag (set by code, not by users);
- ``group``: the argparse group it is listed under in ``--help``;
- ``choices``, ``metavar``, ``nargs``, ``const``: as in ``argparse.add_argument``;
- ``parse``: a function from the command-line string to the value (comma lists and the like);
- ``default_help``: how ``--help`` describes the default when the value alone says little.

``bool`` fields are switches: ``--x`` sets True when the default is False, ``--no-x`` (or ``flag``) sets
False when it is True. ``dict`` fields take repeated ``KEY=VALUE`` items.
"""
from __future__ import annotations

import argparse
import dataclasses
import types
import typing
from typing import Any


def field_flag(field: dataclasses.Field) -> str | None:
    """The command-line flag of a config field (None when the field has none)."""
    if field.metadata.get("cli") is False:
        return None
    if "flag" in field.metadata:
        return field.metadata["flag"]
    default = field_default(field)
    prefix = "--no-" if default is True else "--"
    return prefix + field.name.replace("_", "-")


def field_default(field: dataclasses.Field) -> Any:
    """The field's default value (``dataclasses.MISSING`` when it has none)."""
    if field.default is not dataclasses.MISSING:
        return field.default
    if field.default_factory is not dataclasses.MISSING:  # type: ignore[misc]
        return field.default_factory()  # type: ignore[misc]
    return dataclasses.MISSING


def flag_fields(config_class) -> list[dataclasses.Field]:
    """The fields of ``config_class`` that have a command-line flag."""
    return [f for f in dataclasses.fields(config_class) if field_flag(f) is not None]


def add_config_arguments(parser: argparse.ArgumentParser, config_class, *, only: tuple[str, ...] | None = None,
                         required: tuple[str, ...] = (), optional: tuple[str, ...] = (),
                         only_given: bool = False) -> None:
    """Add one flag per field of ``config_class`` (or per field named in ``only``, for a command that takes
    a part of the settings).

    Fields without a default are required, as are those in ``required``; those in ``optional`` are not.
    ``only_given``: flags not on the command line leave no attribute (argparse.SUPPRESS), so
    ``config_from_args`` falls back to the dataclass's own defaults; for partial option sets.
    """
    hints = typing.get_type_hints(config_class)
    groups: dict[str, Any] = {}
    for field in flag_fields(config_class):
        if only is not None and field.name not in only:
            continue
        meta = field.metadata
        if "help" not in meta:
            raise TypeError(f"{config_class.__name__}.{field.name} has a flag but no help text in its metadata")
        target = parser
        if meta.get("group"):
            if meta["group"] not in groups:
                groups[meta["group"]] = parser.add_argument_group(meta["group"])
            target = groups[meta["group"]]
        default = field_default(field)
        kind, item_kind = _kinds(hints[field.name])
        kwargs: dict[str, Any] = {"dest": field.name, "help": _help(meta, default)}
        for key in ("choices", "metavar", "nargs", "const"):
            if key in meta:
                kwargs[key] = meta[key]
        if kind is bool:
            kwargs["action"] = "store_false" if default is True else "store_true"
            kwargs.pop("metavar", None)
        elif kind is dict:
            kwargs.update(action="append", type=_key_value, metavar=meta.get("metavar", "KEY=VALUE"))
            default = None  # append extends its default in place: start from nothing
        else:
            parse = meta.get("parse") or (item_kind if "nargs" in meta else kind)
            if parse is not None and parse is not str:
                kwargs["type"] = parse
        is_required = field.name in required or (default is dataclasses.MISSING and field.name not in optional)
        if is_required:
            kwargs["required"] = True
        if only_given:
            kwargs["default"] = argparse.SUPPRESS
        elif default is not dataclasses.MISSING:
            kwargs["default"] = default
        target.add_argument(field_flag(field), **kwargs)


def config_from_args(config_class, args: argparse.Namespace, *, only: tuple[str, ...] | None = None, **overrides):
    """Build ``config_class`` from parsed flags (the dataclass default for anything not given); ``only``: the
    fields ``add_config_arguments`` was given, when the command has other flags of the same names."""
    values: dict[str, Any] = {}
    hints = typing.get_type_hints(config_class)
    for field in flag_fields(config_class):
        if not hasattr(args, field.name) or (only is not None and field.name not in only):
            continue
        value = getattr(args, field.name)
        kind, _ = _kinds(hints[field.name])
        if kind is dict:
            value = dict(value or [])
        elif kind is tuple and isinstance(value, list):
            value = tuple(value)
        if value is dataclasses.MISSING:
            continue
        values[field.name] = value
    values.update(overrides)
    return config_class(**values)


def config_options(config_class, args: argparse.Namespace) -> dict[str, Any]:
    """The fields of ``config_class`` given on the command line (for flags added with ``only_given``)."""
    return {f.name: getattr(args, f.name) for f in flag_fields(config_class) if hasattr(args, f.name)}


def comma_list(text: str) -> tuple[str, ...]:
    """``"a, b,,c"`` -> ``("a", "b", "c")``."""
    return tuple(item.strip() for item in text.split(",") if item.strip())


def option_value(text: str):
    """A ``KEY=VALUE`` value as int, float, bool, None or text."""
    for cast in (int, float):
        try:
            return cast(text)
        except ValueError:
            pass
    return {"true": True, "false": False, "none": None}.get(text.lower(), text)


def _key_value(text: str) -> tuple[str, Any]:
    if "=" not in text:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    key, value = text.split("=", 1)
    return key.strip(), option_value(value.strip())


def _help(meta, default) -> str:
    text = meta["help"]
    shown = meta.get("default_help")
    if shown is None and not isinstance(default, bool) and default not in (None, "", (), [], {}, dataclasses.MISSING):
        shown = ",".join(map(str, default)) if isinstance(default, (tuple, list)) else str(default)
    return f"{text} (default: {shown})" if shown else text


def _kinds(annotation) -> tuple[Any, Any]:
    """(base type, element type) of an annotation, ``X | None`` unwrapped."""
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        members = [a for a in typing.get_args(annotation) if a is not type(None)]
        if len(members) == 1:
            return _kinds(members[0])
        return str, None
    if origin in (tuple, list):
        args = [a for a in typing.get_args(annotation) if a is not Ellipsis]
        return origin, (args[0] if args else str)
    if origin is dict or annotation is dict:
        return dict, None
    if annotation in (bool, int, float, str, tuple, list):
        return annotation, str
    return str, None
