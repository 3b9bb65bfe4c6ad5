"""Faults on purpose, for the tests and the bench: a detector and a filesystem that fail like a GPU fleet does,
and processes killed at chosen points.

The one switch: ``GRIT_FAULT_INJECTION=1`` (it reaches the workers of a local Ray through the environment).
Without it nothing here acts, except a detector asked for by name:

- ``--detector grit_pipeline.fault_injection:FaultyDetector --detector-option fault=KIND ...``: the ``noop``
  backend's boxes, with one injected fault (a plugin detector, loaded like any user's backend, on the driver
  and in every Ray worker). ``fault``:

  - ``device_lost``: once ``after`` images went through, every call raises a CUDA error (a lost GPU);
  - ``oom``: a call with more than ``above`` images raises torch's out-of-memory error (any process);
  - ``hang``: the call after ``after`` images never returns (a hung driver: ``--detector-timeout``);
  - ``exit``: the process dies (``os._exit``) at the call after ``after`` images (a preempted node);
  - ``error``: every call after ``after`` images raises a plain ``RuntimeError`` (a broken model).

  Only the first ``times`` processes that build the detector (default 1) carry the fault, counted with
  files in ``state_dir`` (without ``state_dir``: every process), so a replacement actor or a rerun works:
  that is what a rerun after a lost GPU looks like.
- ``flaky://PATH`` (with the switch): the local filesystem, whose writes (uploads, removals, folder creation)
  fail with an object store's ``503 SlowDown`` once every ``$GRIT_FLAKY_FAIL_EVERY`` requests (default 3)
  per process. Registered with fsspec when this module is imported with the switch on (``register()``
  otherwise); ``grit_pipeline.pipeline.storage`` imports it in every process.
- Kill points (with the switch): the product calls ``maybe_kill(point)`` where a crash is worth testing; the
  process SIGKILLs itself the N-th time it gets there, N from the point's variable in ``KILL_POINTS``:

  - ``GRIT_FAULT_KILL_AT_RENAME=N``: at its N-th atomic write, the temp file complete but not yet renamed or
    uploaded (``storage.Folder.atomic_open``; the partial-write crash), counted per process;
  - ``GRIT_FAULT_KILL_DRIVER_AFTER_COMMITS=N``: the Ray driver, once N shards are committed.
"""
from __future__ import annotations

import os
import signal
import threading
import time
from typing import Sequence

from fsspec.implementations.local import LocalFileSystem

from grit_pipeline.detectors.noop import NoopDetector

SWITCH_ENV = "GRIT_FAULT_INJECTION"
FAIL_EVERY_ENV = "GRIT_FLAKY_FAIL_EVERY"
FAULTS = ("device_lost", "oom", "hang", "exit", "error")
KILL_POINTS = {"at_rename": "GRIT_FAULT_KILL_AT_RENAME", "driver_after_commits": "GRIT_FAULT_KILL_DRIVER_AFTER_COMMITS"}
_reached: dict[str, int] = {}  # kill point -> times this process got there


def enabled() -> bool:
    """Whether the switch is on in this process."""
    return os.environ.get(SWITCH_ENV) == "1"


def maybe_kill(point: str) -> None:
    """At a kill point of ``KILL_POINTS``: SIGKILL this process the N-th time it gets here (N from the
    point's variable). Nothing unless the switch is on and the variable set."""
    if not enabled():
        return
    at = os.environ.get(KILL_POINTS[point])
    if not at:
        return
    _reached[point] = _reached.get(point, 0) + 1
    if _reached[point] >= int(at):
        os.kill(os.getpid(), signal.SIGKILL)


class FaultyDetector(NoopDetector):
    """``noop`` with one injected fault (module docstring)."""

    def __init__(self, fault: str = "device_lost", after: int | str = 0, above: int | str = 0,
                 times: int | str = 1, state_dir: str | None = None, **options):
        self.check_options(fault=fault, after=after, above=above, times=times, state_dir=state_dir, **options)
        super().__init__(**options)
        self.fault, self.after, self.above = fault, int(after), int(above)
        self.armed = fault == "oom" or _claim_slot(state_dir, int(times))
        self.images_seen = 0
        self.failing = False

    @classmethod
    def check_options(cls, fault: str = "device_lost", after=0, above=0, times=1, state_dir=None, **options):
        """The driver's preflight: options in range, without claiming a fault slot."""
        if fault not in FAULTS:
            raise ValueError(f"FaultyDetector: fault must be one of {', '.join(FAULTS)}, got {fault!r}")
        for name, value in (("after", after), ("above", above), ("times", times)):
            if not str(value).isdigit():
                raise ValueError(f"FaultyDetector: {name} must be a whole number >= 0, got {value!r}")
        NoopDetector.check_options(**options)

    def detect(self, images: Sequence, phrases: Sequence[Sequence[str]]):
        if self.fault == "oom" and len(images) > self.above:
            import torch

            raise torch.cuda.OutOfMemoryError(f"CUDA out of memory. Tried to allocate {len(images) * 512} MiB "
                                              f"(injected above {self.above} images per call)")
        if self.armed and (self.failing or self.images_seen + len(images) > self.after):
            self.failing = True
            if self.fault == "device_lost":
                raise RuntimeError("CUDA error: an illegal memory access was encountered (injected)")
            if self.fault == "hang":
                time.sleep(24 * 3600)
            if self.fault == "exit":
                os._exit(3)
            if self.fault == "error":
                raise RuntimeError("the model's weights are broken (injected)")
        self.images_seen += len(images)
        return super().detect(images, phrases)


def _claim_slot(state_dir: str | None, times: int) -> bool:
    """True for the first ``times`` processes that ask (files in ``state_dir``); always True without one."""
    if not state_dir:
        return True
    os.makedirs(state_dir, exist_ok=True)
    for slot in range(times):
        try:
            os.close(os.open(os.path.join(state_dir, f"fault-slot-{slot}"), os.O_CREAT | os.O_EXCL))
            return True
        except FileExistsError:
            continue
    return False


class FlakyFileSystem(LocalFileSystem):
    """The local filesystem under ``flaky://``, whose writes fail transiently (module docstring)."""

    protocol = ("flaky",)
    root_marker = "/"
    _lock = threading.Lock()
    writes = 0     # write requests seen by this process
    failures = 0   # of which failed on purpose

    @classmethod
    def _strip_protocol(cls, path):
        path = str(path)
        if path.startswith("flaky://"):
            path = path[len("flaky://"):] or "/"
        return super()._strip_protocol(path)

    def _write_request(self, what: str) -> None:
        every = int(os.environ.get(FAIL_EVERY_ENV, "3"))
        with FlakyFileSystem._lock:
            FlakyFileSystem.writes += 1
            fail = every > 0 and FlakyFileSystem.writes % every == 0
            if fail:
                FlakyFileSystem.failures += 1
        if fail:
            raise OSError(f"503 SlowDown: please reduce your request rate ({what}, injected)")

    def put_file(self, lpath, rpath, **kwargs):
        self._write_request("put")
        return super().put_file(lpath, rpath, **kwargs)

    def rm(self, path, recursive=False, maxdepth=None):
        self._write_request("delete")
        return super().rm(path, recursive=recursive, maxdepth=maxdepth)

    def makedirs(self, path, exist_ok=False):
        self._write_request("mkdir")
        return super().makedirs(path, exist_ok=exist_ok)


def register() -> None:
    import fsspec

    fsspec.register_implementation("flaky", FlakyFileSystem, clobber=True)


if enabled():
    register()
