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
    return config_class(**{**given_values(config_class, args, only=only), **overrides})


def given_values(config_class, args: argparse.Namespace, *, only: tuple[str, ...] | None = None) -> dict[str, Any]:
    """The fields of ``config_class`` that ``args`` holds (all of them, or those given on the command line when
    the flags were added with ``only_given``), as the field values (``KEY=VALUE`` items as a dict, repeated values
    as a tuple); ``only``: just these fields."""
    hints = typing.get_type_hints(config_class)
    values: dict[str, Any] = {}
    for field in flag_fields(config_class):
        if not hasattr(args, field.name) or (only is not None and field.name not in only):
            continue
        value = getattr(args, field.name)
        if value is dataclasses.MISSING:
            continue
        kind, _ = _kinds(hints[field.name])
        if kind is dict:
            value = dict(value or [])
        elif kind is tuple and isinstance(value, list):
            value = tuple(value)
        values[field.name] = value
    return values


def values_from_mapping(config_class, mapping: Any, source: str) -> dict[str, Any]:
    """Field values from a settings file's top-level mapping (keys: the field names, as in ``--help``'s
    flags with ``_`` for ``-``), each checked against the field's type and choices. ValueError, one line
    naming ``source``, for an unknown key (with the closest known one) or a value of the wrong kind."""
    import difflib

    if not isinstance(mapping, dict):
        raise ValueError(f"{source}: expected a mapping of settings (key: value), got {type(mapping).__name__}")
    hints = typing.get_type_hints(config_class)
    fields = {f.name: f for f in flag_fields(config_class)}
    values: dict[str, Any] = {}
    for key, value in mapping.items():
        field = fields.get(key) if isinstance(key, str) else None
        if field is None:
            close = difflib.get_close_matches(str(key).replace("-", "_"), sorted(fields), n=1, cutoff=0.6)
            hint = f" (did you mean {close[0]}?)" if close else " (the keys are the flags' names, with _ for -)"
            raise ValueError(f"{source}: unknown key {key!r}{hint}")
        values[key] = _file_value(field, hints[key], value, source)
    return values


def _file_value(field: dataclasses.Field, annotation, value: Any, source: str) -> Any:
    """One setting from a file as the field's type (what its flag would have produced)."""
    meta = field.metadata
    kind, item_kind = _kinds(annotation)
    optional = type(None) in typing.get_args(annotation)

    def wrong(expected: str):
        return ValueError(f"{source}: {field.name} must be {expected}, got {value!r}")

    if value is None:
        if optional:
            return None
        raise wrong("set (null is not allowed here)")
    if "parse" in meta:  # comma lists and the like: text as on the command line, or a YAML list of texts
        if isinstance(value, (list, tuple)):
            if not all(isinstance(item, str) for item in value):
                raise wrong("a list of texts (quote items such as '00001')")
            value = ",".join(value)
        if not isinstance(value, str):
            raise wrong("text or a list of texts")
        return meta["parse"](value)
    if kind is bool:
        if not isinstance(value, bool):
            raise wrong("true or false")
    elif kind is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise wrong("a whole number")
    elif kind is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise wrong("a number")
        value = float(value)
    elif kind is dict:
        if not isinstance(value, dict) or not all(isinstance(k, str) for k in value):
            raise wrong("a mapping (key: value)")
        value = dict(value)
    elif kind in (tuple, list):
        items = value if isinstance(value, (list, tuple)) else [value]
        if item_kind in (int, float, str) and not all(
                isinstance(item, item_kind) and not isinstance(item, bool) for item in items):
            raise wrong(f"a list of {item_kind.__name__} values")
        value = kind(items)
    elif not isinstance(value, str):
        raise wrong("text")
    if "choices" in meta and value not in meta["choices"]:
        raise wrong("one of " + ", ".join(map(str, meta["choices"])))
    return value


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
