"""The storage-tier seam: eviction hands a listener each dropped block's key, tokens and payload."""

from __future__ import annotations

from cache_fakes import NS, blocks, make_cache

from promptcache.cache import Namespace
from promptcache.cache.budget import Budget, capacity_blocks
from promptcache.cache.keys import block_keys, pack_tokens


def test_listener_gets_key_tokens_and_payload_before_the_payload_is_freed():
    cache, pool, clock = make_cache(max_blocks_held=2)
    heard = []
    cache.add_evict_listener(lambda block: heard.append((block, block.payload in pool.live)))
    first = blocks(1, 2)
    cache.insert(first, NS, pool.store)
    clock.advance()
    cache.insert(blocks(3, 4), NS, pool.store)  # evicts both blocks of the first prompt, leaf first
    assert [b.key for b, _ in heard] == block_keys(first, 4, NS)[::-1]
    assert [b.tokens for b, _ in heard] == [pack_tokens(blocks(2)), pack_tokens(blocks(1))]
    assert all(live for _, live in heard), "the payload was freed before the listener heard of it"
    assert {b.reason for b, _ in heard} == {"policy"} and {b.tenant for b, _ in heard} == {"default"}
    cache.check_invariants()


def test_a_failing_listener_loses_nothing():
    cache, pool, _ = make_cache()
    cache.add_evict_listener(lambda block: 1 / 0)
    cache.insert(blocks(1, 2, 3), Namespace("m", "t"), pool.store)
    assert cache.flush() == 3 and not pool.live
    cache.check_invariants()


def test_capacity_has_one_source():
    for max_bytes, max_blocks, nbytes in [(1000, None, 100), (1099, 5, 100), (10, None, 100), (10**9, 3, 7)]:
        budget = Budget(max_bytes, max_blocks, nbytes, {})
        assert budget.capacity == capacity_blocks(max_bytes, max_blocks, nbytes) == min(
            max_bytes // nbytes, max_blocks if max_blocks is not None else max_bytes)
