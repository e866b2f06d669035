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
misses and are collected at the next match/insert/expire when free, whatever the policy. Every
tenant has a quota (its own or the default share); a tenant over it loses its own leaves. Under
global pressure an insert may evict only blocks of tenants over their fair share (capacity /
tenants holding blocks) and then its own: a tenant within its share never loses a block to
another tenant's insert, and when that leaves no room the new blocks are not cached. Pins are
capped per tenant and in all (`pins.py`); a pin past either budget raises PinBudgetExceeded.

NOTE: not thread-safe; the engine calls it from its one step() loop.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence

from promptcache.cache.admission import Admission
from promptcache.cache.budget import Budget
from promptcache.cache.config import CacheConfig
from promptcache.cache.eviction import EvictedBlock, EvictionQueue
from promptcache.cache.expiry import ExpiryQueue
from promptcache.cache.invariants import check_books
from promptcache.cache.keys import Namespace, PromptKeys
from promptcache.cache.pins import PinBudget
from promptcache.cache.policies import ROLES, TIER_RANK, make_policy
from promptcache.cache.results import InsertResult, Lease, PrefixMatch
from promptcache.cache.stats import CacheStats
from promptcache.cache.trie import BlockNode, BlockTrie

logger = logging.getLogger(__name__)

INF = float("inf")


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
        self._admission = Admission(config.admit_after)
        self._stats = CacheStats()
        self._on_evict = on_evict
        self._evict_listeners: list[Callable[[EvictedBlock], None]] = []
        self._clock = clock

    def add_evict_listener(self, listener: Callable[[EvictedBlock], None]) -> None:
        """Call `listener(EvictedBlock)` for every dropped block, before its payload is freed.

        A listener must not touch the cache; one that raises is logged and skipped, so a
        failing lower tier never corrupts the books."""
        self._evict_listeners.append(listener)

    # ----------------------------------------------------------------- lookups

    def match(self, tokens: Sequence[int] | PromptKeys, namespace: Namespace, *,
              max_blocks: int | None = None) -> PrefixMatch:
        """The longest cached full-block prefix of `tokens`, with a reference held on each block.

        Side effects: takes one reference per matched block (they cannot be evicted until
        `release(match)`, which the caller MUST call), touches them (recency and frequency), counts
        the lookup in stats, and first collects expired blocks. `max_blocks` caps the match.
        """
        now = self._clock()
        self._collect_expired(now)
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
        self._release_nodes(lease.nodes)

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
        self._collect_expired(now)
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
        keys = self.keys(tokens, namespace)
        root = self._trie.root(namespace.root_key(), namespace.tenant, create=True)
        path = self._trie.walk(root, keys, total)
        root.refcount += 1  # an emptied root must outlive making room: new blocks hang from it
        for depth, node in enumerate(path):  # held, so making room below cannot evict the path
            node.refcount += 1
            role = roles[depth] if roles is not None else "user"
            if TIER_RANK[role] > TIER_RANK[node.role]:
                node.role = role
            old_expiry = node.expires_at
            node.touch(now, expires_at)
            if node.expires_at != old_expiry:
                self._expiry.offer(node)
        stored, why = 0, None
        try:
            if len(path) < total:
                stored, why = self._insert_new(keys, namespace.tenant, root, path, total, store, roles, now, expires_at,
                                               own_room_only)
        finally:
            self._release_nodes(path)
            root.refcount -= 1
            if not root.children:
                self._trie.drop_root(root)
        return self._result(total, stored, total - len(path) - stored, why)

    def _result(self, total: int, stored: int, skipped: int, reason: str | None) -> InsertResult:
        self._stats.skipped_blocks += skipped
        return InsertResult(total, stored, skipped, reason)

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
            return 0, f"not admitted yet (admit_after={self._admission.admit_after})"
        if (why := self._budget.too_large(tenant, wanted)) is not None:
            logger.debug("not caching %d new blocks for tenant %r: %s", wanted, tenant, why)
            return 0, why
        fit, short = self._make_room(tenant, wanted, own_room_only)
        add_child, offer_expiry = self._trie.add_child, self._expiry.offer
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
            self._budget.add(tenant, stored)
            self._stats.insertions += stored
            if stored:
                self._queue.offer(parent)
        if stored < wanted:
            return stored, short
        if stored < len(new):
            return stored, f"not admitted yet (admit_after={self._admission.admit_after})"
        return stored, None

    def _admitted(self, new: list) -> int:
        """How many leading new blocks pass admission. Every one is counted, so a prompt seen
        k times is admitted whole, not one block per sighting."""
        if self._admission.admit_after == 1:
            return len(new)
        admitted, run = 0, True
        for key, _ in new:
            run = self._admission.offer(key) and run
            admitted += run
        return admitted

    def _make_room(self, tenant: str, wanted: int, own_only: bool = False) -> tuple[int, str | None]:
        """Evict until `wanted` more blocks fit for `tenant`, or until nothing more may go.

        Returns how many fit and, when not all do, why. First the tenant's quota: over it, the
        tenant loses its own leaves. Then the global budget: the insert evicts, in policy order,
        leaves of tenants over their fair share (the tenant itself among them when the insert
        puts it over), then its own leaves, and never a block of a tenant within its share.
        """
        budget = self._budget
        own = (tenant,)
        quota = budget.quota(tenant)
        allowed = wanted
        if quota < budget.capacity:  # a quota of the whole cache is the global budget's job
            excess = budget.held(tenant) + wanted - quota
            if excess > 0:
                self._evict(excess, "quota", lambda: own)
            # no point evicting others for blocks the quota won't take
            allowed = min(wanted, max(0, quota - budget.held(tenant)))
        excess = budget.blocks + allowed - budget.capacity
        if excess > 0:
            if budget.tenant_blocks.keys() - own and not own_only:
                excess -= self._evict(excess, "policy", lambda: budget.over_fair_share(tenant, allowed),
                                      lambda victim: budget.over_share(victim, tenant, allowed))
            if excess > 0:
                self._evict(excess, "policy", lambda: own)
        fit = min(allowed, budget.room(tenant))
        if fit == wanted:
            return fit, None
        if fit < allowed and budget.over_share(tenant, tenant, wanted):
            return fit, (f"room for only {fit} of {wanted} new blocks: tenant {tenant!r} is over its fair share of "
                         f"{budget.fair_share(tenant):.0f} blocks and the rest of the cache is held, pinned, "
                         f"or within other tenants' shares")
        if fit == allowed:
            return fit, (f"room for only {fit} of {wanted} new blocks within tenant {tenant!r}'s quota of {quota} "
                         f"blocks (the rest of its blocks are held or pinned)")
        return fit, (f"room for only {fit} of {wanted} new blocks (the rest of the cache is held, pinned, "
                     f"or within other tenants' fair shares)")

    def _evict(self, count: int, reason: str, candidates: Callable[[], tuple | list],
               may_evict: Callable[[str], bool] | None = None) -> int:
        """Drop up to `count` leaves in policy order from the tenants `candidates()` names (asked
        again before each pop, since shares move as blocks go). `may_evict(tenant)`, when given, is
        checked again before a chain walks up to the next block. Returns how many were dropped."""
        queue, dropped = self._queue, 0
        while dropped < count:
            popped = queue.pop(candidates())
            if popped is None:
                break
            key, victim = popped
            while True:  # walk up a chain while each parent is next in line anyway
                parent = self._drop(victim, reason, offer_parent=False)
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
                    self._requeue(node, now)
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
            return self._drop_subtree(root, "removed")
        path = self._structural_path(tokens, namespace, total)
        return self._drop_subtree(path[-1], "removed") if len(path) == total else 0

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
        dropped = sum(self._drop_subtree(root, "flush") for root in roots)
        self._queue.forget_empty()
        return dropped

    def expire(self) -> int:
        """Drop now every expired block that nobody holds or pins; returns the count."""
        return self._collect_expired(self._clock())

    def _structural_path(self, tokens: Sequence[int] | PromptKeys, namespace: Namespace,
                         limit: int | None = None) -> list[BlockNode]:
        root = self._trie.root(namespace.root_key(), namespace.tenant, create=False)
        total = len(tokens) // self.block_size if limit is None else limit
        return [] if root is None else self._trie.walk(root, self.keys(tokens, namespace), total)

    # --------------------------------------------------------------- dropping

    def _collect_expired(self, now: float) -> int:
        dropped = 0
        while (node := self._expiry.pop_due(now)) is not None:
            # Descendants are unreachable once an ancestor expired; none can be held or pinned,
            # since holds and pins cover whole paths.
            dropped += self._drop_subtree(node, "ttl")
        return dropped

    def _drop_subtree(self, top: BlockNode, reason: str) -> int:
        dropped = 0
        for node in BlockTrie.postorder(top):
            if node.evictable:
                self._drop(node, reason)
                dropped += 1
        return dropped

    def _drop(self, node: BlockNode, reason: str, offer_parent: bool = True) -> BlockNode | None:
        """Unlink one evictable leaf, free its bytes, tell the owner. Returns the parent (None for a root)."""
        parent = self._trie.detach(node)
        self._budget.remove(node.tenant)
        self._stats.evictions[reason] += 1
        if parent is not None:
            if offer_parent:
                self._queue.offer(parent)
            if parent.expires_at != INF and parent.expires_at <= self._clock():
                self._expiry.offer(parent)  # it expired while its child kept it; collect it now
        for listener in self._evict_listeners:
            try:
                listener(EvictedBlock(node.key, node.tokens, node.payload, node.tenant, reason))
            except Exception:  # noqa: BLE001 - a listener's fault must not leak the payload
                logger.exception("an eviction listener failed")
        self._on_evict(node.payload)
        return parent

    def _release_nodes(self, nodes: list[BlockNode]) -> None:
        now = None
        for node in nodes:
            node.refcount -= 1
            if node.refcount == 0:
                if not node.children:  # only a leaf can have become evictable
                    self._queue.offer(node)
                if node.expires_at != INF:
                    now = self._clock() if now is None else now
                    if node.expires_at <= now:
                        self._expiry.offer(node)

    def _requeue(self, node: BlockNode, now: float) -> None:
        """`node` just became free: queue it for eviction, and for expiry if already due."""
        self._queue.offer(node)
        if node.expires_at <= now:
            self._expiry.offer(node)

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
