"""Each config setting is declared once: one field, one flag, one default (flags generated from the fields)."""
from __future__ import annotations

import argparse
import dataclasses

import pytest

from grit_pipeline import config_flags
from grit_pipeline.cli import build_parser as grit_parser
from grit_pipeline.download import DownloadConfig
from grit_pipeline.pipeline.cli_args import config_from_args
from grit_pipeline.pipeline.config import PipelineConfig
from kosmos.cli import build_parser as kosmos_parser
from kosmos.sources import DataConfig
from kosmos.train import TrainConfig


def _subparser(parser: argparse.ArgumentParser, name: str) -> argparse.ArgumentParser:
    action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return action.choices[name]


def _options_by_dest(parser: argparse.ArgumentParser) -> dict[str, list[argparse.Action]]:
    by_dest: dict[str, list[argparse.Action]] = {}
    for action in parser._actions:
        if action.option_strings and action.dest != "help":
            by_dest.setdefault(action.dest, []).append(action)
    return by_dest


# (parser of the command, config class, whether unset flags fall back to the class default by absence)
COMMANDS = [
    (lambda: _subparser(grit_parser(), "run"), PipelineConfig, False),
    (lambda: _subparser(grit_parser(), "stage"), PipelineConfig, False),
    (lambda: _subparser(kosmos_parser(), "train"), TrainConfig, False),
    (lambda: _subparser(kosmos_parser(), "train"), DataConfig, True),
    (lambda: _subparser(grit_parser(), "download"), DownloadConfig, False),
]


@pytest.mark.parametrize("make_parser,config_class,only_given", COMMANDS)
def test_every_field_has_exactly_one_flag_with_the_field_default(make_parser, config_class, only_given):
    by_dest = _options_by_dest(make_parser())
    for field in dataclasses.fields(config_class):
        flag = config_flags.field_flag(field)
        if flag is None:
            shared = config_class is DataConfig and field.name in {f.name for f in dataclasses.fields(TrainConfig)}
            assert shared or field.name not in by_dest, f"{field.name} is declared without a flag but has one"
            continue
        actions = by_dest.get(field.name, [])
        assert len(actions) == 1, f"{config_class.__name__}.{field.name}: {len(actions)} flags"
        (action,) = actions
        assert action.option_strings == [flag]
        assert action.help and field.metadata["help"] in action.help
        default = config_flags.field_default(field)
        if only_given:
            assert action.default is argparse.SUPPRESS
        elif isinstance(default, dict):
            assert action.default is None  # repeated KEY=VALUE items build the dict
        elif default is not dataclasses.MISSING and not action.required:
            assert action.default == default, f"{field.name}: flag default {action.default!r} != {default!r}"


@pytest.mark.parametrize("make_parser,config_class", [(c[0], c[1]) for c in COMMANDS[:3]])
def test_no_flag_without_a_field(make_parser, config_class):
    names = {f.name for f in dataclasses.fields(TrainConfig if config_class is TrainConfig else config_class)}
    if config_class is TrainConfig:
        names |= {f.name for f in dataclasses.fields(DataConfig)}
    extra = set(_options_by_dest(make_parser())) - names
    assert not extra, f"flags that restate no config field: {sorted(extra)}"


def test_download_flags_reach_its_config():
    args = grit_parser().parse_args(["download", "--input", "urls.parquet", "--output", "shards", "--upscale",
                                     "--threads", "8"])
    config = config_flags.config_from_args(DownloadConfig, args)
    assert (config.resize_only_if_bigger, config.threads, config.image_size) == (False, 8, 512)


def test_unset_flags_give_the_dataclass_defaults():
    args = grit_parser().parse_args(["stage", "expand", "--output", "out"])
    assert config_from_args(args) == PipelineConfig(output="out")
    args = kosmos_parser().parse_args(["train", "--data", "d", "--output", "o"])
    config = config_flags.config_from_args(TrainConfig, args,
                                           data_options=config_flags.config_options(DataConfig, args))
    assert config == TrainConfig(data=["d"], output="o")


def test_flags_reach_the_config():
    args = grit_parser().parse_args(["run", "--input", "in", "--output", "out", "--no-letterbox-check",
                                     "--abstract-nouns", "Love, time", "--no-progress", "--grid", "16",
                                     "--dtype", "float16", "--max-pixels", "1000"])
    config = config_from_args(args)
    assert (config.check_letterbox, config.abstract_nouns, config.progress, config.grid) == (
        False, ("love", "time"), False, 16)
    assert (config.dtype, config.max_pixels) == ("float16", 1000)
    args = kosmos_parser().parse_args(["train", "--data", "a", "b", "--output", "o", "--betas", "0.8", "0.9",
                                       "--resume", "--max-length", "40", "--image-mode", "square"])
    config = config_flags.config_from_args(TrainConfig, args,
                                           data_options=config_flags.config_options(DataConfig, args))
    assert (config.data, config.betas, config.resume) == (["a", "b"], (0.8, 0.9), "latest")
    assert config.data_options == {"max_length": 40, "image_mode": "square"}


def test_a_bad_key_value_item_is_a_usage_error(capsys):
    with pytest.raises(SystemExit) as exit_info:
        grit_parser().parse_args(["run", "--input", "i", "--output", "o", "--detector-option", "novalue"])
    assert exit_info.value.code == 2
    assert "KEY=VALUE" in capsys.readouterr().err


def test_a_field_with_a_flag_but_no_help_is_refused():
    @dataclasses.dataclass
    class Config:
        size: int = 3

    with pytest.raises(TypeError, match="no help"):
        config_flags.add_config_arguments(argparse.ArgumentParser(), Config)
