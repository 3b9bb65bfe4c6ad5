"""Refused before starting, in one line, with nothing written or deleted: a build of another input or with
other parameters (``--overwrite`` replaces it), an input without shards, an output that is an input folder, a
detector or spaCy pipeline that cannot load. A worker's exception under Ray is one line with its root cause.
Also: the closest flag for a misspelt one, ``grit stats``' reason labels, and ``make demo``'s own folder."""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from grit_pipeline.pipeline import layout
from tests.build_files import done_names
from tests.fixtures_shards import healthy_samples, write_shard

REPO = Path(__file__).resolve().parents[1]
NOOP = ("--engine", "local", "--no-progress", "--detector", "noop", "--detector-option", "score=hash")


def _main(capsys, *args):
    from grit_pipeline.cli import main

    code = main([str(a) for a in args])
    captured = capsys.readouterr()
    errors = [line for line in captured.err.strip().splitlines() if not line.startswith("warning:")]
    return code, captured.out, errors


def _state(folder: Path) -> dict[str, tuple[int, int]]:
    """Every file under ``folder``: size and modification time (what "nothing written or deleted" compares)."""
    return {str(p.relative_to(folder)): (p.stat().st_size, p.stat().st_mtime_ns)
            for p in sorted(folder.rglob("*")) if p.is_file()}


def _shard_files(build: Path) -> dict[str, tuple[int, int]]:
    """``_state`` of a build's shard files: the pairs and the layout's sub-folders (not the run's metadata,
    ``_run.json``, ``_stats.json`` and the dataset card, which every run rewrites)."""
    return {name: state for name, state in _state(build).items()
            if name.split("/")[0] in layout.SUBFOLDERS or not name.startswith(("_", "."))}


@pytest.fixture
def inputs(tmp_path):
    """Two input folders: ``a`` with three shards, ``b`` with one."""
    for shard in range(3):
        write_shard(tmp_path / "a", f"{shard:05d}", healthy_samples(shard, 2))
    write_shard(tmp_path / "b", "00000", healthy_samples(7, 2))
    return tmp_path / "a", tmp_path / "b"


def test_another_input_or_other_parameters_are_refused_and_overwrite_replaces_the_build(tmp_path, capsys, inputs):
    a, b = inputs
    out = tmp_path / "grit"
    assert _main(capsys, "run", "--input", a, "--output", out, *NOOP)[0] == 0
    before = _state(out)

    code, _, errors = _main(capsys, "run", "--input", b, "--output", out, *NOOP)
    assert code == 2 and len(errors) == 1
    assert f"input: {a} (built) vs {b} (this run)" in errors[0] and "--overwrite" in errors[0]
    assert _state(out) == before

    code, _, errors = _main(capsys, "run", "--input", a, "--output", out, *NOOP, "--box-threshold", "0.5")
    assert code == 2 and len(errors) == 1
    assert "box_threshold: 0.65 (built) vs 0.5 (this run)" in errors[0] and "input" not in errors[0].split("(")[1]
    assert _state(out) == before

    # the same input and parameters: resumes, every shard already done; the folder spelt another way is
    # the same input (not refused)
    code, stdout, _ = _main(capsys, "run", "--input", a, "--output", out, *NOOP)
    assert code == 0 and stdout.startswith("0 shards written, 3 already done")
    assert _main(capsys, "run", "--input", f"{a}/", "--output", out, *NOOP)[0] == 0

    # --overwrite: a build of b alone (a's other shards removed, so the folder never mixes the two)
    code, _, _ = _main(capsys, "run", "--input", b, "--output", out, *NOOP, "--overwrite")
    assert code == 0
    assert done_names(out) == [layout.done_name("00000")]
    assert json.loads((out / layout.done_name("00000")).read_text())["params"]["input"] == str(b)
    assert json.loads((out / "_run.json").read_text())["params"]["input"] == str(b)


