"""PrefixCache against a reference model, one state machine per eviction policy and budget setup.

The model is a dict of every cached prefix -> payload, kept exact by the store/on_evict
callbacks, plus each prefix's expiry and pin count, and a fixed pool of CAP payload slots.
Which block a policy evicts is the cache's choice; the machine checks that every choice is legal
(never a held or pinned block, every payload evicted once, room made before a block is stored,
budget and quotas kept, and during an insert never a block of another tenant within its fair
share) and that every lookup returns exactly the model's longest live prefix. It predicts every
pin refusal from the pin budgets, which it computes itself, and checks that an insert that left
blocks out did so only because nothing it was entitled to evict was left. Matches stay open
across steps, so eviction runs while blocks are held.
"""

from __future__ import annotations

import math

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from cache_fakes import NBYTES, FakeClock
from promptcache.cache import CacheConfig, Namespace, PinBudgetExceeded, PrefixCache
from promptcache.cache.trie import BlockTrie

BS = 2
CAP = 8  # blocks
NAMESPACES = [Namespace("m", "a"), Namespace("m", "b"), Namespace("m2", "a"), Namespace("m", "a", salt="s"),
              Namespace("m", "c")]
TENANTS = sorted({ns.tenant for ns in NAMESPACES})
ROLE_NAMES = ["system", "user", "assistant", "tool"]

sequences = st.lists(st.integers(0, 2), min_size=0, max_size=5)
namespaces = st.sampled_from(NAMESPACES)


def tokens_of(seq: list[int], tail: int = 0) -> list[int]:
    return [b * 10 + j for b in seq for j in range(BS)] + [7] * tail


