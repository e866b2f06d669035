"""PrefixCache: matching, inserting, holding, limits, quotas, TTL, pins, removal and stats."""

from __future__ import annotations

import logging
import time

import pytest

from cache_fakes import NBYTES, NS, FakePool, blocks, make_cache
from promptcache.cache import CacheConfig, Namespace, PrefixCache


def store_and_count(pool: FakePool, calls: list[int]):
    def store(index: int) -> int:
        calls.append(index)
        return pool.store(index)
    return store


# --------------------------------------------------------------- matching


def test_a_prompt_sharing_8000_of_8192_tokens_reuses_its_full_blocks():
    cache, pool, _ = make_cache(block_size=16, max_blocks_held=2000)
    stored = list(range(8192))
    cache.insert(stored, NS, pool.store)
    # Diverging after token 8,000 = 500 * 16: all 500 shared blocks are full.
    diverging = stored[:8000] + [10**6 + i for i in range(192)]
    match = cache.match(diverging, NS)
    assert (match.num_blocks, match.num_tokens) == (500, 8000)
    assert match.payloads == tuple(range(1, 501))
    cache.release(match)
    # Diverging at token 7,990: block 499 (tokens 7,984..7,999) differs, so 499 blocks = 7,984 tokens.
    match = cache.match(stored[:7990] + [10**6] * 202, NS)
    assert (match.num_blocks, match.num_tokens) == (499, 7984)
    cache.release(match)
    # The 8,000-token prefix itself, capped as the engine caps it (the last token is recomputed).
    prompt = stored[:8000]
    match = cache.match(prompt, NS, max_blocks=(len(prompt) - 1) // 16)
    assert (match.num_blocks, match.num_tokens) == (499, 7984)
    cache.release(match)
    cache.check_invariants()


def test_prompts_sharing_only_a_system_prompt_get_its_full_blocks():
    cache, pool, _ = make_cache(block_size=16)
    system = list(range(1000))  # 62 full blocks + 8 tokens
    cache.insert(system + [50_000 + i for i in range(300)], NS, pool.store)
    match = cache.match(system + [60_000 + i for i in range(300)], NS)
    assert match.num_tokens == 992
    cache.release(match)


@pytest.mark.parametrize("other", [
    Namespace(model=NS.model, tenant="someone-else"),
    Namespace(model=NS.model, salt="s"),
    Namespace(model="llama-3-8b@fp16"),
])
def test_other_tenants_salts_and_models_never_hit(other):
    cache, pool, _ = make_cache()
    cache.insert(blocks(1, 2, 3), NS, pool.store)
    match = cache.match(blocks(1, 2, 3), other)
    assert match.num_blocks == 0 and not match.hit
    cache.release(match)
    assert cache.insert(blocks(1, 2, 3), other, pool.store).num_blocks_new == 3  # stored separately
    assert len(cache) == 6


def test_match_counts_full_blocks_only_and_respects_max_blocks():
    cache, pool, _ = make_cache()
    cache.insert(blocks(1, 2, 3) + [5, 6], NS, pool.store)  # trailing partial block not stored
    assert len(cache) == 3
    for max_blocks, expected in [(None, 3), (5, 3), (2, 2), (0, 0)]:
        match = cache.match(blocks(1, 2, 3) + [5, 6, 7, 8], NS, max_blocks=max_blocks)
        assert match.num_blocks == expected
        cache.release(match)


def test_release_twice_raises():
    cache, pool, _ = make_cache()
    cache.insert(blocks(1), NS, pool.store)
    match = cache.match(blocks(1), NS)
    cache.release(match)
    with pytest.raises(RuntimeError):
        cache.release(match)


# ------------------------------------------------------------- inserting


def test_insert_stores_only_new_blocks_once():
    cache, pool, _ = make_cache()
    calls: list[int] = []
    first = cache.insert(blocks(1, 2), NS, store_and_count(pool, calls))
    second = cache.insert(blocks(1, 2, 3, 4), NS, store_and_count(pool, calls))
    assert calls == [0, 1, 2, 3]
    assert (first.num_blocks_new, second.num_blocks_new, second.num_blocks_cached) == (2, 2, 4)
    assert cache.insert(blocks(1, 2, 3, 4), NS, pool.store).num_blocks_new == 0
    assert cache.insert(blocks(1, 2, 3, 4), NS, pool.store, num_blocks=1).num_blocks_total == 1
    assert len(cache) == 4 and cache.bytes_held() == 4 * NBYTES


def test_insert_validates_roles_and_ttl():
    cache, pool, _ = make_cache()
    with pytest.raises(ValueError):
        cache.insert(blocks(1, 2), NS, pool.store, roles=["user"])
    with pytest.raises(ValueError):
        cache.insert(blocks(1), NS, pool.store, roles=["robot"])
    with pytest.raises(ValueError):
        cache.insert(blocks(1), NS, pool.store, ttl_s=0)


def test_min_prefix_blocks():
    cache, pool, _ = make_cache(min_prefix_blocks=3)
    assert cache.insert(blocks(1, 2), NS, pool.store).reason.startswith("2 full blocks")
    assert cache.insert(blocks(1, 2, 3), NS, pool.store).num_blocks_new == 3


def test_a_prompt_larger_than_the_budget_is_not_cached_and_evicts_nothing(caplog):
    cache, pool, _ = make_cache(max_blocks_held=4)
    cache.insert(blocks(1, 2), NS, pool.store)
    with caplog.at_level(logging.DEBUG, logger="promptcache.cache.prefix_cache"):
        result = cache.insert(blocks(5, 6, 7, 8, 9), NS, pool.store)
    assert (result.num_blocks_new, result.num_blocks_skipped) == (0, 5)
    assert "exceed the cache capacity" in result.reason and "exceed the cache capacity" in caplog.text
    assert len(cache) == 2 and pool.freed == []


def test_max_blocks_limit_applies_with_max_bytes():
    cache, pool, _ = make_cache(max_blocks_held=100, max_blocks=2)
    cache.insert(blocks(1, 2), NS, pool.store)
    cache.insert(blocks(3, 4), NS, pool.store)
    assert len(cache) == 2 and cache.peek(blocks(3, 4), NS) == 2


def test_held_blocks_are_never_evicted_and_the_insert_stores_what_fits():
    cache, pool, _ = make_cache(max_blocks_held=4)
    cache.insert(blocks(1, 2, 3), NS, pool.store)
    held = cache.match(blocks(1, 2, 3), NS)
    result = cache.insert(blocks(7, 8), NS, pool.store)
    assert (result.num_blocks_new, result.num_blocks_skipped) == (1, 1) and "room for only 1" in result.reason
    assert pool.freed == []
    cache.release(held)
    assert cache.insert(blocks(7, 8), NS, pool.store).num_blocks_new == 1  # block 3 of 1,2,3 goes
    assert pool.freed == [3]
    cache.check_invariants()


def test_evicts_leaves_only_parents_after_their_children():
    cache, pool, clock = make_cache(max_blocks_held=3)
    cache.insert(blocks(1, 2, 3), NS, pool.store)
    clock.advance()
    cache.insert(blocks(7, 8, 9), NS, pool.store)
    assert pool.freed == [3, 2, 1]


# ------------------------------------------------------ tenants and quotas


def test_a_tenant_over_quota_evicts_its_own_blocks_first():
    cache, pool, clock = make_cache(max_blocks_held=10, tenant_quotas={"a": 3 * NBYTES})
    a, b = Namespace(NS.model, "a"), Namespace(NS.model, "b")
    cache.insert(blocks(1, 2), b, pool.store)
    cache.insert(blocks(1, 2, 3), a, pool.store)
    clock.advance()
    result = cache.insert(blocks(4, 5), a, pool.store)
    assert result.num_blocks_new == 2 and cache.bytes_held("a") == 3 * NBYTES
    assert cache.peek(blocks(1, 2), b) == 2  # the other tenant lost nothing
    assert cache.stats.evictions["quota"] == 2
    assert "quota" in cache.insert(blocks(6, 7, 8, 9), a, pool.store).reason  # alone over quota
    cache.check_invariants()


def test_one_tenants_flood_cannot_flush_anothers_system_prompt():
    cache, pool, clock = make_cache(max_blocks_held=10)
    a, b = Namespace(NS.model, "a"), Namespace(NS.model, "b")
    cache.insert(blocks(1, 2), b, pool.store, roles=["system", "system"])
    for i in range(20):
        clock.advance()
        cache.insert(blocks(100 + 3 * i, 101 + 3 * i, 102 + 3 * i), a, pool.store)
    assert cache.peek(blocks(1, 2), b) == 2
    assert cache.stats.tenant_bytes == {"a": 8 * NBYTES, "b": 2 * NBYTES}
    cache.check_invariants()


# ---------------------------------------------------------------- TTL


def test_expired_blocks_are_misses_and_collected_when_free():
    cache, pool, clock = make_cache(default_ttl_s=10)
    cache.insert(blocks(1, 2), NS, pool.store)
    cache.insert(blocks(1, 2, 3), NS, pool.store, ttl_s=100)  # extends 1 and 2 to 100 s too
    clock.advance(50)
    assert cache.peek(blocks(1, 2, 3), NS) == 3
    cache.insert(blocks(5), NS, pool.store)
    clock.advance(11)
    held = cache.match(blocks(1, 2, 3), NS)
    assert held.num_blocks == 3 and cache.peek(blocks(5), NS) == 0
    assert cache.stats.evictions["ttl"] == 1 and pool.freed == [4]
    clock.advance(100)
    assert cache.peek(blocks(1, 2, 3), NS) == 0  # expired but held: a miss, not yet dropped
    assert cache.expire() == 0 and len(cache) == 3
    cache.release(held)
    assert cache.expire() == 3 and len(cache) == 0
    cache.check_invariants()


def test_a_reinsert_revives_an_expired_held_block():
    cache, pool, clock = make_cache(default_ttl_s=10)
    cache.insert(blocks(1), NS, pool.store)
    held = cache.match(blocks(1), NS)
    clock.advance(20)
    assert cache.insert(blocks(1, 2), NS, pool.store).num_blocks_new == 1
    cache.release(held)
    assert cache.expire() == 0 and cache.peek(blocks(1, 2), NS) == 2


# ------------------------------------------------------- pins and removal


def test_pinned_prefixes_survive_pressure_and_ttl_until_unpinned():
    cache, pool, clock = make_cache(max_blocks_held=3, default_ttl_s=5, pin_quota_fraction=1, max_pinned_fraction=1)
    cache.insert(blocks(1, 2), NS, pool.store)
    assert cache.pin(blocks(1, 2), NS) == 2 and cache.pin(blocks(1), NS) == 1
    clock.advance(10)
    assert cache.peek(blocks(1, 2), NS) == 2
    assert cache.insert(blocks(7, 8), NS, pool.store).num_blocks_new == 1
    assert cache.unpin(blocks(1, 2), NS) == 2
    assert cache.peek(blocks(1, 2), NS) == 1  # block 2 expired once unpinned; 1 still pinned
    assert cache.unpin(blocks(1, 2), NS) == 1 and cache.unpin(blocks(1, 2), NS) == 0
    cache.expire()
    assert cache.peek(blocks(1), NS) == 0 and len(cache) == 1  # block 7 has not expired yet


def test_remove_drops_a_subtree_except_held_paths():
    cache, pool, _ = make_cache()
    cache.insert(blocks(1, 2, 3), NS, pool.store)
    cache.insert(blocks(1, 2, 4, 5), NS, pool.store)
    cache.insert(blocks(1, 6), NS, pool.store)
    held = cache.match(blocks(1, 2, 4), NS)
    assert cache.remove(blocks(1, 2), NS) == 2  # 3 and 5; 2 and 4 are held
    cache.release(held)
    assert cache.remove(blocks(1, 9), NS) == 0  # prefix not cached: nothing under it
    assert cache.remove(blocks(1, 2), NS) == 2
    assert cache.remove([], NS) == 2 and len(cache) == 0
    assert cache.stats.evictions["removed"] == 6
    cache.check_invariants()


def test_flush_by_tenant():
    cache, pool, _ = make_cache()
    a, b = Namespace(NS.model, "a"), Namespace(NS.model, "b")
    cache.insert(blocks(1, 2), a, pool.store)
    cache.insert(blocks(1, 2), b, pool.store)
    assert cache.flush("a") == 2 and cache.bytes_held("a") == 0 and cache.bytes_held("b") == 2 * NBYTES
    assert cache.flush() == 2 and len(cache) == 0


# ----------------------------------------------------------------- stats


def test_stats_count_lookups_tokens_insertions_and_holdings():
    cache, pool, clock = make_cache(max_blocks_held=3)
    cache.insert(blocks(1, 2), NS, pool.store)
    cache.release(cache.match(blocks(1, 2) + [1, 2], NS))
    cache.release(cache.match(blocks(9), NS))
    cache.insert(blocks(3, 4), NS, pool.store)
    stats = cache.stats
    assert (stats.lookups, stats.hits, stats.hit_tokens, stats.miss_tokens) == (2, 1, 8, 6)
    assert stats.token_hit_ratio == pytest.approx(8 / 14)
    assert (stats.insertions, stats.evictions["policy"], stats.blocks_held, stats.bytes_held) == (4, 1, 3, 300)
    assert stats.as_dict()["token_hit_ratio"] == stats.token_hit_ratio
    cache.release(cache.match(blocks(3), NS))
    assert stats.lookups == 2  # a snapshot does not move


def test_config_is_frozen_and_validated():
    quotas = {"a": 1}
    config = CacheConfig(tenant_quotas=quotas)
    quotas["a"] = 99
    assert config.tenant_quotas["a"] == 1
    for bad in [dict(block_size=0), dict(admit_after=0), dict(default_ttl_s=0), dict(tenant_quotas={"a": -1})]:
        with pytest.raises(ValueError):
            CacheConfig(**bad)
    with pytest.raises(ValueError):
        PrefixCache(CacheConfig(), block_nbytes=0)


def test_the_default_clock_is_monotonic_seconds():
    cache = PrefixCache(CacheConfig(block_size=4), block_nbytes=10)
    before = time.monotonic()
    cache.insert(blocks(1), NS, lambda i: f"block {i}", ttl_s=3600)
    after = time.monotonic()
    match = cache.match(blocks(1), NS)
    assert match.payloads == ("block 0",)
    (node,) = match.lease.nodes
    assert before + 3600 <= node.expires_at <= after + 3600  # TTLs count from time.monotonic()
    assert before <= node.last_access <= time.monotonic()
    cache.release(match)
