"""Sharing the cache between tenants: default quotas, pin budgets, fair-share eviction.

The first tests reproduce finding 3 of the hardening issue at the PrefixCache level: one tenant
without a quota could pin the whole cache, after which every other tenant missed on every
repeat, a flush removed nothing, and an insert that ran out of fair-share candidates evicted
any tenant's blocks.
"""

from __future__ import annotations

import pytest

from cache_fakes import NBYTES, blocks, make_cache
from promptcache.cache import CacheConfig, Namespace, PinBudgetExceeded, PrefixCache

A = Namespace("m", "a")
B = Namespace("m", "b")
C = Namespace("m", "c")


def chain(start: int, length: int) -> list[int]:
    return blocks(*range(start, start + length))


def repeat_hits(cache, tokens, ns) -> int:
    match = cache.match(tokens, ns)
    cache.release(match)
    return match.num_blocks


# ------------------------------------------------------------ the finding


def test_one_tenant_cannot_pin_the_whole_cache():
    cache, pool, _ = make_cache(max_blocks_held=12)
    assert cache.insert(chain(100, 12), A, pool.store).num_blocks_new == 12  # an idle cache is A's to fill
    with pytest.raises(PinBudgetExceeded) as refused:
        cache.pin(chain(100, 12), A)
    err = refused.value
    assert (err.tenant, err.requested_bytes) == ("a", 12 * NBYTES)
    assert (err.tenant_budget_bytes, err.global_budget_bytes) == (6 * NBYTES, 6 * NBYTES)
    assert cache.pinned_bytes() == 0  # all or nothing
    assert cache.pin(chain(100, 6), A) == 6  # half the cache is as far as A gets
    with pytest.raises(PinBudgetExceeded):
        cache.pin(chain(100, 7), A)
    assert cache.pinned_bytes("a") == 6 * NBYTES
    cache.check_invariants()


def test_another_tenants_repeats_still_hit_after_one_tenant_pins_and_fills():
    cache, pool, clock = make_cache(max_blocks_held=12)
    cache.insert(chain(100, 12), A, pool.store)
    cache.pin(chain(100, 6), A)
    for round_ in range(5):
        clock.advance()
        cache.insert(blocks(1, 2, 3), B, pool.store)
        assert repeat_hits(cache, blocks(1, 2, 3), B) == 3, round_
        clock.advance()
        # A keeps flooding; it is over its fair share, so it may only evict its own blocks.
        cache.insert(chain(200 + 10 * round_, 4), A, pool.store)
        assert repeat_hits(cache, blocks(1, 2, 3), B) == 3, round_
        cache.check_invariants()


def test_an_over_share_tenant_whose_own_blocks_are_held_caches_nothing_rather_than_evict_others():
    cache, pool, clock = make_cache(max_blocks_held=10)
    cache.insert(blocks(1, 2), B, pool.store)
    cache.insert(chain(100, 8), A, pool.store)
    held = cache.match(chain(100, 8), A)  # A's in-flight requests hold all of its blocks
    clock.advance()
    result = cache.insert(chain(300, 3), A, pool.store)
    assert (result.num_blocks_new, result.num_blocks_skipped) == (0, 3)
    assert "fair share" in result.reason
    assert repeat_hits(cache, blocks(1, 2), B) == 2 and pool.freed == []
    cache.release(held)
    assert cache.insert(chain(300, 3), A, pool.store).num_blocks_new == 3  # now at A's own expense
    assert repeat_hits(cache, blocks(1, 2), B) == 2
    cache.check_invariants()


def test_an_under_share_tenant_takes_room_from_an_over_share_one():
    cache, pool, clock = make_cache(max_blocks_held=10)
    cache.insert(chain(100, 10), A, pool.store)
    clock.advance()
    assert cache.insert(chain(500, 4), B, pool.store).num_blocks_new == 4
    assert cache.bytes_held("a") == 6 * NBYTES
    assert cache.stats.evictions["policy"] == 4


def test_an_admin_flush_can_release_pins():
    cache, pool, _ = make_cache(max_blocks_held=12, default_tenant_share=0.5)
    cache.insert(chain(100, 3), A, pool.store)
    cache.insert(chain(200, 2), B, pool.store)
    cache.pin(chain(100, 3), A)
    cache.pin(chain(200, 2), B)
    assert cache.flush() == 0  # as before: pins survive a plain flush
    assert cache.flush("a", include_pinned=True) == 3
    assert cache.pinned_bytes() == 2 * NBYTES and cache.bytes_held("b") == 2 * NBYTES
    held = cache.match(chain(200, 2), B)
    assert cache.flush(include_pinned=True) == 0  # held blocks stay, but their pins are gone
    assert cache.pinned_bytes() == 0 and cache.unpin(chain(200, 2), B) == 0
    cache.release(held)
    assert cache.flush() == 2 and len(cache) == 0
    cache.check_invariants()


# ------------------------------------------------------- default quotas


