"""What an engine may ask of a source and a sink: the contracts every source and sink of the pipeline meets.

Structural (``typing.Protocol``): a class meets a contract by having its methods, without inheriting from
it. ``tests/test_contracts.py`` checks that each source and sink below does.

- ``SampleSource``: samples of a named unit (a shard, a chunk), whole or a few at a time; what the local
  engine needs. Met by ``shards.InputSource``, ``shards.StageSource``, ``instruct_build.InstructSource``
  and ``grit ground``'s image source (``commands/ground.py``: its units are chunks named as it reads).
- ``ShardSource``: a ``SampleSource`` of a folder of shards, which it lists, describes and sizes; what
  ``run_pipeline``/``run_stage`` and the Ray engine need. Met by the first three above.
- ``ShardSink``: where finished shards go, committed atomically with a ``NNNNN.done`` marker last. Met by
  ``shards.BuildSink``, ``shards.StageSink`` and ``instruct_build.InstructSink``.

The Ray engine sends the source and the sink to its workers: both must survive Ray's ``cloudpickle`` (no
open files, no locks) and be usable in another process on another node, so their folders are URLs every node can reach.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable, Iterable, Iterator, Protocol, runtime_checkable

if TYPE_CHECKING:
    from .storage import Folder


@runtime_checkable
class SampleSource(Protocol):
    """Samples (``pipeline.sample`` dicts, ``status`` None until a stage finishes them) of a named unit."""

    def read(self, shard: str) -> list[dict[str, Any]]:
        """Every sample of ``shard``, in any order. A sample that cannot be read is returned finished
        (a ``status`` and ``reason`` of its own, e.g. ``decode_error``), never raised: a bad sample never
        stops a run. Raises only for the machine's faults (storage that keeps failing)."""
        ...

    def read_chunks(self, shard: str, size: int) -> Iterator[list[dict[str, Any]]]:
        """The same samples as ``read``, at most ``size`` in each list, so that one list's images are in
        memory at a time; together the lists hold each sample exactly once."""
        ...


@runtime_checkable
class ShardSource(SampleSource, Protocol):
    """A ``SampleSource`` over the shards of one folder (local path or fsspec URL)."""

    url: str  # the folder: every worker process of the run must reach it

    def shards(self) -> list[str]:
        """The names of the shards ready to be read (e.g. ``00000``), sorted; cheap enough to call once
        per run on the driver (one listing)."""
        ...

    def incomplete(self) -> list[str]:
        """Shards that exist but are not ready (an upstream stage has not finished them): reported as not
        ready, never read. [] for a source whose shards are always complete."""
        ...

    def params(self, shard: str) -> dict[str, Any]:
        """The output-affecting parameters ``shard`` was made with upstream ({} for raw input); the sink's
        marker records them merged with the run's own, so a change upstream rebuilds the shard."""
        ...

    def describe(self, shard: str) -> str:
        """Where the shard came from, in one line (its input files' path or URL without extension); the
        build's files record it."""
        ...

    def size_hint(self, shard: str) -> int | None:
        """Samples in ``shard`` from its cheapest metadata (a parquet footer), or None when unknown; only
        a hint (the engine choice uses it), never relied on for correctness."""
        ...


@runtime_checkable
class ShardSink(Protocol):
    """Finished shards in one folder: each file written atomically, the ``NNNNN.done`` marker last."""

    folder: Folder  # where the shard's files, its marker and the Ray engine's staged parts go

    def files(self, shard: str) -> list[str]:
        """The names of the files (in ``folder``) that a committed ``shard`` has, marker excluded."""
        ...

    def marker(self, shard: str) -> dict[str, Any]:
        """The shard's ``.done`` marker (``shard``, ``samples``, ``params``, ``files``: name -> size);
        raises FileNotFoundError or ValueError when it is missing or unreadable."""
        ...

    def is_done(self, shard: str, params: dict[str, Any]) -> bool:
        """Whether ``shard`` is committed with ``params`` and each of its files still has the size its
        marker recorded (``shards.committed_intact``); anything unreadable counts as not done."""
        ...

    def clear(self, shard: str) -> None:
        """Forget ``shard`` before rebuilding it: its marker first, then its files and stray temp files;
        a shard that is not there is no error."""
        ...

    def write(self, shard: str, samples: list[dict[str, Any]], params: dict[str, Any], input_description: str,
              stream: Callable[[], Iterable[dict[str, Any]]] | None = None) -> None:
        """Commit ``shard`` from its finished ``samples`` (any order; written in key order): every file
        atomically, then the marker recording ``params``, ``len(samples)`` and the files' sizes.
        ``stream``, when given, yields the same samples in key order with their image bytes (the Ray
        engine's merged parts) for a sink that writes images, ``samples`` then being read without them."""
        ...
