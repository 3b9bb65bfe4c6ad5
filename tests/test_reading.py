"""A build reads with the field's libraries: every snippet of docs/reading.md runs against a real build, the card
gives HF ``datasets`` the pairs with their features, pandas reads the same rows, the previous layout converts, and
``grit card``/``grit convert``/``grit stats`` behave as the page says."""
from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from grit_pipeline.pipeline import PipelineConfig, layout, run_pipeline
from grit_pipeline.pipeline.card import CARD_README, CARD_YAML

REPO = Path(__file__).resolve().parents[1]
READING = REPO / "docs" / "reading.md"


def blocks(language: str) -> list[str]:
    return re.findall(rf"```{language}\n(.*?)```", READING.read_text(), flags=re.S)


@pytest.fixture(scope="module")
def build(tmp_path_factory):
    """A synthetic world grounded by the demo detector: two shards, pairs and rejects (a defect rate)."""
    from grit_pipeline.synth.writer import write_synthetic_world

    root = tmp_path_factory.mktemp("reading")
    write_synthetic_world(root / "shards", images=24, seed=5, shard_size=12, defect_rate=0.2)
    run_pipeline(PipelineConfig(input=str(root / "shards"), output=str(root / "grit"), detector="demo",
                                engine="local", progress=False))
    return root / "grit"


@pytest.fixture(autouse=True)
def offline_hf(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))


def expected_rows(build: Path) -> tuple[list[str], list[str]]:
    """(pair keys, reject keys) read file by file through the layout (not through the libraries under test)."""
    pairs, rejects = [], []
    for shard in sorted(p.stem for p in (build / layout.DONE_DIR).glob("*.done")):
        pairs += pq.read_table(build / layout.pairs_name(shard), columns=["key"]).column("key").to_pylist()
        rejects += pq.read_table(build / layout.rejects_name(shard), columns=["key"]).column("key").to_pylist()
    return pairs, rejects


def test_the_build_has_only_pairs_outside_underscore_folders(build):
    visible = [p.relative_to(build).as_posix() for p in build.rglob("*")
               if p.is_file() and not any(part.startswith(("_", ".")) for part in p.relative_to(build).parts)]
    assert visible and all(re.fullmatch(r"\d{5}\.parquet", name) for name in visible), visible
    assert (build / CARD_YAML).is_file() and (build / CARD_README).is_file()
    pairs, rejects = expected_rows(build)
    assert pairs and rejects and not set(pairs) & set(rejects)


def test_every_python_snippet_of_reading_md_runs_and_reads_the_build(build, capsys):
    snippets = blocks("python")
    assert len(snippets) == 5
    pairs, rejects = expected_rows(build)
    results = []
    for code in snippets:
        namespace = {"BUILD": str(build)}
        exec(compile(code, str(READING), "exec"), namespace)  # noqa: S102 - the page's own snippets
        results.append(namespace)
    pandas_ns, pyarrow_ns, hf_ns, hf_images_ns, wds_ns = results
    assert sorted(pandas_ns["pairs"]["key"]) == sorted(pairs)
    assert sorted(pandas_ns["rejects"]["key"]) == sorted(rejects)
    assert sorted(pyarrow_ns["table"].column("key").to_pylist()) == sorted(pairs)
    assert sorted(hf_ns["pairs"]["key"]) == sorted(pairs) and sorted(hf_ns["rejects"]["key"]) == sorted(rejects)
    assert len(hf_images_ns["images"]) == len(pairs) and hf_images_ns["first"]["json"]["key"] in pairs
    assert wds_ns["record"]["key"] in pairs and "<phrase>" in wds_ns["grounded_text"]
    assert capsys.readouterr().out.count("\n") >= 5   # each snippet prints what it read


def test_datasets_gets_the_cards_typed_features(build):
    import datasets
    import yaml

    card = yaml.safe_load((build / CARD_YAML).read_text())
    declared = {info["config_name"]: datasets.Features._from_yaml_list(info["features"])
                for info in card["dataset_info"]}
    pairs = datasets.load_dataset(str(build), split="train")
    rejects = datasets.load_dataset(str(build), "rejects", split="train")
    assert pairs.features == declared["default"] == datasets.Features.from_arrow_schema(
        pq.read_schema(build / "00000.parquet"))
    assert rejects.features == declared["rejects"]
    assert pairs.features["noun_chunks"] == datasets.List(datasets.List(datasets.Value("float64")))
    front = (build / CARD_README).read_text().split("---")[1]
    assert yaml.safe_load(front) == card          # the card's front matter is the same YAML
    readme = (build / CARD_README).read_text()
    assert "arXiv:2306.14824" in readme and "box_threshold" in readme and "## Source data and licence" in readme


def test_kosmos_train_snippet_trains_on_the_build(build, tmp_path):
    (command,) = [b for b in blocks("bash") if "kosmos train" in b]
    command = command.replace("kosmos ", f"{sys.executable} -m kosmos ", 1)
    env = {**os.environ, "BUILD": str(build), "RUN": str(tmp_path / "run")}
    result = subprocess.run(["bash", "-c", command], env=env, capture_output=True, text=True, cwd=REPO, timeout=600)
    assert result.returncode == 0, result.stderr[-2000:]
    log = [json.loads(line) for line in (tmp_path / "run" / "train_log.jsonl").read_text().splitlines()]
    assert any(entry.get("step") == 2 for entry in log)


def grit(*args: str, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "grit_pipeline", *args], capture_output=True, text=True,
                          cwd=REPO, timeout=300, **kwargs)


