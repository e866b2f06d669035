"""One lower tier: a block store with its breaker, codec and statistics.

`fetch` reads the leading run of blocks a prompt needs, batch by batch, and stops at the
first block missing, unusable or past the deadline, so the engine computes the rest. Every
value passes `decode` before use; one that fails (damaged, another model's, another prefix's)
is a counted miss, logged and deleted. Every store error is a miss too: a tier can cost a
request its hit, never its answer.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence

from promptcache.tiers.breaker import STATE_VALUES, CircuitBreaker
from promptcache.tiers.codec import BlockMeta, Cipher, CorruptBlock, decode
from promptcache.tiers.stats import TierStats
from promptcache.tiers.store import BlockStore, StoreUnavailable

logger = logging.getLogger(__name__)

# The breaker's latency budget is per operation of up to this many bytes: a batch of 32 blocks
# (23 MiB for SmolLM2) legitimately takes longer than one small read, and is judged per 8 MiB.
SLOW_UNIT_BYTES = 8 * 2**20


class Tier:
    def __init__(self, store: BlockStore, *, breaker: CircuitBreaker | None = None, cipher: Cipher | None = None,
                 ttl_s: float | None = 3600.0, batch_blocks: int = 32, clock: Callable[[], float] = time.monotonic):
        self.store = store
        self.name = store.name
        self.breaker = breaker
        self.cipher = cipher
        self.ttl_s = ttl_s
        self.batch_blocks = batch_blocks
        self.stats = TierStats()
        self._clock = clock

    def _timed(self, op, *args, nbytes=lambda result: 0):
        """Run one store call through the breaker; (result, seconds), or None when refused or failed."""
        if self.breaker is not None and not self.breaker.allow():
            return None
        start = self._clock()
        try:
            result = op(*args)
        except StoreUnavailable as exc:
            if self.breaker is not None:
                self.breaker.failure()
            self.stats.add(errors=1)
            logger.warning("%s tier: %s", self.name, exc)
            return None
        seconds = self._clock() - start
        if self.breaker is not None:
            self.breaker.success(seconds / max(1.0, nbytes(result) / SLOW_UNIT_BYTES))
        return result, seconds

    @property
    def available(self) -> bool:
        return self.breaker is None or self.breaker.state != "open"

    def fetch(self, metas: Sequence[BlockMeta], deadline: float) -> list[memoryview]:
        """Payloads of the leading run of `metas` this tier holds, read before `deadline`."""
        found: list[memoryview] = []
        for start in range(0, len(metas), self.batch_blocks):
            if self._clock() > deadline:
                self.stats.add(abandoned_reads=1)
                break
            batch = metas[start:start + self.batch_blocks]
            answer = self._timed(self.store.get_many, [meta.key for meta in batch],
                                 nbytes=lambda values: sum(len(v) for v in values if v))
            if answer is None:
                self.stats.add(misses=len(metas) - len(found))
                break
            values, seconds = answer
            self.stats.observe_read(len(batch), sum(len(v) for v in values if v), seconds)
            run = self._leading_run(batch, values)
            found += run
            if len(run) < len(batch):
                self.stats.add(misses=len(metas) - len(found))
                break
        self.stats.add(hits=len(found))
        return found

    def held(self, metas: Sequence[BlockMeta]) -> int:
        """How many of the leading `metas` this tier holds, by existence only (nothing is read
        or decoded): what /v1/cache/explain reports per tier. 0 while the breaker is open."""
        count = 0
        if not self.available:
            return 0
        for meta in metas:
            answer = self._timed(self.store.exists, meta.key)
            if answer is None or not answer[0]:
                break
            count += 1
        return count

    def _leading_run(self, metas: Sequence[BlockMeta], values: Sequence[bytes | None]) -> list[memoryview]:
        run = []
        for meta, value in zip(metas, values):
            if value is None:
                break
            try:
                run.append(decode(value, meta, self.cipher))
            except CorruptBlock as exc:
                self.stats.add(corrupt=1)
                logger.warning("%s tier: block %s is unusable (%s); removing it", self.name, meta.key.hex(), exc)
                self._timed(self.store.delete, meta.key)
                break
        return run

    def write(self, items: Sequence[tuple[bytes, bytes]], ttl_s: float | None) -> bool:
        """Store encoded values, a batch at a time; False when any batch was refused or failed
        (its blocks and the rest are counted as dropped)."""
        ttl = ttl_s if ttl_s is not None else self.ttl_s
        for start in range(0, len(items), self.batch_blocks):
            batch = items[start:start + self.batch_blocks]
            nbytes = sum(len(value) for _, value in batch)
            answer = self._timed(self.store.put_many, batch, ttl, nbytes=lambda _: nbytes)
            if answer is None:
                self.stats.add(dropped_writes=len(items) - start)
                return False
            self.stats.observe_write(len(batch), nbytes, answer[1])
        return True

    def as_dict(self) -> dict:
        out = self.stats.as_dict()
        state = "closed" if self.breaker is None else self.breaker.state
        out.update(breaker=state, breaker_state_value=STATE_VALUES[state],
                   breaker_opened=0 if self.breaker is None else self.breaker.opened)
        return out

    def close(self) -> None:
        self.store.close()
