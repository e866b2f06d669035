"""Retained prefixes (cache/retained.py): admission before compute, pin on insert, release."""

from __future__ import annotations

from dataclasses import replace

import pytest
from cache_fakes import NS, blocks, make_cache

from promptcache.cache.errors import PinBudgetExceeded
from promptcache.cache.retained import PinLedger


def ledger(**config):
    cache, pool, clock = make_cache(**config)
    return cache, pool, clock, PinLedger(cache)


def test_reserve_commit_release_and_reservations_count_against_the_budget():
    cache, pool, _, pins = ledger(max_blocks_held=10, pin_quota_fraction=0.5)  # 5 pinnable blocks
    assert pins.reserve("r1", "session-a", "default", len(blocks(1, 2, 3))) == 3
    with pytest.raises(PinBudgetExceeded) as refused:  # 3 reserved + 3 more > 5, before any compute
        pins.reserve("r2", "session-b", "default", len(blocks(4, 5, 6)))
    assert refused.value.scope == "tenant"
    cache.insert(blocks(1, 2, 3), NS, pool.store)
    assert pins.commit("r1", "session-a", blocks(1, 2, 3), NS) == 3
    pins.settle("r1")
    assert cache.pinned_blocks(blocks(1, 2, 3), NS) == 3 and cache.pinned_bytes() == 300
    assert pins.release("session-a") == 3 and cache.pinned_bytes() == 0
    assert cache.peek(blocks(1, 2, 3), NS) == 3  # released blocks stay cached, evictable


def test_an_owner_moving_to_a_longer_prefix_pays_only_the_growth_and_drops_its_old_path():
    cache, pool, _, pins = ledger(max_blocks_held=10, pin_quota_fraction=1, max_pinned_fraction=1)
    cache.insert(blocks(1, 2, 3, 4), NS, pool.store)
    pins.commit(None, "s", blocks(1, 2), NS)
    assert pins.reserve("r", "s", "default", len(blocks(1, 2, 3, 4))) == 2
    assert pins.commit("r", "s", blocks(1, 2, 3, 4), NS) == 4
    assert cache.pinned_bytes() == 400
    cache.insert(blocks(7, 8), NS, pool.store)
    assert pins.commit(None, "s", blocks(7), NS) == 1  # a new path: the old one is released
    assert cache.pinned_bytes() == 100 and cache.pinned_blocks(blocks(1), NS) == 0
    cache.check_invariants()


def test_a_commit_pins_only_what_the_budget_still_allows():
    cache, pool, _, pins = ledger(max_blocks_held=10, pin_quota_fraction=0.3)  # 3 pinnable blocks
    cache.insert(blocks(1, 2, 3, 4, 5), NS, pool.store)
    assert pins.commit(None, "s", blocks(1, 2, 3, 4, 5), NS) == 3
    assert cache.pinned_bytes() == 300


def test_a_pinned_insert_makes_room_from_its_own_tenant_only():
    other = replace(NS, tenant="other")
    cache, pool, _, pins = ledger(max_blocks_held=4, default_tenant_share=1.0, pin_quota_fraction=1,
                                  max_pinned_fraction=1)
    cache.insert(blocks(1, 2, 3), other, pool.store)
    result = cache.insert(blocks(5, 6, 7), NS, pool.store, own_room_only=True)
    assert result.num_blocks_new == 1 and cache.peek(blocks(1, 2, 3), other) == 3
    assert cache.insert(blocks(8, 9), NS, pool.store).num_blocks_new >= 1  # an ordinary insert may
    cache.check_invariants()


def test_forget_after_a_flush_with_pins():
    cache, pool, _, pins = ledger(max_blocks_held=10, pin_quota_fraction=1, max_pinned_fraction=1)
    cache.insert(blocks(1, 2), NS, pool.store)
    pins.commit(None, "s", blocks(1, 2), NS)
    cache.flush(include_pinned=True)
    pins.forget()
    assert pins.held("s") is None and pins.release("s") == 0
    cache.check_invariants()
