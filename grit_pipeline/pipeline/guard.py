"""Guards on a run's output folder: never the input, and one run at a time.

``check_output_is_not_input``: an output that is the input folder, or contains it, is refused (a run
would overwrite or delete its own input shards).

``output_lock``: ``OUTPUT/_lock.json`` names the run holding the folder (host, pid, start time). A second
run refuses with those details, so two runs never delete each other's temp files. A lock is stale, and
is taken over with a warning, when its process is gone (same host: the pid no longer runs, or runs a
different process) or, for a lock from another host, when it has not been refreshed for
``STALE_AFTER_S`` (the holder refreshes it every ``HEARTBEAT_S``). Local folders take the lock
atomically (``O_EXCL``); on object stores it is best effort (check, then write).
"""
from __future__ import annotations

import contextlib
import json
import os
import socket
import sys
import threading
import time
from typing import Iterator

from .storage import Folder

LOCK_NAME = "_lock.json"
HEARTBEAT_S = 60.0
STALE_AFTER_S = 600.0


class OutputGuardError(ValueError):
    """The output folder cannot be used by this run; ``str()`` is the one-line reason."""


def _location(url: str) -> tuple[str, str]:
    folder = Folder(url)
    protocol = folder.fs.protocol if isinstance(folder.fs.protocol, str) else folder.fs.protocol[0]
    root = os.path.realpath(folder.root) if folder.local else folder.root.rstrip("/")
    return ("file" if folder.local else protocol), root


def same_location(url_a: str, url_b: str) -> bool:
    """Whether two paths or URLs name the same folder (local paths compared after resolving links)."""
    return _location(url_a) == _location(url_b)


def check_output_is_not_input(input_url: str, output_url: str) -> None:
    """Refuse an output folder that is the input folder or contains it."""
    if not input_url or not output_url:
        return
    (in_protocol, in_root), (out_protocol, out_root) = _location(input_url), _location(output_url)
    if in_protocol != out_protocol:
        return
    if in_root == out_root:
        raise OutputGuardError(f"--output {output_url} is the input folder; choose another output folder")
    if in_root.startswith(out_root.rstrip("/") + "/"):
        raise OutputGuardError(f"--output {output_url} contains the input folder {input_url}; choose an output "
                               f"folder outside it")


def _process_start(pid: int) -> str | None:
    """The kernel's start time of ``pid`` (Linux), to tell a live holder from a reused pid."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            return f.read().rsplit(b")", 1)[1].split()[19].decode()
    except (OSError, IndexError):
        return None


def _holder_alive(lock: dict, age_s: float) -> bool:
    if lock.get("host") != socket.gethostname():
        return age_s < STALE_AFTER_S
    pid = lock.get("pid")
    if not isinstance(pid, int) or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # exists, owned by someone else
    started = lock.get("pid_start")
    return started is None or _process_start(pid) in (None, started)


def _describe(lock: dict) -> str:
    started = lock.get("started")
    when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(started)) if isinstance(started, (int, float)) else "?"
    return f"host {lock.get('host', '?')}, pid {lock.get('pid', '?')}, started {when}"


@contextlib.contextmanager
def output_lock(output_url: str, command: str = "run") -> Iterator[None]:
    """Hold ``OUTPUT/_lock.json`` for the duration of a run (see the module docstring)."""
    folder = Folder(output_url)
    folder.makedirs()
    me = {"host": socket.gethostname(), "pid": os.getpid(), "pid_start": _process_start(os.getpid()),
          "started": time.time(), "command": command}
    data = json.dumps(me, sort_keys=True).encode("utf-8")
    for attempt in range(2):
        if _try_create(folder, data):
            break
        try:
            lock = json.loads(folder.read_bytes(LOCK_NAME))
            if not isinstance(lock, dict):
                raise ValueError("not an object")
        except FileNotFoundError:
            continue  # released meanwhile
        except ValueError:
            lock = {}
        age = _age_s(folder)
        if lock and _holder_alive(lock, age):
            raise OutputGuardError(f"{output_url} is in use by another grit run ({_describe(lock)}); wait for it "
                                   f"to finish, or delete {LOCK_NAME} there if that run is gone")
        print(f"warning: taking over a stale lock on {output_url} ({_describe(lock) if lock else 'unreadable'})",
              file=sys.stderr)
        folder.remove(LOCK_NAME)
    else:
        raise OutputGuardError(f"could not lock {output_url} (another run took it meanwhile)")
    stop = threading.Event()
    beat = threading.Thread(target=_heartbeat, args=(folder, data, stop), daemon=True, name="grit-lock-heartbeat")
    beat.start()
    try:
        yield
    finally:
        stop.set()
        beat.join(timeout=5)
        with contextlib.suppress(Exception):
            current = json.loads(folder.read_bytes(LOCK_NAME))
            if current.get("pid") == me["pid"] and current.get("host") == me["host"]:
                folder.remove(LOCK_NAME)


def _try_create(folder: Folder, data: bytes) -> bool:
    if folder.local:
        try:
            fd = os.open(folder.path(LOCK_NAME), os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            return False
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        return True
    if folder.exists(LOCK_NAME):
        return False
    folder.write_bytes(LOCK_NAME, data)
    return True


def _age_s(folder: Folder) -> float:
    try:
        modified = folder.fs.modified(folder.path(LOCK_NAME))
        return max(0.0, time.time() - modified.timestamp())
    except Exception:  # noqa: BLE001 - a store without mtimes: treat the lock as fresh
        return 0.0


def _heartbeat(folder: Folder, data: bytes, stop: threading.Event) -> None:
    while not stop.wait(HEARTBEAT_S):
        with contextlib.suppress(Exception):
            if folder.local:
                os.utime(folder.path(LOCK_NAME))
            else:
                folder.write_bytes(LOCK_NAME, data)
