"""The training mixture: every optimiser step draws a batch from every configured source, each with its own
batch size (Kosmos-2 paper, Table 7; the released code draws one source per batch instead).

``--mix`` declares it, one ``KIND=PATHS[:BATCH]`` entry per source (PATHS: comma-separated files, folders,
globs or brace patterns), e.g. ``--mix grounded=grit/ captions=shards/ text=corpus/*.jsonl.zst interleaved=mmc4/``.
A source given without ``:BATCH`` gets its default share of the step (``kosmos.train.recipes.batch_size_of``: the
recipe's, the preset's own for the small presets, or the paper's proportions). ``parse_mix`` is the one reader of
``--mix``; ``kosmos.train.plan`` turns its specs into the run's planned sources.
"""
from __future__ import annotations

from typing import Any

from kosmos.sources import SOURCES, DataConfig, SourceError, SourceSpec, build_source

def parse_mix(entries: list[str]) -> list[SourceSpec]:  # noqa: C901 - one check per malformed case
    """``["grounded=DIR:16", "text=a.jsonl,b.jsonl"]`` -> source specs (one-line ``SourceError`` when malformed)."""
    specs: list[SourceSpec] = []
    for entry in entries:
        kind, sep, rest = entry.partition("=")
        kind = kind.strip()
        if not sep or not rest.strip():
            raise SourceError(f"--mix {entry!r}: write KIND=PATHS[:BATCH], KIND one of {sorted(SOURCES)}")
        if kind not in SOURCES:
            raise SourceError(f"--mix {entry!r}: unknown source kind {kind!r}; choose from {sorted(SOURCES)}")
        paths, batch = rest, None
        head, colon, tail = rest.rpartition(":")
        if colon and tail.strip().lstrip("+-").isdigit():
            paths, batch = head, int(tail)
            if batch < 1:
                raise SourceError(f"--mix {entry!r}: the batch size must be at least 1, got {batch}")
        if not any(p.strip() for p in paths.split(",")):
            raise SourceError(f"--mix {entry!r}: no path given; write KIND=PATHS[:BATCH]")
        if any(s.kind == kind for s in specs):
            raise SourceError(f"--mix: {kind} is given twice; list several paths of one source with commas")
        specs.append(SourceSpec(kind=kind, paths=[p for p in paths.split(",") if p.strip()], batch_size=batch))
    if not specs:
        raise SourceError("--mix: no source given")
    return specs


def check_sources(specs: list[SourceSpec], config: DataConfig) -> None:
    """Every source listed, non-empty and readable, before training starts (``SourceError``, one line)."""
    for spec in specs:
        build_source(spec, None, config).check()


class Mixture:
    """Per-source loaders of one rank; ``next_step()`` gives one batch of every source.

    ``state`` (from a checkpoint) maps a source label to ``{"readers": {reader: ReaderState dict},
    "consumed": batches taken}``, so that every source resumes exactly where it was."""

    def __init__(self, specs: list[SourceSpec], encoder, config: DataConfig, rank: int = 0, world_size: int = 1,
                 loader_workers: int = 0, state: dict | None = None):
        from kosmos.stream import SourceStream, make_loader

        self.specs = specs
        self.readers: dict[str, dict] = {}
        self.consumed: dict[str, int] = {}
        self.loaders: dict[str, Any] = {}
        readers_per_source = max(loader_workers, 1)
        for spec in specs:
            saved = (state or {}).get(spec.label, {})
            self.readers[spec.label] = {int(k): v for k, v in saved.get("readers", {}).items()}
            self.consumed[spec.label] = saved.get("consumed", 0)
            stream = SourceStream(build_source(spec, encoder, config), spec.batch_size, seed=config.seed,
                                  shuffle=config.shuffle_buffer, rank=rank, world_size=world_size,
                                  num_workers=loader_workers, reader_states=self.readers[spec.label],
                                  worker_offset=self.consumed[spec.label] % readers_per_source)
            self.loaders[spec.label] = iter(make_loader(stream, loader_workers))

    def next_step(self) -> dict[str, dict]:
        batches = {}
        for spec in self.specs:
            batch = next(self.loaders[spec.label])
            self.consumed[spec.label] += 1
            self.readers[spec.label][batch["reader"]] = batch["reader_state"]
            batches[spec.label] = batch
        return batches

    def state(self) -> dict:
        return {label: {"readers": dict(self.readers[label]), "consumed": self.consumed[label]}
                for label in self.readers}

    def skipped(self) -> dict[str, dict[str, int]]:
        """Items skipped so far by this rank, per source and reason."""
        out: dict[str, dict[str, int]] = {}
        for label, readers in self.readers.items():
            totals: dict[str, int] = {}
            for reader_state in readers.values():
                for reason, n in reader_state["skipped"].items():
                    totals[reason] = totals.get(reason, 0) + n
            out[label] = totals
        return out
