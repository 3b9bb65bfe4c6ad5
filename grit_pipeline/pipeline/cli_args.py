"""Command-line flags shared by `grit run` and `grit stage`, generated from ``PipelineConfig``'s fields,
and ``--config FILE``: the same settings from a YAML/JSON file, the command line's flags over the file's."""
from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from grit_pipeline import config_flags

from .config import PipelineConfig

# A build's _run.json: its "params" (what the output depends on) and these top-level settings are a config;
# the rest (versions, the last run's counts, the command) describes the run.
RUN_FILE_SETTINGS = ("engine", "ray_address")


def add_pipeline_arguments(parser: argparse.ArgumentParser, input_required: bool = True) -> None:
    """One flag per ``PipelineConfig`` field plus ``--config``; ``--output`` always required, ``--input`` when
    asked (on the command line or in the file: checked by ``config_from_args``)."""
    parser.add_argument("--config", metavar="FILE.yaml",
                        help="settings from a YAML or JSON file (a build's _run.json too), one key per flag named "
                             "as the flag with _ for - (box_threshold: 0.3); flags given here override the file")
    # Flags not given leave no attribute, so the file's value (or the field's default) stays.
    config_flags.add_config_arguments(parser, PipelineConfig, only_given=True)
    parser.set_defaults(_pipeline_required=("input", "output") if input_required else ("output",))


def config_from_args(args: argparse.Namespace) -> PipelineConfig:
    """The ``PipelineConfig`` the parsed flags describe: the field defaults, then ``--config``'s file, then the
    flags given (an empty --model / --ray-address means unset). ValueError (one line) for a bad file or a
    required setting given nowhere."""
    values: dict[str, Any] = {}
    if getattr(args, "config", None):
        values.update(load_config_file(args.config))
    values.update(config_flags.given_values(PipelineConfig, args))
    for name in getattr(args, "_pipeline_required", ("output",)):
        if not values.get(name):
            where = f" or `{name}:` in {args.config}" if getattr(args, "config", None) else ""
            raise ValueError(f"--{name} is required (on the command line{where})")
    config = PipelineConfig(**values)
    return config.replace(model=config.model or None, ray_address=config.ray_address or None)


def load_config_file(path: str) -> dict[str, Any]:
    """The settings of a ``--config`` file: a mapping of field names to values, or a build's ``_run.json``
    (its ``params`` and ``engine`` / ``ray_address``). ValueError, one line, for anything else."""
    import yaml  # PyYAML comes with Ray; YAML 1.1 reads JSON too

    from grit_pipeline.limits import MAX_JSON_BYTES

    try:
        if Path(path).is_file() and Path(path).stat().st_size > MAX_JSON_BYTES:
            raise ValueError(f"--config {path}: larger than {MAX_JSON_BYTES:,} bytes, not a settings file")
        text = Path(path).read_text(encoding="utf-8")
    except OSError as error:
        raise ValueError(f"--config {path}: cannot read it ({error.strerror or error})") from None
    except UnicodeDecodeError:
        raise ValueError(f"--config {path}: not a text file") from None
    try:
        data = yaml.safe_load(text)
    except RecursionError:
        raise ValueError(f"--config {path}: nested too deeply to be a settings file") from None
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        raise ValueError(f"--config {path}: not valid YAML{where}: {getattr(error, 'problem', None) or error}") from None
    if data is None:
        return {}
    if isinstance(data, dict) and isinstance(data.get("params"), dict) and "versions" in data:
        data = {**data["params"], **{k: data[k] for k in RUN_FILE_SETTINGS if k in data}}
    return config_flags.values_from_mapping(PipelineConfig, data, f"--config {path}")
