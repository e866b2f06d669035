"""Write-behind: blocks the engine saved go to the lower tiers on a background thread.

The queue is bounded in blocks. `offer` never blocks a request: past the bound the save is
dropped and counted on every tier (a lost write costs a future hit, nothing else). The worker
encodes each block once and writes each tier a batch at a time (Redis pipelines it). `close`
drains what is queued, within a time limit, so a graceful shutdown keeps the last saves.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Sequence
from dataclasses import dataclass

from promptcache.tiers.codec import BlockMeta, Cipher, encode
from promptcache.tiers.tier import Tier

logger = logging.getLogger(__name__)


@dataclass
class PendingWrite:
    metas: Sequence[BlockMeta]
    payloads: Sequence[bytes | memoryview]
    ttl_s: float | None
    tiers: Sequence[Tier]


class WriteBehind:
    def __init__(self, cipher: Cipher | None = None, max_blocks: int = 4096):
        self.cipher = cipher
        self.max_blocks = max_blocks
        self._queue: queue.Queue[PendingWrite | None] = queue.Queue()
        self._lock = threading.Lock()
        self._queued = 0  # blocks queued or being written
        self._idle = threading.Condition(self._lock)
        self._thread = threading.Thread(target=self._run, name="promptcache-tier-writer", daemon=True)
        self._thread.start()

    def offer(self, write: PendingWrite) -> bool:
        """Queue `write` unless that would pass the bound; never blocks."""
        n = len(write.metas)
        with self._lock:
            if self._queued + n > self.max_blocks:
                accepted = False
            else:
                self._queued += n
                accepted = True
        if not accepted:
            for tier in write.tiers:
                tier.stats.add(dropped_writes=n)
            return False
        self._queue.put(write)
        return True

    @property
    def queued_blocks(self) -> int:
        with self._lock:
            return self._queued

    def _run(self) -> None:
        while (write := self._queue.get()) is not None:
            try:
                items = [(meta.key, encode(meta, payload, self.cipher))
                         for meta, payload in zip(write.metas, write.payloads)]
                for tier in write.tiers:
                    tier.write(items, write.ttl_s)
            except Exception:  # noqa: BLE001 - the writer must outlive any one bad write
                logger.exception("writing blocks to the lower tiers failed")
            finally:
                with self._lock:
                    self._queued -= len(write.metas)
                    self._idle.notify_all()

    def flush(self, timeout_s: float = 10.0) -> bool:
        """Wait until everything queued so far is written; False on timeout."""
        with self._lock:
            return self._idle.wait_for(lambda: self._queued == 0, timeout_s)

    def close(self, timeout_s: float = 10.0) -> bool:
        """Drain the queue (at most `timeout_s`) and stop the worker."""
        drained = self.flush(timeout_s)
        self._queue.put(None)
        self._thread.join(timeout_s)
        return drained