def test_an_input_spelt_another_way_resumes_every_finished_shard(tmp_path, capsys, inputs, monkeypatch):
    """Relative, trailing slash, ``./``, through a symlink: the same input, so no shard is rebuilt (the
    refusal rule and the ``.done`` check compare the input the same way) and the shards stay byte-identical."""
    a, _ = inputs
    out = tmp_path / "grit"
    assert _main(capsys, "run", "--input", a, "--output", out, *NOOP)[0] == 0
    shard_files = _shard_files(out)
    assert len(shard_files) == 3 * 5   # pairs, tar, rejects, stats and marker of each shard
    contents = {name: (out / name).read_bytes() for name in shard_files}
    (tmp_path / "link").symlink_to(a, target_is_directory=True)
    monkeypatch.chdir(tmp_path)
    for spelling in ("a", "./a/", f"{a}/", "link", f"{tmp_path}/link/"):
        code, stdout, errors = _main(capsys, "run", "--input", spelling, "--output", out, *NOOP)
        assert code == 0 and stdout.startswith("0 shards written, 3 already done"), (spelling, stdout, errors)
        assert _shard_files(out) == shard_files
    assert {name: (out / name).read_bytes() for name in shard_files} == contents


def test_an_input_without_shards_is_refused_naming_the_folder(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    code, _, errors = _main(capsys, "run", "--input", tmp_path / "empty", "--output", tmp_path / "out", *NOOP)
    assert code == 2 and len(errors) == 1 and f"no input shards in {tmp_path / 'empty'}" in errors[0]
    assert not (tmp_path / "out").exists()


def test_shard_files_no_grit_run_wrote_are_refused(tmp_path, capsys, inputs):
    a, b = inputs
    before = _state(b)
    code, _, errors = _main(capsys, "run", "--input", a, "--output", b, *NOOP)  # b: an img2dataset folder
    assert code == 2 and len(errors) == 1 and "holds shard files no grit run wrote (00000.parquet" in errors[0]
    assert _state(b) == before


@pytest.mark.parametrize("flags, message", [
    (("--detector", "hf"), "detector 'hf' needs a model (--model)"),
    (("--detector", "hf", "--model", "/no/such/model"), "--model /no/such/model: no such directory"),
    (("--detector", "demo", "--model", "/no/such.pt"), "demo detector checkpoint not found: /no/such.pt"),
    (("--detector", "nope"), "unknown detector 'nope'"),
    (("--spacy-model", "no_such_spacy_pipeline"), "no usable spaCy pipeline: no_such_spacy_pipeline: no such package"),
])
def test_a_detector_or_spacy_pipeline_that_cannot_load_is_one_line_before_anything_starts(tmp_path, capsys, inputs,
                                                                                        flags, message):
    a, _ = inputs
    code, _, errors = _main(capsys, "run", "--input", a, "--output", tmp_path / "out", "--no-progress", *flags)
    assert code == 2 and len(errors) == 1 and message in errors[0], errors
    assert not (tmp_path / "out").exists()


_NO_TORCH_BEFORE_WORK = """
import sys
from grit_pipeline.cli import main
from grit_pipeline.pipeline import api

def stop_before_the_stages(config, label, *args, **kwargs):
    print("torch imported before the work:", "torch" in sys.modules)
    return api.RunSummary(output=config.output)

api._execute = stop_before_the_stages
sys.exit(main(sys.argv[1:]))
"""


def test_the_checks_before_a_noop_run_do_not_import_torch(tmp_path):
    """Arguments, preflight (detector, spaCy pipeline, input, output), lock and run files of a ``noop`` run:
    no torch in the driver (importing it costs seconds; the demo backend's check reads its checkpoint with
    torch and does import it)."""
    write_shard(tmp_path / "in", "00000", healthy_samples(0, 2))
    result = subprocess.run([sys.executable, "-c", _NO_TORCH_BEFORE_WORK, "run", "--input", tmp_path / "in",
                             "--output", tmp_path / "out", *NOOP], cwd=REPO, capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "torch imported before the work: False" in result.stdout


def test_grit_ground_makes_the_same_detector_check(capsys, monkeypatch):
    import io

    monkeypatch.setattr(sys, "stdin", io.StringIO('{"key": "a", "image": "x.jpg", "caption": "a dog"}\n'))
    code, out, errors = _main(capsys, "ground", "--detector", "hf")
    assert code == 2 and out == "" and len(errors) == 1 and "detector 'hf' needs a model (--model)" in errors[0]


def test_a_model_that_is_no_detector_or_a_hub_out_of_reach_is_named(tmp_path, monkeypatch):
    from huggingface_hub import constants

    from grit_pipeline.detectors.hf import check_model_source

    (tmp_path / "bert").mkdir()
    (tmp_path / "bert" / "config.json").write_text('{"model_type": "bert"}')
    with pytest.raises(ValueError, match="a 'bert' model, not a zero-shot object detector"):
        check_model_source(str(tmp_path / "bert"))
    (tmp_path / "bert" / "config.json").write_text("{not json")
    with pytest.raises(ValueError, match="unreadable config.json"):
        check_model_source(str(tmp_path / "bert"))
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(ValueError, match="not in the local Hugging Face cache .* and HF_HUB_OFFLINE is set"):
        check_model_source("some-org/some-detector")
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(constants, "ENDPOINT", "http://127.0.0.1:9")  # nothing listens: refused at once
    with pytest.raises(ValueError, match=r"the hub \(http://127.0.0.1:9\) cannot be reached"):
        check_model_source("some-org/some-detector")


@pytest.mark.ray
def test_an_exception_in_a_ray_worker_is_one_line_with_its_cause_and_a_log(tmp_path):
    """A spaCy folder that passes the driver's check (its config names a parser) but does not load in the
    noun-chunk actor: the run ends with one line naming the original exception, the traceback in a log."""
    write_shard(tmp_path / "in", "00000", healthy_samples(0, 2))
    (tmp_path / "spacy").mkdir()
    (tmp_path / "spacy" / "config.cfg").write_text('[nlp]\nlang = "en"\npipeline = ["parser"]\n')
    env = {**os.environ, "NO_ALBUMENTATIONS_UPDATE": "1", "HF_HUB_OFFLINE": "1"}
    result = subprocess.run(
        [sys.executable, "-m", "grit_pipeline", "run", "--input", tmp_path / "in", "--output", tmp_path / "out",
         "--detector", "noop", "--no-progress", "--engine", "ray", "--num-cpus", "2",
         "--spacy-model", tmp_path / "spacy"],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    last = result.stderr.strip().splitlines()[-1]
    assert result.returncode == 1, result.stderr[-3000:]
    assert re.match(r"grit run: error: a worker failed: RuntimeError: no usable spaCy "
                    r"pipeline: .*\(full traceback: (.+\.log)\)$", last), last
    log = Path(re.search(r"full traceback: (.+\.log)\)$", last).group(1))
    assert log.parent == tmp_path / "out" / "_logs" and "Traceback (most recent call last)" in log.read_text()
    assert not done_names(tmp_path / "out")


def test_an_exception_in_a_stage_under_the_local_engine_is_one_line_with_its_cause_and_a_log(tmp_path, capsys,
                                                                                            monkeypatch):
    """Every sample of the batch failing alike is a fault of the machine (docs/robustness.md, "Fault model"):
    one line naming the shard and the error, that a rerun finishes the build, the full traceback (the
    original exception included) in OUTPUT/_logs/, exit status 1, no shard committed, nothing rejected."""
    from grit_pipeline.pipeline.stages import GroundStage

    def broken_detector(self, samples):
        try:
            raise KeyError("box_head.weight")
        except KeyError as error:
            raise RuntimeError("the detector cannot run") from error

    monkeypatch.setattr(GroundStage, "process", broken_detector)
    write_shard(tmp_path / "in", "00000", healthy_samples(0, 4))
    code, stdout, errors = _main(capsys, "run", "--input", tmp_path / "in", "--output", tmp_path / "out", *NOOP)
    assert code == 1 and stdout == "" and len(errors) == 1, errors
    match = re.fullmatch(r"grit run: error: shard 00000 stopped by a fault of the machine, not of its data "
                         r"\(SystemicFault: ground: every sample of a batch of 4 failed: RuntimeError: the detector "
                         r"cannot run\); nothing of it was committed or rejected, 0 shard\(s\) were committed by "
                         r"this run. Rerun the same command to finish the build \(full traceback: (.+\.log)\)",
                         errors[0])
    assert match, errors[0]
    log = Path(match.group(1))
    assert log.parent == tmp_path / "out" / "_logs"
    assert "Traceback (most recent call last)" in log.read_text() and "in broken_detector" in log.read_text()
    assert "RuntimeError: the detector cannot run" in log.read_text() and "KeyError: 'box_head.weight'" in log.read_text()
    assert not done_names(tmp_path / "out") and not list((tmp_path / "out").glob(f"{layout.REJECTS_DIR}/*.parquet"))


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]  # closed again: nothing listens there


def test_a_ray_cluster_out_of_reach_is_one_line_before_anything_starts(tmp_path, capsys, inputs):
    a, _ = inputs
    flags = ("--no-progress", "--detector", "noop", "--detector-option", "score=hash")
    port = _free_port()
    for address, message in ((f"127.0.0.1:{port}", f"cannot reach the Ray cluster at 127.0.0.1:{port} ("),
                             (f"ray://127.0.0.1:{port}", "cannot reach the Ray cluster at ray://127.0.0.1:"),
                             ("127.0.0.1:head", "'head' is not a port number")):
        code, _, errors = _main(capsys, "run", "--input", a, "--output", tmp_path / "out", *flags,
                                "--ray-address", address)
        assert code == 2 and len(errors) == 1 and message in errors[0], errors
        assert not (tmp_path / "out").exists()
    # --engine local never connects: the address is not checked
    assert _main(capsys, "run", "--input", a, "--output", tmp_path / "out", *NOOP, "--ray-address",
                 f"127.0.0.1:{port}")[0] == 0


def test_a_ray_init_that_fails_or_gpus_no_node_has_are_one_line(monkeypatch):
    import ray

    from grit_pipeline.pipeline import PipelineConfig
    from grit_pipeline.pipeline.engine_ray import init_ray
    from grit_pipeline.pipeline.preflight import PreflightError, check_cluster_gpus

    def no_cluster(*args, **kwargs):
        raise ConnectionError("Could not find any running Ray instance.")

    monkeypatch.setattr(ray, "is_initialized", lambda: False)
    monkeypatch.setattr(ray, "init", no_cluster)
    with pytest.raises(PreflightError, match=r"^cannot connect to the Ray cluster at auto: ConnectionError: "
                                             r"Could not find any running Ray instance\.$"):
        init_ray(PipelineConfig(ray_address="auto"))
    check_cluster_gpus(0, [])  # CPUs only: nothing asked
    check_cluster_gpus(0.5, [0, 1])
    with pytest.raises(PreflightError, match=r"ask for 1 GPU each \(--num-gpus\) but no node of the Ray cluster "
                                             r"has that many \(0 GPUs in all, at most 0 on one node\)"):
        check_cluster_gpus(1, [0, 0])
    with pytest.raises(PreflightError, match=r"\(4 GPUs in all, at most 1 on one node\)"):
        check_cluster_gpus(2, [1, 1, 1, 1])


def test_root_cause_is_the_innermost_exception_of_a_traceback_text():
    from grit_pipeline.pipeline.preflight import root_cause

    chained = ("ray::MapWorker(MapBatches(Ground)).submit()\n  File \"x.py\", line 1, in f\n    raise KeyError('k')\n"
               "KeyError: 'bad call'\n\nThe above exception was the direct cause of the following exception:\n\n"
               "ray.exceptions.UserCodeException: UDF failed to process a data block.\n")
    assert root_cause(chained) == "KeyError: 'bad call'"
    assert root_cause("The actor died ...\n  File \"a.py\"\n    x()\nValueError: bad init\n") == "ValueError: bad init"
    assert root_cause("no traceback here") is None


def test_a_misspelt_flag_names_the_closest_flag(capsys):
    code, _, errors = _main(capsys, "run", "--inptu", "x", "--output", "y")
    assert code == 2 and errors == ["grit run: error: unrecognized argument --inptu (did you mean --input?); "
                                    "`grit run -h` lists the flags"]
    code, _, errors = _main(capsys, "stats", "--jsn", "x")
    assert code == 2 and "did you mean --json?" in errors[0]

    from kosmos.cli import main as kosmos_main

    assert kosmos_main(["train", "--datta", "x", "--output", "y"]) == 2
    assert "kosmos train: error: unrecognized argument --datta (did you mean --data?)" in capsys.readouterr().err


def test_stats_reason_labels_keep_digits_inside_words():
    from grit_pipeline.pipeline.stats import _reason_kind

    assert _reason_kind("img2dataset status 404: Not Found") == "img2dataset status N"
    assert _reason_kind("no box scored above 0.65 (best 0.4)") == "no box scored above N.N"


def test_make_demo_writes_and_empties_only_its_own_folder(tmp_path, monkeypatch):
    sys.path.insert(0, str(REPO))
    from stages.demo import MARKER, demo_folders, reset_demo_folder

    makefile = (REPO / "Makefile").read_text()
    # what targets write to lies outside the demo's folder; INPUT reads the demo's shards (never written)
    defaults = {Path(v) for v in re.findall(r"^(?:OUTPUT|DATA|RUN) \?= (\S+)$", makefile, re.M)}
    root, shards, build = demo_folders({})
    assert Path("demo_out/grit") in defaults
    assert re.search(r"^INPUT \?= demo_out/demo/shards$", makefile, re.M)
    for folder in (root, shards, build):
        assert not any(folder == d or folder in d.parents or d in folder.parents for d in defaults), folder

    monkeypatch.chdir(tmp_path)
    for other in ("demo_out/grit", "demo_out/shards"):  # what `make pipeline`, `make train` ... default to
        (tmp_path / other).mkdir(parents=True)
        (tmp_path / other / "00000.parquet").write_bytes(b"keep me")
    before = _state(tmp_path / "demo_out")
    reset_demo_folder(root)
    (shards / "00000.tar").parent.mkdir(parents=True)
    (shards / "00000.tar").write_bytes(b"demo input")
    reset_demo_folder(root)  # a rerun empties the demo's folder, and nothing else
    assert sorted(p.name for p in root.iterdir()) == [MARKER]
    assert {k: v for k, v in _state(tmp_path / "demo_out").items() if not k.startswith("demo/")} == before

    monkeypatch.setenv("GRIT_DEMO_DIR", "demo_out")  # a folder the demo did not make: refused, untouched
    with pytest.raises(ValueError, match="holds files the demo did not write"):
        reset_demo_folder(demo_folders()[0])
    assert (tmp_path / "demo_out" / "grit" / "00000.parquet").read_bytes() == b"keep me"


def test_make_e2e_names_its_log_and_shows_a_long_command_s_progress(tmp_path, monkeypatch, capsys):
    from kosmos import e2e

    monkeypatch.setattr(e2e, "PROGRESS_EVERY_S", 0.1)
    log = tmp_path / "e2e.log"
    e2e._run([sys.executable, "-c", "import time; print('step 50 loss 1.2', flush=True); time.sleep(1)"], log)
    progress = [line for line in capsys.readouterr().err.splitlines() if line.startswith("[e2e]   ")]
    assert progress and "step 50 loss 1.2" in log.read_text()


def test_stage_by_stage_refuses_another_input_but_rebuilds_changed_parameters(tmp_path, inputs):
    from grit_pipeline.pipeline import PipelineConfig, run_stage
    from grit_pipeline.pipeline.preflight import PreflightError

    a, b = inputs
    out = tmp_path / "grit"

    def config(input_dir, **changes):
        return PipelineConfig(input=str(input_dir), output=str(out), engine="local", detector="noop",
                              progress=False, **changes)

    for stage in ("noun_chunks", "ground", "expand", "write"):
        run_stage(stage, config(a))
    before = _state(out)
    with pytest.raises(PreflightError, match=rf"input: {a} \(built\) vs {b} \(this run\)"):
        run_stage("noun_chunks", config(b))
    assert _state(out) == before
    assert run_stage("expand", config(a, box_threshold=0.5)).shards_written == ["00000", "00001", "00002"]
    assert run_stage("noun_chunks", config(b, overwrite=True)).shards_written == ["00000"]
    assert done_names(out / "_stages" / "noun_chunks") == [layout.done_name("00000")]
