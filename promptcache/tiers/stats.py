"""Per-tier counters and the moving estimates the planner reads.

Counters only grow (Prometheus counters); `as_dict` is what /v1/cache/stats shows. Latency is
kept as sums and counts (mean = sum / count), and as the estimates below.

The estimates model one batched read of n blocks as `latency + n * block_s`: a fixed cost per
round trip plus a cost per block (the tier's bandwidth). Each read splits its measured time
between the two by the current estimates and moves each by an exponential average, so a tier
that slows down is noticed within a few reads.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field

_ALPHA = 0.2  # weight of the newest sample in the moving averages


@dataclass
class TierStats:
    hits: int = 0  # blocks found and used
    misses: int = 0  # blocks looked for and not found (or unusable)
    corrupt: int = 0  # values that failed decode: counted, logged, removed
    errors: int = 0  # operations that failed (timeouts, refused connections, disk errors)
    bytes_read: int = 0
    bytes_written: int = 0
    writes: int = 0  # blocks written
    dropped_writes: int = 0  # blocks not written: queue full, or the breaker open
    abandoned_reads: int = 0  # fetches stopped at their deadline (the rest was computed)
    skipped_reads: int = 0  # lookups the planner or the breaker skipped
    read_ops: int = 0
    read_seconds: float = 0.0
    write_ops: int = 0
    write_seconds: float = 0.0
    latency_s: float = 0.001  # estimate: fixed cost of one round trip
    block_s: float = 1e-4  # estimate: cost of one more block in a batch
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def add(self, **counts) -> None:
        with self._lock:
            for name, value in counts.items():
                setattr(self, name, getattr(self, name) + value)

    def observe_read(self, blocks: int, nbytes: int, seconds: float) -> None:
        with self._lock:
            self.read_ops += 1
            self.read_seconds += seconds
            self.bytes_read += nbytes
            if blocks:
                modelled = self.latency_s + blocks * self.block_s
                share = self.latency_s / modelled if modelled > 0 else 0.5
                self.latency_s += _ALPHA * (seconds * share - self.latency_s)
                self.block_s += _ALPHA * (seconds * (1 - share) / blocks - self.block_s)

    def observe_write(self, blocks: int, nbytes: int, seconds: float) -> None:
        with self._lock:
            self.write_ops += 1
            self.write_seconds += seconds
            self.writes += blocks
            self.bytes_written += nbytes

    def predict_s(self, blocks: int) -> float:
        return self.latency_s + blocks * self.block_s

    def as_dict(self) -> dict:
        with self._lock:
            out = {name: getattr(self, name) for name in self.__dataclass_fields__ if not name.startswith("_")}
        out["read_latency_mean_s"] = out["read_seconds"] / out["read_ops"] if out["read_ops"] else None
        out["write_latency_mean_s"] = out["write_seconds"] / out["write_ops"] if out["write_ops"] else None
        return out
