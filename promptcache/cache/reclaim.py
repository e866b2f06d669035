"""Reclaim: how a block leaves the cache, and who hears of it.

A block leaves as an evictable leaf only (a parent after its children), for a reason: "policy"
or "quota" (making room, `room.py`), "ttl" (expired), "removed" or "flush" (asked for). Each
drop unlinks the node from the trie, gives its block back to the budget, counts it in stats,
tells every eviction listener (an `EvictedBlock`, so a lower tier can keep what memory drops)
and then the owner, `on_evict(payload)`, exactly once, so the owner frees the bytes.

Besides drops, this is where a block becomes droppable again: a released reference or a lifted
pin re-offers the node to the eviction queue, and to the expiry queue when it is already due.

`now()` is read through the owner (`PrefixCache._clock`) each time, never captured, so a clock
the owner swaps in reaches every drop.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field

from promptcache.cache.budget import Budget
from promptcache.cache.eviction import EvictedBlock, EvictionQueue
from promptcache.cache.expiry import ExpiryQueue
from promptcache.cache.stats import CacheStats
from promptcache.cache.trie import BlockNode, BlockTrie

logger = logging.getLogger("promptcache.cache.prefix_cache")  # the cache's one log name

INF = float("inf")


@dataclass(eq=False)
class Reclaimer:
    """Drops blocks and re-offers freed ones; owns the eviction listeners and `on_evict`. The
    trie, budget, queues and stats are the cache's, shared with it."""

    trie: BlockTrie
    budget: Budget
    queue: EvictionQueue
    expiry: ExpiryQueue
    stats: CacheStats
    now: Callable[[], float]
    on_evict: Callable[[object], None]
    listeners: list[Callable[[EvictedBlock], None]] = field(default_factory=list)

    def collect_expired(self, now: float) -> int:
        """Drop every expired block nobody holds or pins; returns the count."""
        dropped = 0
        while (node := self.expiry.pop_due(now)) is not None:
            # Descendants are unreachable once an ancestor expired; none can be held or pinned,
            # since holds and pins cover whole paths.
            dropped += self.drop_subtree(node, "ttl")
        return dropped

    def drop_subtree(self, top: BlockNode, reason: str) -> int:
        """Drop every evictable node under `top` (itself included), leaves first."""
        dropped = 0
        for node in BlockTrie.postorder(top):
            if node.evictable:
                self.drop(node, reason)
                dropped += 1
        return dropped

    def drop(self, node: BlockNode, reason: str, offer_parent: bool = True) -> BlockNode | None:
        """Unlink one evictable leaf, free its bytes, tell the owner. Returns the parent (None for a root)."""
        parent = self.trie.detach(node)
        self.budget.remove(node.tenant)
        self.stats.evictions[reason] += 1
        if parent is not None:
            if offer_parent:
                self.queue.offer(parent)
            if parent.expires_at != INF and parent.expires_at <= self.now():
                self.expiry.offer(parent)  # it expired while its child kept it; collect it now
        for listener in self.listeners:
            try:
                listener(EvictedBlock(node.key, node.tokens, node.payload, node.tenant, reason))
            except Exception:  # noqa: BLE001 - a listener's fault must not leak the payload
                logger.exception("an eviction listener failed")
        self.on_evict(node.payload)
        return parent

    def evict(self, count: int, reason: str, candidates: Callable[[], tuple | list],
              may_evict: Callable[[str], bool] | None = None) -> int:
        """Drop up to `count` leaves in policy order from the tenants `candidates()` names (asked
        again before each pop, since shares move as blocks go). `may_evict(tenant)`, when given, is
        checked again before a chain walks up to the next block. Returns how many were dropped."""
        queue, dropped = self.queue, 0
        while dropped < count:
            popped = queue.pop(candidates())
            if popped is None:
                break
            key, victim = popped
            while True:  # walk up a chain while each parent is next in line anyway
                parent = self.drop(victim, reason, offer_parent=False)
                dropped += 1
                if parent is None:
                    break
                parent_key = None
                if dropped < count and (may_evict is None or may_evict(parent.tenant)):
                    parent_key = queue.next_in_line(parent, key)
                if parent_key is None:
                    queue.offer(parent)
                    break
                key, victim = parent_key, parent
        return dropped

    def release(self, nodes: list[BlockNode]) -> None:
        """Give back one reference on each of `nodes`; a node nobody holds any more is offered
        for eviction (a leaf) and for expiry (when already due)."""
        now = None
        for node in nodes:
            node.refcount -= 1
            if node.refcount == 0:
                if not node.children:  # only a leaf can have become evictable
                    self.queue.offer(node)
                if node.expires_at != INF:
                    now = self.now() if now is None else now
                    if node.expires_at <= now:
                        self.expiry.offer(node)

    def requeue(self, node: BlockNode, now: float) -> None:
        """`node` just became free: queue it for eviction, and for expiry if already due."""
        self.queue.offer(node)
        if node.expires_at <= now:
            self.expiry.offer(node)