def test_a_tenant_without_a_quota_gets_the_default_share():
    cache, pool, _ = make_cache(max_blocks_held=10, default_tenant_share=0.5)
    result = cache.insert(chain(100, 6), A, pool.store)
    assert result.num_blocks_new == 0 and "quota of 5 blocks" in result.reason
    cache.insert(chain(100, 5), A, pool.store)
    cache.insert(chain(200, 2), A, pool.store)  # evicts A's own two oldest leaves
    assert cache.bytes_held("a") == 5 * NBYTES and cache.stats.evictions["quota"] == 2


@pytest.mark.parametrize("share,quota_blocks", [(0.25, 2), (0.5, 5), (1.0, 10)])
def test_default_share_is_a_fraction_of_the_capacity(share, quota_blocks):
    cache, pool, _ = make_cache(max_blocks_held=10, default_tenant_share=share)
    assert cache.quota_bytes("anyone") == quota_blocks * NBYTES
    fits = quota_blocks == 10  # a prompt over the quota is not cached at all
    assert cache.insert(chain(100, 10), A, pool.store).num_blocks_new == (10 if fits else 0)


def test_explicit_quotas_override_the_default_share():
    quotas = {"a": 8 * NBYTES, "b": 1 * NBYTES}
    cache, _, _ = make_cache(max_blocks_held=10, default_tenant_share=0.5, tenant_quotas=quotas)
    assert [cache.quota_bytes(t) for t in "abc"] == [8 * NBYTES, 1 * NBYTES, 5 * NBYTES]
    assert [cache.pin_budget_bytes(t) for t in "abc"] == [4 * NBYTES, 0, 2 * NBYTES]
    assert cache.pin_budget_bytes() == 5 * NBYTES


# --------------------------------------------------------- pin budgets


def test_the_global_pin_budget_holds_across_tenants():
    cache, pool, _ = make_cache(max_blocks_held=10, default_tenant_share=0.8, max_pinned_fraction=0.5)
    for ns, start in ((A, 100), (B, 200), (C, 300)):
        cache.insert(chain(start, 2), ns, pool.store)
    cache.pin(chain(100, 2), A)
    cache.pin(chain(200, 2), B)
    with pytest.raises(PinBudgetExceeded) as refused:
        cache.pin(chain(300, 2), C)  # C's own budget (4 blocks) has room; the cache's (5) does not
    err = refused.value
    assert (err.tenant_pinned_bytes, err.tenant_budget_bytes) == (0, 4 * NBYTES)
    assert (err.global_pinned_bytes, err.global_budget_bytes) == (4 * NBYTES, 5 * NBYTES)
    assert err.requested_bytes == 2 * NBYTES
    assert err.scope == "global"
    assert cache.pin(chain(300, 1), C) == 1


def test_repinning_pinned_blocks_costs_nothing_and_unpin_gives_the_budget_back():
    cache, pool, _ = make_cache(max_blocks_held=8, default_tenant_share=0.5)  # A: quota 4, pin budget 2
    cache.insert(chain(100, 3), A, pool.store)
    assert cache.pin(chain(100, 2), A) == 2
    assert cache.pin(chain(100, 2), A) == 2  # pins nest; no new bytes pinned
    with pytest.raises(PinBudgetExceeded) as refused:
        cache.pin(chain(100, 3), A)
    assert refused.value.requested_bytes == NBYTES and refused.value.scope == "tenant"
    assert cache.unpin(chain(100, 2), A) == 2 and cache.pinned_bytes("a") == 2 * NBYTES  # one level left
    cache.unpin(chain(100, 2), A)
    assert cache.pinned_bytes() == 0
    with pytest.raises(PinBudgetExceeded):
        cache.pin(chain(100, 3), A)  # 3 new blocks > a budget of 2, even with none pinned
    cache.check_invariants()


def test_pin_budget_error_is_one_line_and_names_the_figures():
    err = PinBudgetExceeded("acme", 300, 200, 400, 900, 1000)
    text = str(err)
    assert "\n" not in text and "acme" in text and "300" in text and "400" in text and "1000" in text
    assert err.scope == "tenant"
    assert PinBudgetExceeded("acme", 100, 0, 400, 950, 1000).scope == "global"


def test_config_validates_the_new_fractions():
    for bad in [dict(default_tenant_share=0), dict(default_tenant_share=1.5), dict(default_tenant_share=float("nan")),
                dict(pin_quota_fraction=-0.1), dict(pin_quota_fraction=2), dict(max_pinned_fraction=1.01)]:
        with pytest.raises(ValueError):
            CacheConfig(**bad)
    config = CacheConfig()
    assert (config.default_tenant_share, config.pin_quota_fraction, config.max_pinned_fraction) == (0.5, 0.5, 0.5)
    cache = PrefixCache(CacheConfig(block_size=4, max_bytes=10 * NBYTES, pin_quota_fraction=0), NBYTES)
    cache.insert(blocks(1), A, lambda i: i)
    with pytest.raises(PinBudgetExceeded):
        cache.pin(blocks(1), A)
