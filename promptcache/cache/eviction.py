"""The eviction queue: evictable leaves in policy order, one lazy min-heap per tenant.

Entries are (policy sort key, sequence, node version, node). Nothing is removed when a node is
touched, acquired, pinned or given a child; instead such entries go stale and are skipped when
they reach the top (the node must still be an evictable leaf with the same version). A node is
(re-)offered whenever it may have become an evictable leaf: a new leaf, the parent of a dropped
leaf, a release or unpin. Popping is O(log n); a heap is rebuilt from its live entries when it
grows past twice its size at the last rebuild, so stale entries cost amortised O(1).

Heaps are per tenant so that quota pressure can evict a tenant's own leaves and global pressure
can prefer tenants over their fair share, without scanning other tenants' blocks.
"""

from __future__ import annotations

import heapq
from collections.abc import Iterable
from dataclasses import dataclass

from promptcache.cache.keys import BlockKey

from promptcache.cache.policies import EvictionPolicy
from promptcache.cache.trie import BlockNode

_MIN_REBUILD = 1024


@dataclass(frozen=True)
class EvictedBlock:
    """What an eviction listener learns about a dropped block: enough to keep it elsewhere.

    `key` names the block's whole prefix in its namespace (model, tenant, salt), `tokens` are its
    packed token ids, `payload` is the owner's handle to its bytes (valid only during the call:
    the pool frees it right after), and `reason` is why it went (policy, ttl, flush, ...).
    """

    key: BlockKey
    tokens: bytes
    payload: object
    tenant: str
    reason: str


class EvictionQueue:
    def __init__(self, policy: EvictionPolicy) -> None:
        self._sort_key = policy.sort_key
        self._heaps: dict[str, list] = {}
        self._rebuild_at: dict[str, int] = {}
        self._seq = 0

    def offer(self, node: BlockNode) -> None:
        """Queue `node` if it is an evictable leaf now; harmless if it already is queued."""
        if node.parent is None or not node.evictable:
            return
        heap = self._heaps.get(node.tenant)
        if heap is None:
            heap = self._heaps[node.tenant] = []
            self._rebuild_at[node.tenant] = _MIN_REBUILD
        self._seq += 1
        heapq.heappush(heap, (self._sort_key(node), self._seq, node.version, node))
        if len(heap) > self._rebuild_at[node.tenant]:
            self._rebuild(node.tenant)

    def _rebuild(self, tenant: str) -> None:
        seen: set[int] = set()
        live = []
        for entry in self._heaps[tenant]:
            node = entry[3]
            if node.evictable and node.version == entry[2] and id(node) not in seen:
                seen.add(id(node))
                live.append(entry)
        heapq.heapify(live)
        self._heaps[tenant] = live
        self._rebuild_at[tenant] = max(_MIN_REBUILD, 2 * len(live))

    def _top(self, tenant: str) -> tuple | None:
        heap = self._heaps.get(tenant)
        while heap:
            entry = heap[0]
            node = entry[3]
            if node.evictable and node.version == entry[2]:
                return entry
            heapq.heappop(heap)
        return None

    def pop(self, tenants: Iterable[str] | None = None) -> tuple[object, BlockNode] | None:
        """Remove and return (sort key, node) of the first victim among `tenants` (all when None)."""
        best = None
        for tenant in self._heaps if tenants is None else tenants:
            entry = self._top(tenant)
            if entry is not None and (best is None or entry[:2] < best[0][:2]):
                best = (entry, tenant)
        if best is None:
            return None
        heapq.heappop(self._heaps[best[1]])
        return best[0][0], best[0][3]

    def next_in_line(self, node: BlockNode, after_key: object) -> object | None:
        """`node`'s sort key if it may be evicted right after a victim whose key was `after_key`.

        True when `node` is an evictable leaf sorting no later than that victim: it would be
        popped next anyway, so the caller evicts it without a push and a pop. This makes
        evicting a chain (a long prompt, leaf first) cost one heap operation, not two per block.
        """
        if not node.evictable or node.parent is None:
            return None
        key = self._sort_key(node)
        return key if key <= after_key else None

    def forget_empty(self) -> None:
        """Drop heaps of tenants with nothing queued (after a flush)."""
        for tenant in [t for t, heap in self._heaps.items() if not heap]:
            del self._heaps[tenant], self._rebuild_at[tenant]
