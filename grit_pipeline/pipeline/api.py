"""Run the pipeline programmatically: ``run_pipeline`` (fused, `grit run`) and ``run_stage`` (one stage).

Both pick the shards to do (skipping finished ones; see ``shards``), run the stages with the chosen engine
(``ray`` by default, ``local`` in-process) and commit each shard atomically as soon as it is complete.
"""
from __future__ import annotations

import json
import os
import platform
import sys
import time
from dataclasses import asdict, dataclass, field
from typing import Any

from . import layout
from .config import STAGE_ORDER, PipelineConfig, join_path
from .contracts import ShardSink, ShardSource
from grit_pipeline.faults import SystemicFault, configure_storage_retry

from .guard import check_output_is_not_input, output_lock
from .index import OutputIndex, read_concurrently
from .plan import plan_shards
from .parts import remove_stale_parts
from .preflight import (check_detector, check_input_shards, check_output, check_ray_address, check_spacy_model,
                        conflicting_shards, fault_stop, worker_failure)
from .progress import Progress
from .shards import BuildSink, InputSource, StageSink, StageSource
from .stages import FUSED, STAGE_CLASSES
from .storage import Folder


@dataclass
class RunSummary:
    """What a run did. ``counts`` are per status over the shards written by this run."""

    output: str
    shards_total: int = 0
    shards_written: list[str] = field(default_factory=list)
    shards_skipped: list[str] = field(default_factory=list)
    shards_not_ready: list[str] = field(default_factory=list)  # stage mode: upstream not finished
    samples: int = 0
    counts: dict[str, int] = field(default_factory=dict)
    seconds: float = 0.0
    # Start-up (imports, model load) per stage, summed over the processes that ran it; not in per-sample times.
    startup_s: dict[str, float] = field(default_factory=dict)
    nodes: dict[str, dict[str, int]] = field(default_factory=dict)  # Ray node id -> {"parts": n, "commits": n}
    actors_replaced: int = 0  # Ray actors replaced after a loss or a fault of the machine (docs/robustness.md)
    duplicate_parts: int = 0  # staged parts refused because a retried attempt wrote their keys again
    engine: str = ""  # the engine that ran it (under --engine auto: the one engine_choice picked)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def run_pipeline(config: PipelineConfig) -> RunSummary:
    """The fused pipeline: input shards -> GRIT build in one streaming pass, no intermediates.

    Everything checkable here is checked before a worker starts or a file is written (``preflight``): the
    detector and spaCy pipeline, at least one input shard, and an output that holds no build made from
    another input or with other output-affecting parameters (``config.overwrite`` replaces such a build:
    its shards that this run does not rebuild are removed, so a build never mixes two runs)."""
    _check(config, need_input=True, grounding=True, text=True)
    return build_output(config, "run", InputSource(config), FUSED, BuildSink, config.params_through("write"),
                        lambda summary: write_run_files(config, summary, mode="fused"))


def build_output(config: PipelineConfig, label: str, source, stage_classes, make_sink, params: dict,
                 write_run_file) -> RunSummary:
    """Input shards through ``stage_classes`` into ``config.output``, the one sequence of ``grit run`` and
    ``grit instruct``: at least one input shard; an output holding another build refused (``--overwrite``:
    its shards this run does not rebuild are removed); under the output's lock, the run file written before
    (what the folder is being built from, even if stopped) and after."""
    shards = source.shards()
    check_input_shards(config.input, shards, config.shards)
    # one listing, each marker read once; a build of grit's previous layout is converted first
    index = OutputIndex(config.output, progress=config.progress, convert=True)
    if not config.overwrite:
        check_output(config.output, params, index=index)
    with output_lock(config.output, label):
        sink = make_sink(config)
        if config.overwrite:
            for shard in conflicting_shards(config.output, params, keep=_selected(shards, config), index=index):
                sink.clear(shard)
        write_run_file(None)
        summary = _execute(config, label, source, stage_classes, sink, own_params=params, shards=shards,
                           index=index)
        write_run_file(summary)
    return summary


def _selected(shards: list[str], config: PipelineConfig) -> list[str]:
    return [s for s in shards if s in set(config.shards)] if config.shards is not None else list(shards)


