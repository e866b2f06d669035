"""The tiers under the engine's memory: disk, then Redis (either or both, in that order).

Lookups: when memory holds only the first m blocks of a prompt, `fetch` continues block by
block into the lower tiers, nearest first: each tier is asked, if the planner says it beats
recomputing, for the blocks the tiers above it did not have, and it answers with a leading
run. The engine promotes what is found into memory and computes only the rest. Blocks found
further down are also written to the nearer tiers (a Redis hit lands on local disk).

Writes: `write` hands the blocks to the write-behind queue for every tier; it never blocks.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence

from promptcache.tiers.codec import BlockMeta
from promptcache.tiers.planner import Planner
from promptcache.tiers.tier import Tier
from promptcache.tiers.write_behind import PendingWrite, WriteBehind


class TierStack:
    def __init__(self, tiers: Sequence[Tier], writer: WriteBehind, planner: Planner,
                 clock: Callable[[], float] = time.monotonic):
        if not tiers:
            raise ValueError("a TierStack needs at least one tier")
        self.tiers = list(tiers)
        self.writer = writer
        self.planner = planner
        self._clock = clock

    def fetch(self, metas: Sequence[BlockMeta]) -> list[memoryview]:
        """Payloads of the leading run of `metas` found in the lower tiers (maybe none)."""
        return self.fetch_counted(metas)[0]

    def fetch_counted(self, metas: Sequence[BlockMeta]) -> tuple[list[memoryview], dict[str, int]]:
        """`fetch`, and how many of the blocks found each tier supplied (by tier name, in
        order: the run from the first tier comes first), so a hit can say where it came from."""
        found: list[memoryview] = []
        sources: dict[str, int] = {}
        for depth, tier in enumerate(self.tiers):
            wanted = metas[len(found):]
            if not wanted:
                break
            budget = self.planner.plan(tier.stats, len(wanted))
            if budget is None or not tier.available:
                tier.stats.add(skipped_reads=1)
                continue
            run = tier.fetch(wanted, self._clock() + budget)
            if run and depth:
                self.writer.offer(PendingWrite(wanted[:len(run)], run, None, self.tiers[:depth]))
            found += run  # after a partial run, a deeper tier may hold the rest
            if run:
                sources[tier.name] = sources.get(tier.name, 0) + len(run)
        return found, sources

    def held(self, metas: Sequence[BlockMeta]) -> dict[str, int]:
        """Blocks of the leading run of `metas` each tier holds (as `fetch` would find them,
        without reading them), by tier name."""
        counts: dict[str, int] = {}
        start = 0
        for tier in self.tiers:
            n = tier.held(metas[start:])
            if n:
                counts[tier.name] = n
                start += n
        return counts

    def write(self, metas: Sequence[BlockMeta], payloads: Sequence[bytes | memoryview], ttl_s: float | None) -> bool:
        """Queue blocks for every tier (TTL None: each tier's default); False if dropped."""
        if not metas:
            return True
        return self.writer.offer(PendingWrite(list(metas), list(payloads), ttl_s, self.tiers))

    def observe_prefill(self, tokens: int, seconds: float) -> None:
        self.planner.observe_prefill(tokens, seconds)

    def stats(self) -> dict:
        return {
            "tiers": {tier.name: tier.as_dict() for tier in self.tiers},
            "write_queue_blocks": self.writer.queued_blocks,
            "prefill_tokens_per_s": self.planner.prefill_tokens_per_s,
        }

    def close(self, timeout_s: float = 10.0) -> bool:
        """Drain the write-behind queue, then close the stores."""
        drained = self.writer.close(timeout_s)
        for tier in self.tiers:
            tier.close()
        return drained
