"""PrefixCache against a reference model, one state machine per eviction policy.

The model is a dict of every cached prefix -> payload, kept exact by the store/on_evict
callbacks, plus each prefix's expiry and pin count. Which block a policy evicts is the cache's
choice; the machine checks that every choice is legal (never a held or pinned block, every
payload evicted once, budget and quotas kept) and that every lookup returns exactly the model's
longest live prefix. Matches stay open across steps, so eviction runs while blocks are held.
"""

from __future__ import annotations

import math

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from cache_fakes import NBYTES, FakeClock
from promptcache.cache import CacheConfig, Namespace, PrefixCache
from promptcache.cache.trie import BlockTrie

BS = 2
NAMESPACES = [Namespace("m", "a"), Namespace("m", "b"), Namespace("m2", "a"), Namespace("m", "a", salt="s")]
ROLE_NAMES = ["system", "user", "assistant", "tool"]

sequences = st.lists(st.integers(0, 2), min_size=0, max_size=5)
namespaces = st.sampled_from(NAMESPACES)


def tokens_of(seq: list[int], tail: int = 0) -> list[int]:
    return [b * 10 + j for b in seq for j in range(BS)] + [7] * tail


class CacheModel(RuleBasedStateMachine):
    policy = "lru"
    quotas: dict[str, int] = {}

    def __init__(self) -> None:
        super().__init__()
        self.clock = FakeClock()
        self.cache = PrefixCache(
            CacheConfig(block_size=BS, max_bytes=8 * NBYTES, policy=self.policy, default_ttl_s=None,
                        tenant_quotas=self.quotas),
            NBYTES, on_evict=self.on_evict, clock=self.clock)
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
        self.evicted.add(payload)
        del self.cached[prefix]
        self.expires.pop(prefix, None)

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
            self.next_payload += 1
            prefix = (ns, tuple(seq[: index + 1]))
            assert prefix not in self.cached
            assert index == 0 or (ns, tuple(seq[:index])) in self.cached
            self.cached[prefix] = self.next_payload
            self.prefix_of[self.next_payload] = prefix
            self.expires[prefix] = math.inf if ttl is None else now + ttl
            stored_indexes.append(index)
            return self.next_payload

        result = self.cache.insert(tokens_of(seq, tail), ns, store, roles=[role] * len(seq), ttl_s=ttl)
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

    @rule(tenant=st.sampled_from([None, "a", "b"]))
    def flush(self, tenant):
        self.cache.flush(tenant)
        protected = self.protected()
        for prefix in self.cached:
            assert (tenant is not None and prefix[0].tenant != tenant) or prefix in protected

    # -------------------------------------------------------------- invariants

    @invariant()
    def books_balance(self):
        cache = self.cache
        cache.check_invariants()
        assert len(cache) == len(self.cached)
        assert 0 <= cache.bytes_held() == len(self.cached) * NBYTES <= 8 * NBYTES
        for tenant, quota in self.quotas.items():
            assert cache.bytes_held(tenant) <= quota
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


def machine(policy: str, quotas: dict[str, int] | None = None):
    cls = type(f"CacheModel_{policy}", (CacheModel,), {"policy": policy, "quotas": quotas or {}})
    cls.TestCase.settings = settings(max_examples=40, stateful_step_count=40, deadline=None)
    return cls.TestCase


TestLRU = machine("lru")
TestLFU = machine("lfu")
TestTTL = machine("ttl")
TestTier = machine("tier")
TestQuotas = machine("lru", {"b": 3 * NBYTES})
