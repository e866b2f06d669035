"""Retained prefixes (cache/retained.py): admission before compute, pin on insert, release."""

from __future__ import annotations

from dataclasses import replace

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
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


# ------------------------------------------------- property: against a reference model

OWNERS = ("s1", "s2", "s3")
TENANTS = ("default", "other")
PROMPTS = [blocks(1, 2, 3), blocks(1, 2, 3, 4, 5), blocks(1, 2), blocks(6, 7, 8), blocks(6, 9)]
OPS = st.lists(st.tuples(st.sampled_from(["retain", "release", "insert", "flush"]), st.sampled_from(OWNERS),
                         st.sampled_from(TENANTS), st.integers(0, len(PROMPTS) - 1)), max_size=40)


TENANT_PINS, GLOBAL_PINS = 6, 9  # half and three quarters of the 12 blocks (each tenant may fill the cache)


def covered(owners: dict[str, tuple]) -> set[tuple[str, tuple]]:
    """The reference's pinned blocks: (tenant, the prefix through the block) along every held path."""
    return {(ns.tenant, tuple(t[: 4 * (i + 1)])) for ns, t in owners.values() for i in range(len(t) // 4)}


def pinned_by_tenant(owners: dict[str, tuple]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for tenant, _ in covered(owners):
        counts[tenant] = counts.get(tenant, 0) + 1
    return counts


def expected_new_blocks(owners: dict[str, tuple], owner: str, tenant: str, tokens: list[int]) -> int:
    """The blocks a retain must reserve: its whole blocks, less the leading ones already pinned
    (by any owner) or, if more, as many as the owner holds now."""
    pinned = covered(owners)
    leading = next((i for i in range(len(tokens) // 4) if (tenant, tuple(tokens[: 4 * (i + 1)])) not in pinned),
                   len(tokens) // 4)
    held = len(owners[owner][1]) // 4 if owner in owners else 0
    return max(0, len(tokens) // 4 - max(leading, held))


@settings(max_examples=150, deadline=None)
@given(OPS)
def test_pins_match_the_owners_paths_and_never_exceed_the_budgets(ops):
    """Retain (reserve, insert as a pinned prefix, commit, settle), release, ordinary inserts and
    flushes in any order: every held path stays pinned, no block is pinned that no owner holds,
    the budgets hold, and releasing every owner leaves nothing pinned."""
    cache, pool, _, pins = ledger(max_blocks_held=12, pin_quota_fraction=0.5, max_pinned_fraction=0.75)
    assert (cache.pin_budget.limit("default"), cache.pin_budget.global_limit) == (TENANT_PINS, GLOBAL_PINS)
    owners: dict[str, tuple] = {}  # the reference: owner -> (tenant's namespace, tokens) it holds
    for step, (op, owner, tenant, prompt) in enumerate(ops):
        ns, tokens = replace(NS, tenant=tenant), PROMPTS[prompt]
        if op == "retain":
            if owner in owners and owners[owner][0] != ns:
                continue  # an owner belongs to one tenant
            want, new = len(tokens) // 4, expected_new_blocks(owners, owner, tenant, tokens)
            pinned = pinned_by_tenant(owners)
            refuse = new > 0 and (pinned.get(tenant, 0) + new > TENANT_PINS or sum(pinned.values()) + new > GLOBAL_PINS)
            try:
                pins.reserve(f"r{step}", owner, tenant, len(tokens), cache.pinned_blocks(tokens, ns))
            except PinBudgetExceeded:
                assert refuse, f"step {step}: {new} new blocks fit the budgets {pinned}, yet were refused"
                continue
            assert not refuse, f"step {step}: {new} new blocks over the budgets {pinned}, yet admitted"
            cache.insert(tokens, ns, pool.store, own_room_only=True)
            held = pins.commit(f"r{step}", owner, tokens, ns)
            pins.settle(f"r{step}")
            if owner not in owners and cache.peek(tokens, ns) == want:
                assert held == want  # an admitted prefix, cached whole, is pinned whole
            if held:
                owners[owner] = (ns, tokens[: held * 4])
            else:
                owners.pop(owner, None)
        elif op == "release":
            pins.release(owner)
            owners.pop(owner, None)
        elif op == "insert":
            cache.insert(tokens, ns, pool.store)
        else:
            cache.flush()  # pinned blocks stay
        cache.check_invariants()
        for held_ns, held_tokens in owners.values():
            assert cache.pinned_blocks(held_tokens, held_ns) >= len(held_tokens) // 4
        budget = cache.pin_budget
        assert budget.blocks <= budget.global_limit
        assert all(budget.tenant_blocks.get(t, 0) <= budget.limit(t) for t in TENANTS)
        assert budget.blocks == len(covered(owners))  # pinned blocks are exactly those some owner holds
    for owner in OWNERS:
        pins.release(owner)
    assert cache.pinned_bytes() == 0