def run_stage(stage: str, config: PipelineConfig) -> RunSummary:
    """One stage of stage-by-stage mode, reading the previous stage's per-shard parquet.

    ``noun_chunks`` reads the input shards and writes WORK/noun_chunks/; ``ground`` and ``expand`` read the
    previous stage's folder under WORK and write their own; ``write`` reads WORK/expand/ and writes the build.
    """
    stage = stage.replace("-", "_")
    if stage not in STAGE_ORDER:
        raise ValueError(f"unknown stage {stage!r}; stages: {', '.join(STAGE_ORDER)}")
    _check(config, need_input=stage == "noun_chunks", grounding=stage == "ground", text=stage == "noun_chunks")
    index = STAGE_ORDER.index(stage)
    work = config.work_dir()
    if index == 0:
        source = InputSource(config)
        check_input_shards(config.input, source.shards(), config.shards)
    else:
        layout.convert_previous_layout(join_path(work, STAGE_ORDER[index - 1]))  # (a stage folder of the previous one)
        source = StageSource(work, STAGE_ORDER[index - 1])
        if not source.shards() and not source.incomplete():
            previous = STAGE_ORDER[index - 1].replace("_", "-")
            raise FileNotFoundError(
                f"no output of stage {previous} under {source.folder.url}; run `grit stage {previous}` "
                f"(make {previous}) first, with the same --output/--work")
    sink = BuildSink(config) if stage == "write" else StageSink(work, stage)
    # Stage by stage, changed parameters rebuild stale shards (like Make); another input is refused, as in run
    upstream = source.shards()
    inputs = {config.input} if index == 0 else {p.get("input") for p in read_concurrently(
        source.params, upstream, "upstream shard markers", progress=config.progress)}
    output_index = OutputIndex(sink.folder.url, progress=config.progress, convert=True)  # one listing
    if len(inputs) == 1 and next(iter(inputs)):
        same_input = {"input": next(iter(inputs))}
        if not config.overwrite:
            check_output(sink.folder.url, same_input, foreign=stage == "write", index=output_index)
    with output_lock(config.output, f"stage {stage}"):
        if config.overwrite and len(inputs) == 1 and next(iter(inputs)):
            for shard in conflicting_shards(sink.folder.url, same_input, index=output_index):
                sink.clear(shard)
        if stage == "write":
            write_run_files(config, None, mode="stages")
        summary = _execute(config, stage.replace("_", "-"), source, STAGE_CLASSES[stage], sink,
                           own_params=config.stage_params(stage), index=output_index)
        if stage == "write":
            write_run_files(config, summary, mode="stages")
    return summary


def _check(config: PipelineConfig, need_input: bool, grounding: bool = False, text: bool = False) -> None:
    """The settings, the detector (``grounding``) and the spaCy pipeline (``text``), before anything starts."""
    from grit_pipeline.grounding import check_thresholds

    if need_input and not config.input:
        raise ValueError("an input folder is required (--input PATH_OR_URL)")
    if not config.output:
        raise ValueError("an output folder is required (--output DIR)")
    if config.engine not in ("auto", "ray", "local"):
        raise ValueError(f"engine must be 'auto', 'ray' or 'local', got {config.engine!r}")
    check_thresholds(config.box_threshold, config.nms_iou)
    check_output_is_not_input(config.input, config.output)
    if config.work:
        check_output_is_not_input(config.input, config.work)
    problems = config.number_problems()
    if problems:
        raise ValueError("; ".join(problems))
    configure_storage_retry(config.storage_retries, config.storage_backoff_s)
    if grounding:
        check_detector(config)
    if text:
        check_spacy_model(config.spacy_model)
    if config.engine != "local":  # (checked again, once connected: the resources it asks for)
        check_ray_address(config.ray_address or os.environ.get("RAY_ADDRESS"))


def _execute(config: PipelineConfig, label: str, source, stage_classes, sink, own_params: dict,
             shards: list[str] | None = None, index: OutputIndex | None = None) -> RunSummary:
    started = time.monotonic()
    configure_storage_retry(config.storage_retries, config.storage_backoff_s)
    shards = source.shards() if shards is None else shards
    if config.shards is not None:
        wanted = set(config.shards)
        shards = [s for s in shards if s in wanted]
    summary = RunSummary(output=config.output, shards_total=len(shards))
    summary.shards_not_ready = source.incomplete()
    upstream = read_concurrently(source.params, shards, "upstream shard markers", progress=config.progress)
    expected = {shard: {**params, **own_params} for shard, params in zip(shards, upstream)}
    summary.shards_skipped, todo = plan_shards(sink, shards, expected, overwrite=config.overwrite, index=index)
    progress = Progress(label, len(todo), enabled=config.progress, interval_s=config.progress_interval_s)
    progress.message(f"{len(shards)} shards: {len(summary.shards_skipped)} already done, {len(todo)} to do"
                     + (f", {len(summary.shards_not_ready)} not ready upstream" if summary.shards_not_ready else ""))

    remove_stale_parts(sink.folder.url, shards)  # parts a killed run staged are never merged
    job = ShardJob(source, sink, expected, summary, progress)
    if todo:
        from .engine_choice import choose_engine

        summary.engine, why = choose_engine(config, source, todo)
        if config.engine == "auto":
            progress.message(f"engine: {summary.engine} ({why})")
        if summary.engine == "local":
            from .engine_local import run_local

            try:
                run_local(config, job, stage_classes, todo)
            except SystemicFault as fault:
                raise fault_stop(fault, config.output, summary) from fault
            except (OSError, MemoryError):
                raise  # the machine's, not a stage's (a full disk, no memory): the CLI names them with a hint
            except Exception as error:  # noqa: BLE001 - raised by a stage: one line, the traceback in a log (as Ray)
                raise worker_failure(error, config.output, where="a stage (local engine)") from error
        else:
            import ray.exceptions

            from .engine_ray import run_ray

            try:
                run_ray(config, job, stage_classes, todo)
            except SystemicFault as fault:  # faults beyond --max-actor-replacements
                raise fault_stop(fault, config.output, summary) from fault
            except ray.exceptions.RayError as error:  # raised in a worker: one line, the traceback in a log
                raise worker_failure(error, config.output) from error
    summary.seconds = round(time.monotonic() - started, 3)
    progress.message(f"done: {len(summary.shards_written)} shards written, {summary.samples:,} samples, "
                     f"{summary.seconds:.1f} s; statuses {dict(sorted(summary.counts.items()))}")
    if summary.startup_s:
        progress.message("start-up (imports, model load; not in the per-sample stage times): " + ", ".join(
            f"{stage} {seconds:.1f} s" for stage, seconds in summary.startup_s.items()))
    return summary


