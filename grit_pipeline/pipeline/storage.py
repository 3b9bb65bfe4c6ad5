"""Files on a local disk or any fsspec filesystem (s3://, gs://, ...), with atomic writes.

Local writes go to ``NAME.tmp-<pid>`` and are renamed with ``os.replace`` once complete; for other
filesystems the file is staged locally and uploaded in one go (an object store publishes an object only
when its upload completes). Either way a reader never sees half a file under a final name.

Requests that fail transiently (an object store's 503/SlowDown, a reset connection) are retried with
backoff under ``faults.STORAGE_RETRY`` (``--storage-retries``, ``--storage-backoff-s``); one that keeps
failing raises ``faults.StorageError`` and its shard fails without being committed.

Crash tests: an atomic write is a kill point of ``grit_pipeline.fault_injection`` (``at_rename``: the temp
file complete, not yet renamed or uploaded); with ``GRIT_FAULT_INJECTION=1`` that module also registers the
failing ``flaky://`` filesystem, in every process that imports this one.
"""
from __future__ import annotations

import contextlib
import os
from typing import IO, Iterator

import fsspec

from grit_pipeline import fault_injection  # (nothing happens there without its switch)
from grit_pipeline.faults import STORAGE_RETRY


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

    def makedirs(self, sub: str = "") -> None:
        path = self.path(sub) if sub else self.root
        _retry(f"mkdir {path}", lambda: self.fs.makedirs(path, exist_ok=True))

    def move(self, old: str, new: str) -> None:
        """Rename a file of the folder (a server-side copy and delete on object stores)."""
        _retry(f"move {self.path(old)}", lambda: self.fs.mv(self.path(old), self.path(new)))

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

            with tempfile.NamedTemporaryFile(prefix="grit-upload-", suffix=f"-{name.rsplit('/', 1)[-1]}") as staging:
                yield staging
                staging.flush()
                fault_injection.maybe_kill("at_rename")
                if "/" in name:  # (filesystems with real folders need the layout sub-folder; object stores ignore it)
                    self.makedirs(name.rsplit("/", 1)[0])
                _retry(f"upload {self.path(name)}", lambda: self.fs.put_file(staging.name, self.path(name)))
            return
        final = self.path(name)
        if "/" in name:  # (a file of a layout sub-folder: _done/, _rejects/ ...)
            os.makedirs(os.path.dirname(final), exist_ok=True)
        temp = f"{final}.tmp-{os.getpid()}"
        try:
            with open(temp, "wb") as f:
                yield f
                f.flush()
                os.fsync(f.fileno())
            fault_injection.maybe_kill("at_rename")
            os.replace(temp, final)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.remove(temp)
            raise

    def write_bytes(self, name: str, data: bytes) -> None:
        with self.atomic_open(name) as f:
            f.write(data)

    def remove_temps(self, prefix: str = "", subfolders: tuple[str, ...] = ()) -> None:
        """Delete temp files a killed writer left behind (optionally only those starting with prefix), in the
        folder and in its ``subfolders``."""
        for sub in ("", *subfolders):
            folder = Folder(self.uri(sub)) if sub else self
            for name in folder.names():
                if ".tmp-" in name and name.startswith(prefix):
                    folder.remove(name)


def _is_local(fs) -> bool:
    protocol = fs.protocol if isinstance(fs.protocol, str) else fs.protocol[0]
    return protocol in ("file", "local")

