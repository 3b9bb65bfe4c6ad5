"""Progress on stderr: per-stage sample counts, shards written, throughput and an overall ETA."""
from __future__ import annotations

import sys
import time


def _duration(seconds: float) -> str:
    seconds = int(max(0, seconds))
    h, rest = divmod(seconds, 3600)
    m, s = divmod(rest, 60)
    return f"{h}:{m:02d}:{s:02d}"


class Progress:
    def __init__(self, label: str, total_shards: int, enabled: bool = True, interval_s: float = 5.0, stream=None):
        self.label = label
        self.total_shards = total_shards
        self.enabled = enabled
        self.interval_s = interval_s
        self.stream = stream or sys.stderr
        self.started = time.monotonic()
        self.last = 0.0
        self.shards_done = 0
        self.samples_done = 0
        self.stage_counts: dict[str, int] = {}
        self.finished = 0                         # samples through every stage (written or about to be)
        self.shard_sizes: dict[str, int] = {}     # samples per shard seen so far (to estimate the total)

    def stage(self, name: str, samples: int) -> None:
        self.stage_counts[name] = self.stage_counts.get(name, 0) + samples
        self.maybe_report()

    def samples_finished(self, shard: str, shard_total: int, samples: int) -> None:
        """Samples of ``shard`` (``shard_total`` in all) came out of the last stage."""
        self.shard_sizes[shard] = shard_total
        self.finished += samples
        self.maybe_report()

    def shard_written(self, shard: str, samples: int) -> None:
        self.shards_done += 1
        self.samples_done += samples
        self.maybe_report(force=self.shards_done == self.total_shards)

    def eta_s(self) -> float | None:
        elapsed = time.monotonic() - self.started
        if self.shard_sizes and self.finished:
            # samples still to come, at the rate seen so far (shards not seen yet: the mean shard size)
            mean_size = sum(self.shard_sizes.values()) / len(self.shard_sizes)
            total = sum(self.shard_sizes.values()) + mean_size * max(0, self.total_shards - len(self.shard_sizes))
            return max(0.0, total - self.finished) * elapsed / self.finished
        if not self.shards_done:
            return None
        return elapsed / self.shards_done * (self.total_shards - self.shards_done)

    def line(self) -> str:
        elapsed = time.monotonic() - self.started
        done = max(self.samples_done, self.finished)
        rate = done / elapsed if elapsed > 0 else 0.0
        parts = [f"[grit {self.label}] shards {self.shards_done}/{self.total_shards}",
                 f"samples {done:,} ({rate:.1f}/s)"]
        if self.stage_counts:
            parts.append(" ".join(f"{k} {v:,}" for k, v in self.stage_counts.items()))
        eta = self.eta_s()
        parts.append(f"elapsed {_duration(elapsed)}" + (f" ETA {_duration(eta)}" if eta is not None else ""))
        return ", ".join(parts)

    def maybe_report(self, force: bool = False) -> None:
        now = time.monotonic()
        if self.enabled and (force or now - self.last >= self.interval_s):
            self.last = now
            print(self.line(), file=self.stream, flush=True)

    def message(self, text: str) -> None:
        if self.enabled:
            print(f"[grit {self.label}] {text}", file=self.stream, flush=True)
