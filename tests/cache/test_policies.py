"""Eviction policies: each orders leaves differently, and each is shown evicting what LRU would not."""

from __future__ import annotations

import math

import pytest

from cache_fakes import NS, blocks, make_cache
from promptcache.cache.policies import POLICIES, make_policy
from promptcache.cache.trie import BlockNode


def node(role="user", last_access=0.0, hits=1, expires_at=math.inf) -> BlockNode:
    n = BlockNode(b"k" * 16, None, b"", None, "t", role, last_access, expires_at)
    n.hits = hits
    return n


# (policy, node evicted first, node evicted later)
ORDER_CASES = [
    ("lru", node(last_access=1), node(last_access=2)),
    ("lfu", node(hits=1, last_access=9), node(hits=5, last_access=1)),
    ("lfu", node(hits=2, last_access=1), node(hits=2, last_access=2)),
    ("ttl", node(expires_at=10, last_access=9), node(expires_at=20, last_access=1)),
    ("ttl", node(expires_at=10), node(expires_at=math.inf)),
    ("tier", node("assistant", last_access=9), node("user", last_access=1)),
    ("tier", node("tool", last_access=9), node("user", last_access=1)),
    ("tier", node("user", last_access=9), node("system", last_access=1)),
    ("tier", node("system", last_access=1), node("system", last_access=2)),
]


@pytest.mark.parametrize("name,first,later", ORDER_CASES)
def test_sort_keys_order_victims(name, first, later):
    policy = make_policy(name)
    assert policy.sort_key(first) < policy.sort_key(later)


def test_policies_are_picked_by_name():
    assert set(POLICIES) == {"lru", "lfu", "ttl", "tier"}
    assert all(make_policy(name).name == name for name in POLICIES)
    with pytest.raises(ValueError, match="unknown eviction policy"):
        make_cache(policy="fifo")


def survivors(policy: str, steps) -> set[int]:
    """Run `steps(cache, pool, clock)` on a 3-block cache; return the block ids still cached."""
    cache, pool, clock = make_cache(policy=policy, max_blocks_held=3)
    steps(cache, pool, clock)
    cache.check_invariants()
    return {b for b in range(1, 10) if cache.peek(blocks(b), NS)}


def hot_then_cold(cache, pool, clock):
    cache.insert(blocks(1), NS, pool.store)
    for _ in range(3):  # block 1 is popular...
        clock.advance()
        cache.release(cache.match(blocks(1), NS))
    for b in (2, 3, 4):  # ...but not recent once 2, 3 and 4 arrive
        clock.advance()
        cache.insert(blocks(b), NS, pool.store)


def test_lfu_keeps_a_popular_block_lru_drops():
    assert survivors("lru", hot_then_cold) == {2, 3, 4}
    assert survivors("lfu", hot_then_cold) == {1, 3, 4}


def short_ttl_is_newest(cache, pool, clock):
    cache.insert(blocks(1), NS, pool.store, ttl_s=100)
    clock.advance()
    cache.insert(blocks(2), NS, pool.store, ttl_s=10)
    clock.advance()
    cache.insert(blocks(3), NS, pool.store)  # no expiry
    clock.advance()
    cache.insert(blocks(4), NS, pool.store, ttl_s=50)


def test_ttl_policy_drops_the_soonest_to_expire_lru_drops_the_oldest():
    assert survivors("lru", short_ttl_is_newest) == {2, 3, 4}
    assert survivors("ttl", short_ttl_is_newest) == {1, 3, 4}


def agent_conversation(policy: str):
    """mlx-lm's case: one slot per tier. System S is shared by two conversations; B asked a
    question (user block UB) and waits; A runs an agent loop whose assistant/tool turns diverge
    after its user block UA each time (the chat template strips thinking)."""
    S, UB, UA = 1, 2, 3
    cache, pool, clock = make_cache(policy=policy, max_blocks_held=5)  # S, UB, UA, one assistant, one tool
    roles_of = {}

    def insert(ids, roles):
        clock.advance()
        before = pool.next_id
        cache.insert(blocks(*ids), NS, pool.store, roles=roles)
        for offset, payload in enumerate(range(before + 1, pool.next_id + 1)):
            roles_of[payload] = roles[len(roles) - (pool.next_id - before) + offset]

    insert([S, UB], ["system", "user"])
    insert([S, UA], ["system", "user"])
    for turn in range(5):
        assistant, tool = 10 + 2 * turn, 11 + 2 * turn
        insert([S, UA, assistant, tool], ["system", "user", "assistant", "tool"])
        cache.check_invariants()
    kept = {name: cache.peek(blocks(*ids), NS) == len(ids)
            for name, ids in {"S": [S], "UB": [S, UB], "UA": [S, UA], "last turn": [S, UA, 18, 19]}.items()}
    return kept, {roles_of[p] for p in pool.freed}


def test_tier_policy_keeps_system_and_user_while_assistant_turns_rotate():
    kept, evicted_roles = agent_conversation("tier")
    assert kept == {"S": True, "UB": True, "UA": True, "last turn": True}
    assert evicted_roles == {"assistant", "tool"}


def test_lru_loses_the_waiting_user_block_in_the_same_conversation():
    kept, evicted_roles = agent_conversation("lru")
    assert kept["UB"] is False and "user" in evicted_roles
