"""The Makefile explains itself: `make help` lists each target with its variables and defaults, the stage
targets default to what `make demo` writes (or refuse naming the variable to set), every pipeline target
prints its settings first, a misspelt variable is refused naming the close match, and CONFIG=file.yaml
reaches `grit run --config` without the Makefile's defaults overriding the file."""
from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
from pathlib import Path

import pytest

from grit_pipeline import make_vars
from stages.demo import demo_folders
from tests.fixtures_shards import healthy_samples, write_shard

ROOT = Path(__file__).resolve().parents[1]
MAKEFILE = (ROOT / "Makefile").read_text()


def make(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MAKE", "MFLAGS"))}
    env = {k: v for k, v in env.items() if k not in ("INPUT", "OUTPUT", "CONFIG", "RAY_ADDRESS")}
    return subprocess.run(["make", "--no-print-directory", *args], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=timeout)


def command_of(dry_run: str, module: str) -> list[str]:
    """The words of the command line of ``make -n`` that runs ``python -m MODULE``."""
    line = next(line for line in dry_run.splitlines() if f"-m {module}" in line)
    return shlex.split(line)


def test_help_lists_every_target_with_its_variables_and_defaults():
    result = make("help")
    assert result.returncode == 0, result.stderr
    rules = re.findall(r"^([a-z][a-z0-9-]*):(?!=)", MAKEFILE, re.M)
    lines = result.stdout.splitlines()
    for rule in rules:  # every target is documented
        assert any(line.startswith(f"make {rule} ") for line in lines), rule
    block = result.stdout.split("make pipeline ", 1)[1].split("\nmake ", 1)[0]
    for setting in ("INPUT=demo_out/demo/shards", "OUTPUT=demo_out/grit", "CONFIG=", "DETECTOR=demo",
                    "BOX_THRESHOLD=0.65", "NMS_IOU=0.6", "ENGINE=auto", "PIPELINE_ARGS="):
        assert setting in block.split(), (setting, block)
    submit = result.stdout.split("make submit-logs ", 1)[1].split("\nmake ", 1)[0]
    assert "JOB=" in submit.split() and "RAY_ADDRESS=" in submit.split()
    # what help reads: the ?= assignments (user settings), not the Makefile's internals
    assert "PIPELINE_FLAGS" not in result.stdout and "STAMP" not in result.stdout


def test_stage_targets_read_what_make_demo_writes():
    shards = demo_folders({})[1]  # where make demo puts its synthetic shards
    for target in ("pipeline", "noun-chunks", "submit", "calibrate"):
        result = make("-n", target)
        assert result.returncode == 0, result.stderr
        words = shlex.split(next(line for line in result.stdout.replace("\\\n", " ").splitlines()
                                 if "--input" in line and ("-m " in line or "grit run" in line)))
        given = words[words.index("--input") + 1]
        assert Path(given) in (shards, (ROOT / shards)), (target, given)


def test_a_missing_input_is_refused_naming_the_variable_after_the_settings_block(tmp_path):
    result = make("pipeline", f"INPUT={tmp_path / 'nothing'}", "DETECTOR=noop")
    assert result.returncode != 0
    block = result.stdout.split("\n\n")[0]
    assert block.splitlines()[0] == "make pipeline:"
    assert f"  INPUT={tmp_path / 'nothing'} (command line)" in block.splitlines()
    assert "  DETECTOR=noop (command line)" in block.splitlines() and "  OUTPUT=demo_out/grit" in block.splitlines()
    assert f"make pipeline: INPUT={tmp_path / 'nothing'} does not exist: make demo synthesises" in result.stdout
    result = make("ground", f"OUTPUT={tmp_path / 'fresh'}")
    assert result.returncode != 0
    assert f"make ground: {tmp_path / 'fresh'}/_stages does not exist: make noun-chunks" in result.stdout
    assert "or set OUTPUT or WORK" in result.stdout


@pytest.mark.parametrize("variable,close", [("DETECTER=hf", "DETECTOR"), ("OUPUT=x", "OUTPUT"),
                                            ("BOX_TRESHOLD=0.3", "BOX_THRESHOLD"), ("Input=x", "INPUT")])
def test_a_misspelt_variable_is_refused_in_one_line_naming_the_close_match(variable, close):
    result = make("noun-chunks", variable)
    assert result.returncode == 2
    lines = (result.stdout + result.stderr).strip().splitlines()
    assert len(lines) == 1, lines
    assert f"unknown variable {variable.split('=')[0]} (did you mean {close}?)" in lines[0]


def test_known_variables_and_documented_environment_settings_pass():
    result = make("-n", "pipeline", "PIPELINE_ARGS=--no-progress --text-pool 1", "MODEL=a b",
                  "GRIT_DEMO_IMAGES=5", "E2E_SEED=1")
    assert result.returncode == 0, result.stderr
    words = command_of(result.stdout, "stages.pipeline")
    assert words[-3:] == ["--no-progress", "--text-pool", "1"] and words[words.index("--model") + 1] == "a b"
    assert make_vars.unknown_variable(["INPUT", "TRUTH", "LEVEL", "STUDY_SEED", "ICL_MINUTES"], MAKEFILE) is None


def test_config_passes_only_the_variables_set_on_the_command_line():
    result = make("-n", "pipeline", "CONFIG=run.yaml", "BOX_THRESHOLD=0.3")
    assert result.returncode == 0, result.stderr
    words = command_of(result.stdout, "stages.pipeline")
    assert words[words.index("--config") + 1] == "run.yaml" and words[words.index("--box-threshold") + 1] == "0.3"
    for default_flag in ("--input", "--output", "--detector", "--nms-iou", "--engine"):
        assert default_flag not in words  # the Makefile's defaults would override the file
    without = command_of(make("-n", "pipeline").stdout, "stages.pipeline")
    assert "--config" not in without and without[without.index("--detector") + 1] == "demo"


@pytest.mark.slow
def test_make_pipeline_config_builds_what_the_file_says(tmp_path):
    shards = tmp_path / "shards"
    write_shard(shards, "00000", healthy_samples(0, 3))
    config = tmp_path / "run.yaml"
    config.write_text(f"input: {shards}\ndetector: noop\ndetector_options: {{score: hash}}\nbox_threshold: 0.4\n"
                      "engine: local\nprogress: false\n")
    result = make("pipeline", f"CONFIG={config}", f"OUTPUT={tmp_path / 'grit'}", "NMS_IOU=0.5", timeout=300)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    assert f"(CONFIG: variables not set on the command line come from {config})" in result.stdout
    params = json.loads((tmp_path / "grit" / "_run.json").read_text())["params"]
    assert (params["input"], params["detector"], params["box_threshold"], params["nms_iou"]) == (
        str(shards), "noop", 0.4, 0.5)
