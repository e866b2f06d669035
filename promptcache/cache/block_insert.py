"""Inserting a prompt's blocks: refresh the cached path, then store what is new past it.

Blocks already cached are touched, their role raised to the more persistent of old and new, and
their TTL extended to max(old, new); they are held for the whole insert, so making room below
them can never evict the path the new blocks hang from. New blocks pass admission
(`admission.py`), then the budget (`Budget.too_large`: blocks that alone exceed the capacity or
the tenant's quota are not cached, and nothing is evicted for them), then room is made for them
(`room.py`), and only then does the owner's `store(block_index)` copy each into its pool.

`PrefixCache.insert` checks the arguments and reports the outcome; this module does the work.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from promptcache.cache.admission import Admission
from promptcache.cache.budget import Budget
from promptcache.cache.eviction import EvictionQueue
from promptcache.cache.expiry import ExpiryQueue
from promptcache.cache.keys import Namespace, PromptKeys
from promptcache.cache.policies import TIER_RANK
from promptcache.cache.reclaim import INF, Reclaimer
from promptcache.cache.room import make_room
from promptcache.cache.stats import CacheStats
from promptcache.cache.trie import BlockNode, BlockTrie

logger = logging.getLogger("promptcache.cache.prefix_cache")  # the cache's one log name


@dataclass(eq=False)
class BlockInserter:
    """Adds blocks to the trie; the budget, queues and stats it updates are the cache's."""

    trie: BlockTrie
    budget: Budget
    queue: EvictionQueue
    expiry: ExpiryQueue
    admission: Admission
    stats: CacheStats
    reclaim: Reclaimer

    def insert(self, keys: PromptKeys, namespace: Namespace, total: int, store: Callable[[int], object],
               roles: Sequence[str] | None, now: float, expires_at: float,
               own_room_only: bool) -> tuple[int, int, str | None]:
        """Cache the first `total` blocks of `keys`. Returns (blocks that were cached already,
        blocks stored now, why any of the rest were not)."""
        root = self.trie.root(namespace.root_key(), namespace.tenant, create=True)
        path = self.trie.walk(root, keys, total)
        root.refcount += 1  # an emptied root must outlive making room: new blocks hang from it
        for depth, node in enumerate(path):  # held, so making room below cannot evict the path
            node.refcount += 1
            role = roles[depth] if roles is not None else "user"
            if TIER_RANK[role] > TIER_RANK[node.role]:
                node.role = role
            old_expiry = node.expires_at
            node.touch(now, expires_at)
            if node.expires_at != old_expiry:
                self.expiry.offer(node)
        stored, why = 0, None
        try:
            if len(path) < total:
                stored, why = self._insert_new(keys, namespace.tenant, root, path, total, store, roles, now,
                                               expires_at, own_room_only)
        finally:
            self.reclaim.release(path)
            root.refcount -= 1
            if not root.children:
                self.trie.drop_root(root)
        return len(path), stored, why

    def _insert_new(self, keys: PromptKeys, tenant: str, root: BlockNode, path: list[BlockNode], total: int,
                    store: Callable[[int], object], roles: Sequence[str] | None, now: float,
                    expires_at: float, own_room_only: bool = False) -> tuple[int, str | None]:
        """Store the blocks past the cached `path`; returns (blocks stored, why any were skipped)."""
        start = len(path)
        parent = path[-1] if path else root
        new = [(keys.key(index), keys.block(index)) for index in range(start, total)]
        if new[0][0] in parent.children:
            logger.warning("block key collision at block %d of a %d-block prompt; not caching past it", start, total)
            return 0, "block key collision"
        wanted = self._admitted(new)
        if wanted == 0:
            return 0, f"not admitted yet (admit_after={self.admission.admit_after})"
        if (why := self.budget.too_large(tenant, wanted)) is not None:
            logger.debug("not caching %d new blocks for tenant %r: %s", wanted, tenant, why)
            return 0, why
        fit, short = make_room(self.budget, self.reclaim, tenant, wanted, own_room_only)
        add_child, offer_expiry = self.trie.add_child, self.expiry.offer
        has_ttl = expires_at != INF
        stored = 0
        try:
            for index in range(start, start + fit):
                key, block = new[index - start]
                payload = store(index)
                parent = add_child(parent, key, block, payload, roles[index] if roles else "user", now, expires_at)
                stored += 1
                if has_ttl:
                    offer_expiry(parent)
        finally:
            self.budget.add(tenant, stored)
            self.stats.insertions += stored
            if stored:
                self.queue.offer(parent)
        if stored < wanted:
            return stored, short
        if stored < len(new):
            return stored, f"not admitted yet (admit_after={self.admission.admit_after})"
        return stored, None

    def _admitted(self, new: list) -> int:
        """How many leading new blocks pass admission. Every one is counted, so a prompt seen
        k times is admitted whole, not one block per sighting."""
        if self.admission.admit_after == 1:
            return len(new)
        admitted, run = 0, True
        for key, _ in new:
            run = self.admission.offer(key) and run
            admitted += run
        return admitted