def make_previous_layout(build: Path, target: Path) -> None:
    """``build`` copied into grit's previous layout: every file beside the pairs, markers naming them there."""
    shutil.copytree(build, target)
    for marker_path in sorted((target / layout.DONE_DIR).glob("*.done")):
        shard = marker_path.stem
        marker = json.loads(marker_path.read_text())
        marker["files"] = {layout.previous_name(name): size for name, size in marker["files"].items()}
        for name in (layout.tar_name(shard), layout.rejects_name(shard), layout.stats_name(shard)):
            (target / name).rename(target / layout.previous_name(name))
        (target / f"{shard}.done").write_text(json.dumps(marker, sort_keys=True))
        marker_path.unlink()
    for sub in layout.SUBFOLDERS:
        (target / sub).rmdir()
    (target / CARD_YAML).unlink()
    (target / CARD_README).unlink()


def test_previous_layout_is_refused_by_readers_and_converted_byte_for_byte(build, tmp_path):
    old = tmp_path / "old"
    make_previous_layout(build, old)
    assert "00000.done" in os.listdir(old) and "00000_rejects.parquet" in os.listdir(old)
    stats = grit("stats", str(old))
    assert stats.returncode == 2 and f"grit convert {old}" in stats.stderr and len(stats.stderr.splitlines()) == 1
    card = grit("card", str(old))
    assert card.returncode == 2 and "grit convert" in card.stderr
    converted = grit("convert", str(old))
    assert converted.returncode == 0, converted.stderr
    files = lambda root: {p.relative_to(root).as_posix(): p.read_bytes() for p in root.rglob("*")  # noqa: E731
                          if p.is_file() and p.name not in (CARD_README,)}
    assert files(old) == files(build)            # the same files, names and bytes as a build of today
    assert grit("convert", str(old)).stdout.splitlines()[0].endswith("already in the current layout")


def test_a_run_resumes_a_build_of_the_previous_layout_without_rebuilding(build, tmp_path):
    old = tmp_path / "old"
    make_previous_layout(build, old)
    run = json.loads((build / "_run.json").read_text())
    summary = run_pipeline(PipelineConfig(input=run["params"]["input"], output=str(old), detector="demo",
                                          engine="local", progress=False))
    assert summary.shards_written == [] and summary.shards_skipped == ["00000", "00001"]
    assert sorted(os.listdir(old / layout.DONE_DIR)) == ["00000.done", "00001.done"]
    assert not [n for n in os.listdir(old)
                if not n.startswith("_") and n.endswith((".done", ".tar", "_rejects.parquet", "_stats.json"))]


def test_a_crash_mid_conversion_is_finished_by_the_next_one(build, tmp_path, monkeypatch):
    old = tmp_path / "old"
    make_previous_layout(build, old)
    from grit_pipeline.pipeline import storage

    real_write = storage.Folder.write_bytes
    calls = []

    def dies_at_second_marker(self, name, data):
        if name.startswith(f"{layout.DONE_DIR}/"):
            calls.append(name)
            if len(calls) == 2:
                raise OSError("the machine went away")
        return real_write(self, name, data)

    monkeypatch.setattr(storage.Folder, "write_bytes", dies_at_second_marker)
    with pytest.raises(OSError):
        layout.convert_previous_layout(str(old))
    monkeypatch.setattr(storage.Folder, "write_bytes", real_write)
    assert (old / "00001.done").exists()          # not yet converted: its old marker still names the shard
    assert layout.convert_previous_layout(str(old)) == 1
    assert sorted(os.listdir(old / layout.DONE_DIR)) == ["00000.done", "00001.done"]
    marker = json.loads((old / layout.done_name("00001")).read_text())
    assert sorted(marker["files"]) == sorted(["00001.parquet", layout.tar_name("00001"),
                                              layout.rejects_name("00001"), layout.stats_name("00001")])


def test_grit_card_rewrites_the_card_with_its_options(build, tmp_path):
    copy = tmp_path / "copy"
    shutil.copytree(build, copy)
    (copy / CARD_YAML).unlink()
    result = grit("card", str(copy), "--license", "cc-by-4.0", "--source-dataset", "laion/relaion2B-en-research")
    assert result.returncode == 0, result.stderr
    import yaml

    card = yaml.safe_load((copy / CARD_YAML).read_text())
    assert card["license"] == "cc-by-4.0" and card["source_datasets"] == ["laion/relaion2B-en-research"]
    assert [c["config_name"] for c in card["configs"]] == ["default", "rejects"]
    assert grit("card", str(tmp_path / "nope")).returncode == 2


def test_a_closed_pipe_ends_a_command_quietly(build):
    # the reader goes away before grit writes (`grit stats BUILD | head -0`)
    process = subprocess.Popen([sys.executable, "-m", "grit_pipeline", "stats", str(build), "--json"],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=REPO)
    process.stdout.close()
    stderr = process.stderr.read().decode()
    assert process.wait(timeout=300) in (0, 141)
    assert stderr == "", stderr


def test_a_damaged_file_beside_the_pairs_costs_the_card_not_the_run(build, tmp_path, capsys):
    copy = tmp_path / "copy"
    shutil.copytree(build, copy)
    (copy / "0.parquet").write_bytes(b"\x00" * 64)   # a stray file, the first the card would read a schema from
    run = json.loads((copy / "_run.json").read_text())
    summary = run_pipeline(PipelineConfig(input=run["params"]["input"], output=str(copy), detector="demo",
                                          engine="local", progress=False))
    assert summary.shards_written == [] and summary.shards_skipped == ["00000", "00001"]
    err = capsys.readouterr().err
    assert "warning: the dataset card was not written" in err and f"grit card {copy}" in err
    assert (copy / CARD_YAML).read_bytes() == (build / CARD_YAML).read_bytes()   # the last card stays
