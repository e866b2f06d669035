"""PrefixCache: which prompt prefixes have their KV stored, and which to drop when full.

The engine owns the KV storage; this cache owns the index over it. Every cached full block is a
trie node holding the engine's opaque `payload` (its pool block id). The engine:

    match = cache.match(tokens, ns)         # longest cached prefix, now HELD (never evicted)
    ... reuse match.payloads, compute the rest ...
    cache.insert(tokens, ns, store)          # store(i) copies block i into the pool, returns its id
    cache.release(match)                     # the matched blocks become evictable again

When the cache drops a node it calls `on_evict(payload)` exactly once, so the owner frees it.
Listeners added with `add_evict_listener` hear of it first, with the block's key, tokens and
payload (an `EvictedBlock`), so a lower storage tier can keep what memory drops.

Eviction rules: only leaves are dropped (a parent after its children); a node with a reference
(held by a match or by an insert in progress) or a pin is never dropped. Expired blocks (TTL) are
misses and are collected at the next match/insert/expire when free, whatever the policy. Whose
blocks an insert may evict (quotas and fair shares) is `room.py`'s; how an insert stores its
blocks is `block_insert.py`'s; how a block leaves and who is told is `reclaim.py`'s. Pins are
capped per tenant and in all (`pins.py`); a pin past either budget raises PinBudgetExceeded.

NOTE: not thread-safe; the engine calls it from its one step() loop.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence

from promptcache.cache.admission import Admission
from promptcache.cache.block_insert import BlockInserter
from promptcache.cache.budget import Budget
from promptcache.cache.config import CacheConfig
from promptcache.cache.eviction import EvictedBlock, EvictionQueue
from promptcache.cache.expiry import ExpiryQueue
from promptcache.cache.invariants import check_books
from promptcache.cache.keys import Namespace, PromptKeys
from promptcache.cache.pins import PinBudget
from promptcache.cache.policies import ROLES, make_policy
from promptcache.cache.reclaim import INF, Reclaimer
from promptcache.cache.results import InsertResult, Lease, PrefixMatch
from promptcache.cache.stats import CacheStats
from promptcache.cache.trie import BlockNode, BlockTrie


class PrefixCache:
    def __init__(self, config: CacheConfig, block_nbytes: int,
                 on_evict: Callable[[object], None] = lambda payload: None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.config = config
        self.block_size = config.block_size
        self._policy = make_policy(config.policy)
        self._trie = BlockTrie()
        self._queue = EvictionQueue(self._policy)
        self._expiry = ExpiryQueue()
        self._budget = Budget(config.max_bytes, config.max_blocks, block_nbytes, config.tenant_quotas,
                              config.default_tenant_share)
        self._pins = PinBudget(self._budget, config.pin_quota_fraction, config.max_pinned_fraction)
        self._stats = CacheStats()
        self._clock = clock  # read through self each time: a clock swapped in later reaches every part
        self._reclaim = Reclaimer(self._trie, self._budget, self._queue, self._expiry, self._stats,
                                  lambda: self._clock(), on_evict)
        self._inserter = BlockInserter(self._trie, self._budget, self._queue, self._expiry,
                                       Admission(config.admit_after), self._stats, self._reclaim)

    def add_evict_listener(self, listener: Callable[[EvictedBlock], None]) -> None:
        """Call `listener(EvictedBlock)` for every dropped block, before its payload is freed.

        A listener must not touch the cache; one that raises is logged and skipped, so a
        failing lower tier never corrupts the books."""
        self._reclaim.listeners.append(listener)

    # ----------------------------------------------------------------- lookups

    def match(self, tokens: Sequence[int] | PromptKeys, namespace: Namespace, *,
              max_blocks: int | None = None) -> PrefixMatch:
        """The longest cached full-block prefix of `tokens`, with a reference held on each block.

        Side effects: takes one reference per matched block (they cannot be evicted until
        `release(match)`, which the caller MUST call), touches them (recency and frequency), counts
        the lookup in stats, and first collects expired blocks. `max_blocks` caps the match.
        """
        now = self._clock()
        self._reclaim.collect_expired(now)
        limit = len(tokens) // self.block_size
        if max_blocks is not None:
            limit = min(limit, max(0, max_blocks))
        path = self._cached_path(tokens, namespace, limit, now)
        for node in path:
            node.refcount += 1
            node.touch(now)
        num_tokens = len(path) * self.block_size
        stats = self._stats
        stats.lookups += 1
        stats.hits += bool(path)
        stats.hit_tokens += num_tokens
        stats.miss_tokens += len(tokens) - num_tokens
        return PrefixMatch(
            namespace=namespace,
            keys=tuple(node.key for node in path),
            payloads=tuple(node.payload for node in path),
            num_blocks=len(path),
            num_tokens=num_tokens,
            lease=Lease(path),
        )

    def release(self, match: PrefixMatch) -> None:
        """Give back the references `match` holds; releasing the same match twice raises."""
        lease = match.lease
        if lease.released:
            raise RuntimeError("this PrefixMatch was already released")
        lease.released = True
        self._reclaim.release(lease.nodes)

    def peek(self, tokens: Sequence[int] | PromptKeys, namespace: Namespace) -> int:
        """How many leading full blocks of `tokens` a match would find now; holds and touches nothing."""
        return len(self._cached_path(tokens, namespace, len(tokens) // self.block_size, self._clock()))

    def pinned_blocks(self, tokens: Sequence[int] | PromptKeys, namespace: Namespace) -> int:
        """How many leading full blocks of `tokens` carry a pin now (pins cover whole paths)."""
        path = self._cached_path(tokens, namespace, len(tokens) // self.block_size, self._clock())
        return next((depth for depth, node in enumerate(path) if not node.pins), len(path))

    @property
    def pin_budget(self) -> PinBudget:
        """The pin counts and limits, for owners that admit pins ahead of time (retained.py)."""
        return self._pins

    def payloads(self, tokens: Sequence[int] | PromptKeys, namespace: Namespace) -> list[object]:
        """The payloads along `tokens`' cached prefix; holds and touches nothing (for an owner
        that keeps side data with its blocks)."""
        path = self._cached_path(tokens, namespace, len(tokens) // self.block_size, self._clock())
        return [node.payload for node in path]

    def keys(self, tokens: Sequence[int] | PromptKeys, namespace: Namespace) -> PromptKeys:
        """`tokens`' block keys in `namespace`: the given PromptKeys (checked), or new ones.

        Every method that takes tokens also takes a PromptKeys, so a caller that looks up the
        same prompt repeatedly hashes its blocks once."""
        if not isinstance(tokens, PromptKeys):
            return PromptKeys(tokens, namespace, self.block_size)
        if tokens.namespace != namespace or tokens.block_size != self.block_size:
            raise ValueError("these PromptKeys belong to another namespace or block size")
        return tokens

    def _cached_path(self, tokens: Sequence[int] | PromptKeys, namespace: Namespace, limit: int,
                     now: float) -> list[BlockNode]:
        """Cached, unexpired nodes along the first `limit` full blocks (no side effects)."""
        root = self._trie.root(namespace.root_key(), namespace.tenant, create=False)
        if root is None or limit <= 0:
            return []
        path = self._trie.walk(root, self.keys(tokens, namespace), limit)
        for depth, node in enumerate(path):
            if node.expires_at <= now and node.pins == 0:
                return path[:depth]
        return path

    # ----------------------------------------------------------------- inserts

    def insert(self, tokens: Sequence[int] | PromptKeys, namespace: Namespace, store: Callable[[int], object], *,
               roles: Sequence[str] | None = None, ttl_s: float | None = None,
               num_blocks: int | None = None, own_room_only: bool = False) -> InsertResult:
        """Cache the full blocks of `tokens` (the first `num_blocks` when given).

        Blocks already cached are touched, their role raised to the more persistent of old and
        new, and their TTL extended to max(old, new). For each new admitted block, room is made
        first (evicting per policy) and then `store(block_index)` is called; it returns the
        payload. If room cannot be made for all of them (the rest of the cache is held, pinned,
        or within other tenants' fair shares), the leading blocks that fit are stored and
        `reason` says so. New blocks that alone exceed the budget or the tenant quota are not
        cached at all (nothing is evicted for them). With `own_room_only` (a prefix about to be
        pinned) room is made only from the tenant's own blocks and free space.
        """
        now = self._clock()
        self._reclaim.collect_expired(now)
        bs = self.block_size
        total = len(tokens) // bs if num_blocks is None else min(len(tokens) // bs, max(0, num_blocks))
        if roles is not None:
            if len(roles) < total:
                raise ValueError(f"roles has {len(roles)} entries for {total} blocks")
            if unknown := set(roles[:total]) - ROLES:
                raise ValueError(f"unknown roles {sorted(unknown)}; use {sorted(ROLES)}")
        if ttl_s is not None and ttl_s <= 0:
            raise ValueError("ttl_s must be positive")
        if total == 0 or total < self.config.min_prefix_blocks:
            why = f"{total} full blocks, fewer than min_prefix_blocks={self.config.min_prefix_blocks}"
            return self._result(total, 0, total, why if total else None)

        ttl = ttl_s if ttl_s is not None else self.config.default_ttl_s
        expires_at = INF if ttl is None else now + ttl
        cached, stored, why = self._inserter.insert(self.keys(tokens, namespace), namespace, total, store, roles,
                                                    now, expires_at, own_room_only)
        return self._result(total, stored, total - cached - stored, why)

    def _result(self, total: int, stored: int, skipped: int, reason: str | None) -> InsertResult:
        self._stats.skipped_blocks += skipped
        return InsertResult(total, stored, skipped, reason)


    # ------------------------------------------------------- pins and removal

    def pin(self, tokens: Sequence[int], namespace: Namespace) -> int:
        """Pin every cached block along `tokens`' prefix: never evicted nor expired until unpinned.

        Pins nest (each pin needs an unpin). Returns the number of blocks pinned. Raises
        PinBudgetExceeded, pinning nothing, if the blocks not pinned yet would take the tenant past
        its pin budget or the cache past its global one (blocks already pinned cost nothing).
        """
        path = self._cached_path(tokens, namespace, len(tokens) // self.block_size, self._clock())
        new = sum(1 for node in path if not node.pins)
        self._pins.check(namespace.tenant, new)
        for node in path:
            node.pins += 1
        self._pins.add(namespace.tenant, new)
        return len(path)

    def unpin(self, tokens: Sequence[int], namespace: Namespace) -> int:
        """Undo one `pin` on each pinned block along the prefix; returns how many were unpinned."""
        now = self._clock()
        unpinned = 0
        for node in self._structural_path(tokens, namespace):
            if node.pins:
                node.pins -= 1
                unpinned += 1
                if not node.pins:
                    self._pins.remove(node.tenant)
                    self._reclaim.requeue(node, now)
        return unpinned

    def remove(self, tokens: Sequence[int] | PromptKeys, namespace: Namespace, *, num_blocks: int | None = None) -> int:
        """Drop the subtree under the cached prefix `tokens` (its first `num_blocks` full blocks
        when given; all of them must be cached).

        Blocks held or pinned (and so their ancestors) stay. Empty `tokens` means the whole
        namespace. Returns the number of blocks dropped.
        """
        total = len(tokens) // self.block_size
        if num_blocks is not None:
            total = min(total, max(0, num_blocks))
        root = self._trie.root(namespace.root_key(), namespace.tenant, create=False)
        if root is None:
            return 0
        if total == 0:
            return self._reclaim.drop_subtree(root, "removed")
        path = self._structural_path(tokens, namespace, total)
        return self._reclaim.drop_subtree(path[-1], "removed") if len(path) == total else 0

    def flush(self, tenant: str | None = None, include_pinned: bool = False) -> int:
        """Drop every block nobody holds or pins (of `tenant` only, when given); returns the count.

        With `include_pinned`, every pin of those blocks is released first (all nesting levels),
        so pinned blocks go too; a block a match holds stays, unpinned, until it is released.
        """
        roots = self._trie.roots(tenant)
        if include_pinned:
            for root in roots:
                for node in BlockTrie.postorder(root):
                    if node.pins:
                        node.pins = 0
                        self._pins.remove(node.tenant)
        dropped = sum(self._reclaim.drop_subtree(root, "flush") for root in roots)
        self._queue.forget_empty()
        return dropped

    def expire(self) -> int:
        """Drop now every expired block that nobody holds or pins; returns the count."""
        return self._reclaim.collect_expired(self._clock())

    def _structural_path(self, tokens: Sequence[int] | PromptKeys, namespace: Namespace,
                         limit: int | None = None) -> list[BlockNode]:
        root = self._trie.root(namespace.root_key(), namespace.tenant, create=False)
        total = len(tokens) // self.block_size if limit is None else limit
        return [] if root is None else self._trie.walk(root, self.keys(tokens, namespace), total)

    # ------------------------------------------------------------ reporting

    @property
    def stats(self) -> CacheStats:
        """A snapshot of the counters, with current holdings filled in."""
        budget = self._budget
        self._stats.bytes_held = budget.bytes_held()
        self._stats.blocks_held = budget.blocks
        self._stats.tenant_bytes = {t: n * budget.block_nbytes for t, n in budget.tenant_blocks.items()}
        self._stats.pinned_bytes = self._pins.bytes_pinned()
        self._stats.tenant_pinned_bytes = {t: n * budget.block_nbytes for t, n in self._pins.tenant_blocks.items()}
        return self._stats.snapshot()

    def bytes_held(self, tenant: str | None = None) -> int:
        return self._budget.bytes_held(tenant)

    def pinned_bytes(self, tenant: str | None = None) -> int:
        """Bytes of blocks carrying at least one pin (of `tenant` only, when given)."""
        return self._pins.bytes_pinned(tenant)

    def quota_bytes(self, tenant: str) -> int:
        """The tenant's byte cap: its configured quota, else the default share of the capacity."""
        return self._budget.quota(tenant) * self._budget.block_nbytes

    def pin_budget_bytes(self, tenant: str | None = None) -> int:
        """How many bytes `tenant` may keep pinned (the whole cache's pin budget when None)."""
        blocks = self._pins.global_limit if tenant is None else self._pins.limit(tenant)
        return blocks * self._budget.block_nbytes

    def __len__(self) -> int:
        return self._trie.num_blocks

    def check_invariants(self) -> None:
        """Assert the books balance (for tests): counts, reference counts, budget, structure."""
        check_books(self._trie, self._budget, self._pins)
