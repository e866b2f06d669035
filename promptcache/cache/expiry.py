"""The expiry queue: blocks with a finite TTL, soonest expiry first (a lazy min-heap).

An entry is stale once the node is dropped or its `expires_at` moved (a re-insert extends it);
stale entries are skipped. A due block that is in use or pinned is skipped too: the cache
re-offers it on release or unpin, so it is collected then.
"""

from __future__ import annotations

import heapq
import math

from promptcache.cache.trie import BlockNode


class ExpiryQueue:
    def __init__(self) -> None:
        self._heap: list[tuple[float, int, BlockNode]] = []
        self._seq = 0

    def offer(self, node: BlockNode) -> None:
        if node.expires_at != math.inf:
            self._seq += 1
            heapq.heappush(self._heap, (node.expires_at, self._seq, node))

    def pop_due(self, now: float) -> BlockNode | None:
        """The next live block whose TTL has passed and that is free to drop, or None."""
        heap = self._heap
        while heap and heap[0][0] <= now:
            expires_at, _, node = heapq.heappop(heap)
            if node.alive and node.expires_at == expires_at and node.refcount == 0 and node.pins == 0:
                return node
        return None

    def __len__(self) -> int:
        return len(self._heap)
