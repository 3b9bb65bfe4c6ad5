"""The fault model: a sample's own failure vs a fault of the machine (docs/robustness.md, "Fault model").

A *sample's failure* (an image the detector cannot take, a caption spaCy refuses) becomes that sample's
reject row and the run goes on. A *systemic fault* (a lost or reset GPU, a CUDA error, a broken model, a
detector call that hangs, every sample of a batch failing alike) is the machine's: it never becomes a
reject. The shard it met is not committed; under Ray the shard goes to another actor, locally the run
stops in one line and a rerun finishes the build. Out of memory is neither: the batch is halved and retried
down to one image (``grounding.detect_batch``).

Backends say which is which by what they raise: ``SampleError`` for one image's own problem,
``SystemicFault`` (or any CUDA/driver error) for the device's. Anything else is judged by isolation: the
batch is rerun one image at a time, and only when some images pass is a failing one the sample's fault.
"""
from __future__ import annotations

import errno
import random
import time
from typing import Callable, TypeVar

T = TypeVar("T")


class SampleError(Exception):
    """Raised by a detector for one image it cannot take (the image's fault: a reject row)."""


class SystemicFault(RuntimeError):
    """A fault of the machine, not of the data: the shard is not committed and is retried elsewhere."""


# Messages of errors that are never a sample's fault: torch/CUDA/cuDNN/NCCL driver errors and lost devices.
_SYSTEMIC_MARKERS = (
    "cuda error", "cudnn_status", "cublas_status", "nccl error", "device-side assert",
    "illegal memory access", "unspecified launch failure", "device lost", "no cuda gpus are available",
    "cuda driver", "hip error", "xpu error", "ecc error", "gpu is lost", "device not ready",
)
_OOM_MARKERS = ("out of memory", "cuda_error_out_of_memory", "outofmemoryerror")


def is_out_of_memory(error: BaseException) -> bool:
    """A device (or host) out-of-memory error: the batch is too large, not any sample bad."""
    if type(error).__name__ in ("OutOfMemoryError", "MemoryError"):
        return True
    text = f"{type(error).__name__}: {error}".lower()
    return any(marker in text for marker in _OOM_MARKERS)


def is_systemic(error: BaseException) -> bool:
    """An error that is the machine's by its kind or message (never a sample's reject)."""
    if isinstance(error, SystemicFault):
        return True
    if isinstance(error, SampleError):
        return False
    text = f"{type(error).__name__}: {error}".lower()
    return any(marker in text for marker in _SYSTEMIC_MARKERS)


def describe(error: BaseException) -> str:
    return f"{type(error).__name__}: {' '.join(str(error).split())[:300]}"


# --- storage -------------------------------------------------------------------------------------------------

# Object stores answer overload with 429/503 (S3's SlowDown, GCS's rateLimitExceeded), networks reset.
_TRANSIENT_MARKERS = ("slowdown", "slow down", "503", "500 internal", "502", "504", "429", "service unavailable",
                      "throttl", "rate exceeded", "ratelimit", "connection reset", "connection aborted",
                      "broken pipe", "timed out", "temporarily unavailable", "try again")
_TRANSIENT_ERRNOS = {errno.ECONNRESET, errno.ECONNABORTED, errno.ETIMEDOUT, errno.EAGAIN, errno.EPIPE,
                     errno.ECONNREFUSED, errno.EHOSTUNREACH, errno.ENETUNREACH}


def is_transient_storage_error(error: BaseException) -> bool:
    """A storage error that a later attempt may not meet (never FileNotFoundError or a full disk)."""
    if isinstance(error, (FileNotFoundError, FileExistsError, IsADirectoryError, NotADirectoryError,
                          PermissionError)):
        return False
    if isinstance(error, OSError) and error.errno == errno.ENOSPC:
        return False
    if isinstance(error, (ConnectionError, TimeoutError)):
        return True
    if isinstance(error, OSError) and error.errno in _TRANSIENT_ERRNOS:
        return True
    text = f"{type(error).__name__}: {error}".lower()
    return any(marker in text for marker in _TRANSIENT_MARKERS)


class StorageRetry:
    """Retry policy of storage requests: ``attempts`` tries in all, backoff ``base_s`` x 2^k (x jitter)."""

    def __init__(self, attempts: int = 5, base_s: float = 0.5, max_s: float = 30.0):
        self.attempts, self.base_s, self.max_s = max(1, int(attempts)), float(base_s), float(max_s)

    def call(self, what: str, fn: Callable[[], T]) -> T:
        for attempt in range(1, self.attempts + 1):
            try:
                return fn()
            except Exception as error:  # noqa: BLE001 - only transient errors are retried
                if not is_transient_storage_error(error):
                    raise  # (e.g. FileNotFoundError: an answer, not a failure)
                if attempt == self.attempts:
                    raise StorageError(f"{what}: failed {attempt} times, last: {describe(error)}") from error
                time.sleep(min(self.max_s, self.base_s * 2 ** (attempt - 1)) * random.uniform(0.5, 1.0))
        raise AssertionError("unreachable")


class StorageError(OSError):
    """A storage request that kept failing transiently after every retry (the shard fails cleanly)."""


# The policy of this process's storage requests; the pipeline sets it from --storage-retries/--storage-backoff
# (``configure_storage_retry``), each Ray worker from the config it is given.
STORAGE_RETRY = StorageRetry()


def configure_storage_retry(attempts: int, base_s: float) -> None:
    STORAGE_RETRY.attempts, STORAGE_RETRY.base_s = max(1, int(attempts)), float(base_s)