class CacheModel(RuleBasedStateMachine):
    policy = "lru"
    quotas: dict[str, int] = {}
    shares: dict[str, float] = {}  # CacheConfig's default_tenant_share, pin_quota_fraction, max_pinned_fraction

    def __init__(self) -> None:
        super().__init__()
        self.clock = FakeClock()
        self.cache = PrefixCache(
            CacheConfig(block_size=BS, max_bytes=CAP * NBYTES, policy=self.policy, default_ttl_s=None,
                        tenant_quotas=self.quotas, **self.shares),
            NBYTES, on_evict=self.on_evict, clock=self.clock)
        self.free_slots = CAP  # the engine's pool: a store takes a slot, an eviction gives it back
        self.inserting: str | None = None  # the tenant whose insert is running
        self.cached: dict[tuple, int] = {}  # (namespace, block ids) -> payload
        self.prefix_of: dict[int, tuple] = {}  # payload -> (namespace, block ids)
        self.expires: dict[tuple, float] = {}
        self.pins: dict[tuple, int] = {}
        self.open: list = []  # matches not yet released
        self.evicted: set[int] = set()
        self.next_payload = 0

    # -------------------------------------------------------------- callbacks

    def on_evict(self, payload: object) -> None:
        assert payload in self.prefix_of and payload not in self.evicted, "evicted twice or never stored"
        prefix = self.prefix_of[payload]
        assert self.pins.get(prefix, 0) == 0, "a pinned block was evicted"
        assert all(payload not in m.payloads for m in self.open), "a held block was evicted"
        tenant = prefix[0].tenant
        if self.inserting not in (None, tenant) and self.expires[prefix] > self.clock.now:
            held = self.blocks_of(tenant)  # still counting the victim
            holders = len({ns.tenant for ns, _ in self.cached} | {self.inserting})
            assert held * holders > CAP, f"{self.inserting}'s insert evicted {tenant}, within its fair share"
        self.evicted.add(payload)
        del self.cached[prefix]
        self.expires.pop(prefix, None)
        self.free_slots += 1

    # ------------------------------------------------------- reference budgets

    def quota(self, tenant: str) -> int:
        if tenant in self.quotas:
            return self.quotas[tenant] // NBYTES
        return int(CAP * self.shares.get("default_tenant_share", 0.5))

    def pin_limit(self, tenant: str | None = None) -> int:
        if tenant is None:
            return int(CAP * self.shares.get("max_pinned_fraction", 0.5))
        return int(self.quota(tenant) * self.shares.get("pin_quota_fraction", 0.5))

    def blocks_of(self, tenant: str) -> int:
        return sum(ns.tenant == tenant for ns, _ in self.cached)

    def pinned_of(self, tenant: str | None = None) -> int:
        return sum(1 for (ns, _), n in self.pins.items() if n and (tenant is None or ns.tenant == tenant))

    def predicted_path(self, ns: Namespace, seq: list[int], limit: int | None = None) -> list[tuple]:
        path = []
        for i in range(len(seq) if limit is None else min(limit, len(seq))):
            prefix = (ns, tuple(seq[: i + 1]))
            if prefix not in self.cached:
                break
            if self.expires[prefix] <= self.clock.now and self.pins.get(prefix, 0) == 0:
                break
            path.append(prefix)
        return path

    def structural_path(self, ns: Namespace, seq: list[int]) -> list[tuple]:
        path = []
        for i in range(len(seq)):
            prefix = (ns, tuple(seq[: i + 1]))
            if prefix not in self.cached:
                break
            path.append(prefix)
        return path

    def surviving_path(self, ns: Namespace, seq: list[int]) -> list[tuple]:
        """The structural path minus what expiry collection drops first (expired, free blocks)."""
        protected = self.protected()
        path = []
        for prefix in self.structural_path(ns, seq):
            if prefix not in protected and self.expires[prefix] <= self.clock.now:
                break
            path.append(prefix)
        return path

    # ------------------------------------------------------------------ rules

    @rule(ns=namespaces, seq=sequences, tail=st.integers(0, 1), ttl=st.sampled_from([None, 3.0, 10.0]),
          role=st.sampled_from(ROLE_NAMES))
    def insert(self, ns, seq, tail, ttl, role):
        now = self.clock.now
        existing = self.surviving_path(ns, seq)
        stored_indexes = []

        def store(index: int) -> int:
            assert self.free_slots > 0, "store called before room was made"
            self.free_slots -= 1
            self.next_payload += 1
            prefix = (ns, tuple(seq[: index + 1]))
            assert prefix not in self.cached
            assert index == 0 or (ns, tuple(seq[:index])) in self.cached
            self.cached[prefix] = self.next_payload
            self.prefix_of[self.next_payload] = prefix
            self.expires[prefix] = math.inf if ttl is None else now + ttl
            stored_indexes.append(index)
            return self.next_payload

        self.inserting = ns.tenant
        try:
            result = self.cache.insert(tokens_of(seq, tail), ns, store, roles=[role] * len(seq), ttl_s=ttl)
        finally:
            self.inserting = None
        new_expiry = math.inf if ttl is None else now + ttl
        for prefix in existing:
            if prefix in self.cached:  # existing path blocks are held during the insert
                self.expires[prefix] = max(self.expires[prefix], new_expiry)
        assert result.num_blocks_total == len(seq)
        assert result.num_blocks_new == len(stored_indexes)
        if seq:
            assert stored_indexes == list(range(len(existing), len(existing) + len(stored_indexes)))
            assert result.num_blocks_cached == len(existing) + len(stored_indexes)
            assert self.cache.peek(tokens_of(seq, tail), ns) == result.num_blocks_cached
        assert (result.reason is None) == (result.num_blocks_skipped == 0)
        if result.reason is not None and result.reason.startswith("room for only"):
            self.nothing_left_to_evict_for(ns.tenant, {(ns, tuple(seq[: i + 1])) for i in range(len(seq))})

    def nothing_left_to_evict_for(self, tenant: str, own_path: set[tuple]) -> None:
        """After an insert that found too little room: no leaf it was entitled to evict is left.

        Its own leaves it may always evict (for its quota or for the cache). Unless its quota is
        what stopped it, the cache is full, and no leaf of a tenant over its fair share is left."""
        protected = self.protected()
        parents = {(ns, seq[:-1]) for ns, seq in self.cached}
        holders = len({ns.tenant for ns, _ in self.cached} | {tenant})
        below_quota = self.blocks_of(tenant) < self.quota(tenant)
        if below_quota:
            assert len(self.cached) == CAP, f"{tenant} skipped blocks below its quota with room in the cache"
        for prefix in self.cached:
            if prefix in protected or prefix in parents or prefix in own_path:
                continue
            owner = prefix[0].tenant
            assert owner != tenant, f"{tenant} skipped blocks but could have evicted its own {prefix}"
            if below_quota:
                assert self.blocks_of(owner) * holders <= CAP, f"{tenant} skipped blocks but {owner} is over its share"

    @rule(ns=namespaces, seq=sequences, cap=st.none() | st.integers(0, 5))
    def match(self, ns, seq, cap):
        expected = self.predicted_path(ns, seq, cap)
        match = self.cache.match(tokens_of(seq, 1), ns, max_blocks=cap)
        assert match.num_blocks == len(expected)
        assert match.payloads == tuple(self.cached[p] for p in expected)
        self.open.append(match)

    @precondition(lambda self: self.open)
    @rule(which=st.integers(0, 100))
    def release(self, which):
        self.cache.release(self.open.pop(which % len(self.open)))

    @rule(seconds=st.sampled_from([0.5, 2.0, 5.0, 12.0]))
    def advance(self, seconds):
        self.clock.advance(seconds)

    @rule(ns=namespaces, seq=sequences)
    def pin(self, ns, seq):
        expected = self.predicted_path(ns, seq)
        new = sum(1 for p in expected if not self.pins.get(p, 0))
        tenant_pinned, all_pinned = self.pinned_of(ns.tenant), self.pinned_of()
        if tenant_pinned + new > self.pin_limit(ns.tenant) or all_pinned + new > self.pin_limit():
            with pytest.raises(PinBudgetExceeded) as refused:
                self.cache.pin(tokens_of(seq), ns)
            err = refused.value
            assert (err.tenant, err.requested_bytes) == (ns.tenant, new * NBYTES)
            assert (err.tenant_pinned_bytes, err.tenant_budget_bytes) == (
                tenant_pinned * NBYTES, self.pin_limit(ns.tenant) * NBYTES)
            assert (err.global_pinned_bytes, err.global_budget_bytes) == (
                all_pinned * NBYTES, self.pin_limit() * NBYTES)
            return  # and the invariants check that nothing was pinned
        assert self.cache.pin(tokens_of(seq), ns) == len(expected)
        for prefix in expected:
            self.pins[prefix] = self.pins.get(prefix, 0) + 1

    @rule(ns=namespaces, seq=sequences)
    def unpin(self, ns, seq):
        pinned = [p for p in self.structural_path(ns, seq) if self.pins.get(p, 0)]
        assert self.cache.unpin(tokens_of(seq), ns) == len(pinned)
        for prefix in pinned:
            self.pins[prefix] -= 1

    def protected(self) -> set[tuple]:
        """Prefixes held or pinned, and their ancestors (only leaves are dropped)."""
        held = {p for m in self.open for p in m.payloads}
        out = set()
        for (ns, seq), payload in self.cached.items():
            if payload in held or self.pins.get((ns, seq), 0):
                out.update((ns, seq[:i]) for i in range(1, len(seq) + 1))
        return out

    @rule()
    def expire(self):
        self.cache.expire()
        protected = self.protected()
        for prefix in self.cached:
            if self.expires[prefix] <= self.clock.now:
                assert prefix in protected, "an expired free block survived expire()"

    @rule(ns=namespaces, seq=sequences)
    def remove(self, ns, seq):
        before = len(self.cached)
        assert self.cache.remove(tokens_of(seq), ns) == before - len(self.cached)

    @rule(tenant=st.sampled_from([None, *TENANTS]), include_pinned=st.booleans())
    def flush(self, tenant, include_pinned):
        if include_pinned:
            for prefix in self.pins:
                if tenant is None or prefix[0].tenant == tenant:
                    self.pins[prefix] = 0
        self.cache.flush(tenant, include_pinned=include_pinned)
        protected = self.protected()
        for prefix in self.cached:
            assert (tenant is not None and prefix[0].tenant != tenant) or prefix in protected

    # -------------------------------------------------------------- invariants

    @invariant()
    def books_balance(self):
        cache = self.cache
        cache.check_invariants()
        assert len(cache) == len(self.cached)
        assert 0 <= cache.bytes_held() == len(self.cached) * NBYTES <= CAP * NBYTES
        assert self.free_slots + len(self.cached) == CAP  # free + used == total
        assert len(self.cached) + len(self.evicted) == self.next_payload
        for tenant in TENANTS:
            assert cache.bytes_held(tenant) == self.blocks_of(tenant) * NBYTES <= self.quota(tenant) * NBYTES
            assert cache.pinned_bytes(tenant) == self.pinned_of(tenant) * NBYTES
            assert self.pinned_of(tenant) <= self.pin_limit(tenant)
        assert cache.pinned_bytes() == self.pinned_of() * NBYTES <= self.pin_limit() * NBYTES
        for root in cache._trie.roots():  # the trie holds exactly the model's prefixes
            for node in BlockTrie.postorder(root):
                ns, seq = self.prefix_of[node.payload]
                assert self.cached[(ns, seq)] == node.payload and ns.root_key() == root.key
                if node.parent is not root:
                    assert self.prefix_of[node.parent.payload] == (ns, seq[:-1])
                assert node.refcount == sum(node.payload in m.payloads for m in self.open)
                assert node.pins == self.pins.get((ns, seq), 0)

    def teardown(self):
        while self.open:
            self.release(0)
        while pinned := [p for p, n in self.pins.items() if n]:
            ns, seq = pinned[0]
            self.unpin(ns, list(seq))
        self.cache.flush()
        assert len(self.cache) == 0 and self.evicted == set(self.prefix_of)


def machine(policy: str, quotas: dict[str, int] | None = None, **shares: float):
    cls = type(f"CacheModel_{policy}", (CacheModel,), {"policy": policy, "quotas": quotas or {}, "shares": shares})
    cls.TestCase.settings = settings(max_examples=40, stateful_step_count=40, deadline=None)
    return cls.TestCase


TestLRU = machine("lru")  # CacheConfig's defaults: every tenant may hold half the cache and pin half of that
TestLFU = machine("lfu")
TestTTL = machine("ttl")
TestTier = machine("tier")
TestQuotas = machine("lru", {"b": 3 * NBYTES})
# Tenants may fill the whole cache, so only fair-share eviction keeps them apart; pins up to the cache's half.
TestFairShare = machine("lru", default_tenant_share=1.0, pin_quota_fraction=1.0)
TestFairShareTier = machine("tier", {"a": 6 * NBYTES}, default_tenant_share=1.0, pin_quota_fraction=0.75,
                            max_pinned_fraction=0.75)
