"""Files on a local disk or any fsspec filesystem (s3://, gs://, ...), with atomic writes.

Local writes go to ``NAME.tmp-<pid>`` and are renamed with ``os.replace`` once complete; for other
filesystems the file is staged locally and uploaded in one go (an object store publishes an object only
when its upload completes). Either way a reader never sees half a file under a final name.

Requests that fail transiently (an object store's 503/SlowDown, a reset connection) are retried with
backoff under ``faults.STORAGE_RETRY`` (``--storage-retries``, ``--storage-backoff-s``); one that keeps
failing raises ``faults.StorageError`` and its shard fails without being committed.

Test hooks: ``GRIT_FAULT_KILL_AT_RENAME=N`` makes the process SIGKILL itself at its N-th atomic write,
after the temp file is complete but before the rename (the partial-write crash case);
``GRIT_FAULT_INJECTION=1`` registers the failing ``flaky://`` filesystem (``grit_pipeline.fault_injection``).
"""
from __future__ import annotations

import contextlib
import os
import signal
from typing import IO, Iterator

import fsspec

from grit_pipeline.faults import STORAGE_RETRY

if os.environ.get("GRIT_FAULT_INJECTION"):
    import grit_pipeline.fault_injection  # noqa: F401 - registers flaky://

_renames = 0


def _retry(what: str, function):
    return STORAGE_RETRY.call(what, function)


class Folder:
    """A folder addressed by a local path or a URL."""

    def __init__(self, url: str):
        self.url = url.rstrip("/") or "/"
        self.fs, self.root = fsspec.core.url_to_fs(self.url)
        self.local = _is_local(self.fs)

    def path(self, name: str) -> str:
        return f"{self.root.rstrip('/')}/{name}"

    def uri(self, name: str) -> str:
        return f"{self.url}/{name}"

    def exists(self, name: str = "") -> bool:
        path = self.path(name) if name else self.root
        return _retry(f"exists {path}", lambda: self.fs.exists(path))

    def names(self) -> list[str]:
        """File names directly in the folder (sorted); [] when it does not exist."""
        return sorted(self.sizes())

    def sizes(self) -> dict[str, int]:
        """Name -> size of every file directly in the folder, from one listing; {} when it does not exist."""
        try:
            entries = _retry(f"list {self.root}", lambda: self.fs.ls(self.root, detail=True))
        except FileNotFoundError:
            return {}
        return {e["name"].rstrip("/").rsplit("/", 1)[-1]: int(e.get("size") or 0)
                for e in entries if e.get("type") != "directory"}

    def open(self, name: str, mode: str = "rb") -> IO:
        return self.fs.open(self.path(name), mode)

    def read_bytes(self, name: str) -> bytes:
        path = self.path(name)
        return _retry(f"read {path}", lambda: self.fs.cat_file(path))

    def size(self, name: str) -> int:
        path = self.path(name)
        return int(_retry(f"size {path}", lambda: self.fs.size(path)))

    def makedirs(self) -> None:
        _retry(f"mkdir {self.root}", lambda: self.fs.makedirs(self.root, exist_ok=True))

    def remove(self, name: str) -> None:
        path = self.path(name)
        with contextlib.suppress(FileNotFoundError):
            _retry(f"delete {path}", lambda: self.fs.rm(path))

    @contextlib.contextmanager
    def atomic_open(self, name: str) -> Iterator[IO]:
        """Write ``name`` all-or-nothing: it appears complete or not at all."""
        if not self.local:
            # Stage in a local temp file, then one upload: object stores publish an object only when its
            # upload completes, so a crash leaves no partial object under the final name.
            import tempfile

            with tempfile.NamedTemporaryFile(prefix="grit-upload-", suffix=f"-{name}") as staging:
                yield staging
                staging.flush()
                _count_rename()
                _retry(f"upload {self.path(name)}", lambda: self.fs.put_file(staging.name, self.path(name)))
            return
        final = self.path(name)
        temp = f"{final}.tmp-{os.getpid()}"
        try:
            with open(temp, "wb") as f:
                yield f
                f.flush()
                os.fsync(f.fileno())
            _count_rename()
            os.replace(temp, final)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.remove(temp)
            raise

    def write_bytes(self, name: str, data: bytes) -> None:
        with self.atomic_open(name) as f:
            f.write(data)

    def remove_temps(self, prefix: str = "") -> None:
        """Delete temp files a killed writer left behind (optionally only those starting with prefix)."""
        for name in self.names():
            if ".tmp-" in name and name.startswith(prefix):
                self.remove(name)


def _is_local(fs) -> bool:
    protocol = fs.protocol if isinstance(fs.protocol, str) else fs.protocol[0]
    return protocol in ("file", "local")


def _count_rename() -> None:
    """The fault-injection hook for crash tests (inactive unless the env var is set)."""
    global _renames
    at = os.environ.get("GRIT_FAULT_KILL_AT_RENAME")
    if not at:
        return
    _renames += 1
    if _renames >= int(at):
        os.kill(os.getpid(), signal.SIGKILL)
