"""Shared by every source: the per-epoch file order, the split by rank and loader worker, the shuffle buffer,
resume positions and batching (open_clip / webdataset style). File listing and tar reading: ``kosmos.shards``.

``SourceStream`` is an endless, deterministic ``IterableDataset`` of batches of one source for one rank: files
are shuffled per epoch with the same seed on every rank, split by node (rank) and DataLoader worker (with fewer
files than readers, every reader reads all files and keeps every n-th item), and every batch carries the
reader's position so a checkpoint can restart each reader exactly where it was.
"""
from __future__ import annotations

import random
from dataclasses import asdict
from typing import Any, Iterable, Iterator

import torch

from kosmos.sequence import collate
from kosmos.sources.base import ReaderState, SampleError, Source, count


def shuffle_buffer(samples: Iterable[Any], size: int, rng: random.Random) -> Iterator[Any]:
    """Seeded buffer shuffle (webdataset-style): deterministic for a given ``rng`` state."""
    if size <= 1:
        yield from samples
        return
    buffer: list[Any] = []
    for sample in samples:
        buffer.append(sample)
        if len(buffer) >= size:
            i = rng.randrange(len(buffer))
            buffer[i], buffer[-1] = buffer[-1], buffer[i]
            yield buffer.pop()
    rng.shuffle(buffer)
    yield from buffer


class SourceStream(torch.utils.data.IterableDataset):
    """Endless, deterministic batches of one source for one rank.

    ``reader_states`` maps a logical reader id (0..num_workers-1) to its ``ReaderState`` dict, and
    ``worker_offset`` rotates DataLoader workers onto logical readers, so that a resumed run continues the
    DataLoader's round robin exactly where the interrupted one stopped.
    """

    def __init__(self, source: Source, batch_size: int, seed: int = 0, shuffle: int = 1000, rank: int = 0,
                 world_size: int = 1, num_workers: int = 0, reader_states: dict | None = None,
                 worker_offset: int = 0, files: list[str] | None = None):
        super().__init__()
        self.source, self.batch_size, self.seed, self.shuffle = source, batch_size, seed, shuffle
        self.files = list(files) if files is not None else source.list_files()
        self.rank, self.world_size = rank, world_size
        self.num_readers = max(num_workers, 1)
        self.reader_states = {int(k): v for k, v in (reader_states or {}).items()}
        self.worker_offset = worker_offset

    def _reader(self) -> int:
        info = torch.utils.data.get_worker_info()
        worker = info.id if info is not None else 0
        return (worker + self.worker_offset) % self.num_readers

    def raw_stream(self, slot: int, slots: int, counters: dict[str, int]) -> Iterator[tuple[int, dict]]:
        """(epoch, raw item) forever, in this reader's deterministic order."""
        epoch = 0
        while True:
            order = list(self.files)
            random.Random(self.seed * 1_000_003 + epoch).shuffle(order)  # same on every rank
            if len(order) >= slots:
                mine, keep_every = order[slot::slots], None
            else:  # fewer files than readers: read all, keep every slots-th item
                mine, keep_every = order, slots

            def items():
                index = 0
                for path in mine:
                    for raw in self.source.read(path, counters):
                        if keep_every is None or index % keep_every == slot:
                            yield raw
                        index += 1

            rng = random.Random(self.seed * 7_919 + epoch * 104_729 + slot)
            size = self.shuffle if self.source.shuffle_units else 0
            n = 0
            for raw in shuffle_buffer(items(), size, rng):
                n += 1
                yield epoch, raw
            if n == 0:
                raise RuntimeError(f"{self.source.spec.label}: reader {slot} of {slots} got nothing from "
                                   f"{len(self.files)} file(s)")
            epoch += 1

    def tagged_units(self, slot: int, slots: int, state: ReaderState) -> Iterator[tuple[Any, tuple]]:
        """``(unit, (position, offset, epoch))`` from the stream, resuming after ``state``'s position/offset:
        items before it are skipped unread, the item at it re-derived and its emitted units dropped."""
        saved_skipped = dict(state.skipped)
        start, start_offset = state.position, state.offset
        position = 0
        usable = 0
        for epoch, raw in self.raw_stream(slot, slots, state.skipped):
            position += 1
            if position < start:
                continue
            if position == start:  # errors met while replaying were counted before the checkpoint
                state.skipped.clear()
                state.skipped.update(saved_skipped)
            try:  # problems inside an item replayed on resume were counted before the checkpoint
                units = self.source.units(raw, epoch, state.skipped if position > start else {})
            except SampleError as error:
                if position > start:
                    count(state.skipped, error.reason)
                if position - start > 10_000 and usable == 0:
                    raise RuntimeError(f"{self.source.spec.label}: no usable item in the first 10000 read; "
                                       f"skipped: {state.skipped}")
                continue
            usable += 1
            skip = start_offset if position == start else 0
            for offset in range(skip, len(units)):
                yield units[offset], (position, offset + 1, epoch)

    def __iter__(self) -> Iterator[dict[str, Any]]:
        reader = self._reader()
        saved = self.reader_states.get(reader)
        state = ReaderState(**saved) if saved else ReaderState()
        state.skipped = dict(state.skipped)
        slot, slots = self.rank * self.num_readers + reader, self.world_size * self.num_readers
        pad_id = self.source.encoder.pad
        rows = []
        for row, (position, offset, epoch) in self.source.pack(self.tagged_units(slot, slots, state)):
            rows.append(row)
            if len(rows) == self.batch_size:
                state.position, state.offset, state.epoch = position, offset, epoch
                batch = collate(rows, pad_id)
                batch["reader"] = reader
                batch["reader_state"] = asdict(state)
                batch["reader_state"]["skipped"] = dict(state.skipped)
                rows = []
                yield batch


def make_loader(stream: SourceStream, num_workers: int = 0):
    """DataLoader over a ``SourceStream`` (batches are formed in the workers; order is deterministic)."""
    return torch.utils.data.DataLoader(
        stream, batch_size=None, num_workers=num_workers, persistent_workers=False,
        prefetch_factor=2 if num_workers else None,
    )
