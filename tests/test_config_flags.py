"""Each config setting is declared once: one field, one flag, one default (flags generated from the fields)."""
from __future__ import annotations

import argparse
import dataclasses
import json
from pathlib import Path

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
    (lambda: _subparser(grit_parser(), "run"), PipelineConfig, True),  # unset: the --config file's or the default
    (lambda: _subparser(grit_parser(), "stage"), PipelineConfig, True),
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
    extra = set(_options_by_dest(make_parser())) - names - {"config"}  # --config FILE: the same fields in a file
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


# --- grit run --config FILE.yaml: the same settings from a file, the flags given over it ---------------------

def _config(argv: list[str]) -> PipelineConfig:
    return config_from_args(grit_parser().parse_args(argv))


CONFIG_YAML = """\
input: shards
output: grit
detector: noop
detector_options: {score: hash, max_per_phrase: 3}
box_threshold: 0.3
abstract_nouns: [Love, time]
shards: ["00001", "00003"]
check_letterbox: false
progress: false
grid: 16
engine: local
"""
SAME_FLAGS = ["--input", "shards", "--output", "grit", "--detector", "noop", "--detector-option", "score=hash",
              "--detector-option", "max_per_phrase=3", "--box-threshold", "0.3", "--abstract-nouns", "Love, time",
              "--shards", "00001,00003", "--no-letterbox-check", "--no-progress", "--grid", "16", "--engine", "local"]


def test_a_config_file_gives_the_config_its_flags_give(tmp_path):
    path = tmp_path / "run.yaml"
    path.write_text(CONFIG_YAML)
    from_file = _config(["run", "--config", str(path)])
    assert from_file == _config(["run", *SAME_FLAGS])
    assert from_file != PipelineConfig(input="shards", output="grit")
    # JSON is YAML too
    json_path = tmp_path / "run.json"
    json_path.write_text(json.dumps({"input": "shards", "output": "grit", "box_threshold": 0.3, "grid": 16}))
    assert _config(["run", "--config", str(json_path)]) == PipelineConfig(input="shards", output="grit",
                                                                           box_threshold=0.3, grid=16)


def test_flags_on_the_command_line_override_the_file(tmp_path):
    path = tmp_path / "run.yaml"
    path.write_text(CONFIG_YAML)
    config = _config(["run", "--config", str(path), "--box-threshold", "0.65", "--output", "other",
                      "--detector-option", "score=max", "--grid", "32"])
    # a flag given equal to the field's default still wins over the file
    assert (config.box_threshold, config.output, config.grid) == (0.65, "other", 32)
    assert config.detector_options == {"score": "max"}  # a flag replaces the file's whole mapping
    assert (config.detector, config.shards, config.check_letterbox) == ("noop", ("00001", "00003"), False)


@pytest.mark.parametrize("text,message", [
    ("box_treshold: 0.3\n", "unknown key 'box_treshold' (did you mean box_threshold?)"),
    ("box-threshold: 0.3\n", "unknown key 'box-threshold' (did you mean box_threshold?)"),
    ("grid: sixteen\n", "grid must be a whole number"),
    ("progress: 0\n", "progress must be true or false"),
    ("engine: spark\n", "engine must be one of auto, ray, local"),
    ("shards: [00001]\n", "shards must be a list of texts"),
    ("detector: null\n", "detector must be set"),
    ("- input\n", "expected a mapping"),
    ("input: [unclosed\n", "not valid YAML"),
    ("input: " + "[" * 5000 + "]" * 5000 + "\n", "nested too deeply"),
    ("# " + "a" * (1 << 20) + "\n", "not a settings file"),
])
def test_a_bad_config_file_is_one_line_naming_the_key(tmp_path, capsys, text, message):
    from grit_pipeline.cli import main

    path = tmp_path / "bad.yaml"
    path.write_text(text)
    assert main(["run", "--config", str(path), "--input", "i", "--output", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert message in err and str(path) in err and len(err.strip().splitlines()) == 1, err
    assert not (tmp_path / "o").exists()  # refused before anything is written


def test_required_settings_come_from_the_file_or_the_command_line(tmp_path, capsys):
    from grit_pipeline.cli import main

    path = tmp_path / "run.yaml"
    path.write_text("input: shards\n")
    assert main(["run", "--config", str(path)]) == 2
    assert f"--output is required (on the command line or `output:` in {path})" in capsys.readouterr().err
    assert main(["run", "--config", str(tmp_path / "missing.yaml"), "--output", "o"]) == 2
    assert "cannot read it" in capsys.readouterr().err
    assert _config(["stage", "expand", "--config", str(path), "--output", "o"]).input == "shards"


def build_files(root: Path) -> dict[str, object]:
    """Every file of a build (whole tree) but _run.json (this run's command and times); JSON files without
    their timings (and without the recorded sizes of JSON files, the stats files holding those timings)."""
    def strip(value):
        if isinstance(value, dict):
            return {k: strip(v) for k, v in value.items() if k != "timings_s" and not k.endswith(".json")}
        return [strip(v) for v in value] if isinstance(value, list) else value

    out: dict[str, object] = {}
    for path in sorted(p for p in root.rglob("*") if p.is_file() and p.name != "_run.json"):
        data = path.read_bytes()
        try:
            out[str(path.relative_to(root))] = strip(json.loads(data))
        except ValueError:
            out[str(path.relative_to(root))] = data
    return out


def test_a_builds_run_json_fed_back_as_config_gives_the_same_build(tmp_path):
    from grit_pipeline.cli import main
    from tests.fixtures_shards import healthy_samples, write_shard

    shards = tmp_path / "shards"
    for shard in range(2):
        write_shard(shards, f"{shard:05d}", healthy_samples(shard, 4))
    flags = ["--input", str(shards), "--detector", "noop", "--detector-option", "score=hash", "--box-threshold",
             "0.4", "--engine", "local", "--no-progress"]
    assert main(["run", *flags, "--output", str(tmp_path / "by_flags")]) == 0
    yaml_file = tmp_path / "run.yaml"
    yaml_file.write_text(f"input: {shards}\ndetector: noop\ndetector_options: {{score: hash}}\n"
                         "box_threshold: 0.4\nengine: local\nprogress: false\n")
    assert main(["run", "--config", str(yaml_file), "--output", str(tmp_path / "by_yaml")]) == 0
    run_json = tmp_path / "by_flags" / "_run.json"
    assert main(["run", "--config", str(run_json), "--output", str(tmp_path / "by_run_json"), "--no-progress"]) == 0

    reference = build_files(tmp_path / "by_flags")
    assert any(name.endswith(".parquet") for name in reference) and any(name.endswith(".tar") for name in reference)
    assert build_files(tmp_path / "by_yaml") == reference
    assert build_files(tmp_path / "by_run_json") == reference
    recorded = [json.loads((tmp_path / name / "_run.json").read_text()) for name in ("by_flags", "by_run_json")]
    assert recorded[0]["params"] == recorded[1]["params"] and recorded[0]["params"]["box_threshold"] == 0.4
    fed_back = _config(["run", "--config", str(run_json), "--output", "x"])
    assert fed_back.params_through("write") == _config(["run", *flags, "--output", "x"]).params_through("write")