@dataclass
class ShardJob:
    """What an engine needs to finish shards: where samples come from and go to, the parameters each
    shard's marker records, and the run's bookkeeping (summary, progress)."""

    source: ShardSource
    sink: ShardSink
    expected: dict[str, dict]   # shard -> output-affecting parameters
    summary: RunSummary
    progress: Progress

    def describe(self, shard: str) -> str:
        return self.source.describe(shard)

    def write(self, shard: str, samples: list[dict[str, Any]]) -> None:
        """Commit a shard from its samples in this process (the local engine)."""
        from .parts import take_startups

        self.add_startup(take_startups(samples))
        # An old build of the shard stays readable until its replacement is ready.
        self.sink.clear(shard)
        self.sink.write(shard, samples, self.expected[shard], self.describe(shard))
        counts: dict[str, int] = {}
        for sample in samples:
            counts[sample["status"]] = counts.get(sample["status"], 0) + 1
        self.committed(shard, len(samples), counts)

    def add_startup(self, startup: dict[str, float]) -> None:
        for stage, seconds in startup.items():
            self.summary.startup_s[stage] = round(self.summary.startup_s.get(stage, 0.0) + seconds, 3)

    def committed(self, shard: str, samples: int, counts: dict[str, int]) -> None:
        """Bookkeeping once a shard's ``.done`` is written (by this process or by a worker)."""
        summary = self.summary
        summary.shards_written.append(shard)
        summary.samples += samples
        for status, n in counts.items():
            if status is not None:
                summary.counts[status] = summary.counts.get(status, 0) + n
        self.progress.shard_written(shard, samples)

    def count_node(self, node: str, what: str) -> None:
        """Where the work ran: ``what`` is "parts" or "commits"."""
        entry = self.summary.nodes.setdefault(node or "?", {"parts": 0, "commits": 0})
        entry[what] += 1


def write_run_files(config: PipelineConfig, summary: RunSummary | None, mode: str) -> None:
    """``_run.json`` (parameters, versions, this run), ``_stats.json`` (totals over finished shards) and, at the
    end, the dataset card (``card.write_card``).

    Without a ``summary`` (a run starting): ``_run.json`` only, ``"finished": false``, so a folder records what
    it is being built from from the start (a later run with another input or parameters is refused)."""
    from .stats import collect_totals

    folder = Folder(config.output)
    folder.makedirs()
    last_run = None if summary is None else (
        {k: v for k, v in summary.to_dict().items() if k not in ("shards_written", "shards_skipped")}
        | {"shards_written": len(summary.shards_written), "shards_skipped": len(summary.shards_skipped)})
    run_info = {
        "mode": mode,
        "params": config.params_through("write"),
        "engine": config.engine,
        "ray_address": config.ray_address,
        "finished": summary is not None,
        "last_run": last_run,
        "versions": _versions(),
        "command": sys.argv,
    }
    folder.write_bytes("_run.json", json.dumps(run_info, indent=1, sort_keys=True, default=str).encode("utf-8"))
    if summary is not None:
        folder.write_bytes("_stats.json",
                           json.dumps(collect_totals(config.output), indent=1, sort_keys=True).encode("utf-8"))
        from .card import write_card

        try:
            write_card(config.output)   # .huggingface.yaml + _README.md: datasets.load_dataset(OUTPUT) reads it
        except FileNotFoundError:
            pass                        # no shard committed yet: nothing to describe
        except (OSError, ValueError) as error:  # a file the card reads is damaged: the build itself is whole
            print(f"[grit] warning: the dataset card was not written ({' '.join(str(error).split())[:200]}); "
                  f"`grit card {config.output}` writes it", file=sys.stderr)


def _versions() -> dict[str, str]:
    from importlib import metadata

    out = {"python": platform.python_version()}
    for package in ("grit", "spacy", "torch", "transformers", "ray", "pyarrow"):
        try:
            out[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            pass
    return out
