"""The routing rule (promptcache/scaleout/scoring.py), without Ray: properties against a direct
reference computation of the documented cost, plus the cases the rule exists for."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from promptcache.scaleout.scoring import Candidate, Weights, decide, leading_run

BS = 16


def candidates_strategy(max_size=5):
    row = st.tuples(st.integers(0, 40), st.integers(0, 12), st.integers(0, 5000))
    return st.lists(row, min_size=1, max_size=max_size).map(
        lambda rows: [Candidate(f"r{i}", held, n, tokens) for i, (held, n, tokens) in enumerate(rows)])


@given(st.lists(st.integers(0, 6), max_size=30), st.sets(st.integers(0, 6)))
def test_leading_run_is_the_longest_prefix_held(keys, held):
    n = leading_run(keys, held)
    assert all(k in held for k in keys[:n])
    assert n == len(keys) or keys[n] not in held


@given(candidates_strategy(), st.integers(1, 40), st.integers(0, 40), st.integers(0, 1000),
       st.floats(0.0, 4.0))
def test_prefix_mode_puts_the_cheapest_replica_first(cands, usable, shared, turn, weight):
    prompt = (usable + 1) * BS
    d = decide(cands, mode="prefix", prompt_tokens=prompt, usable_blocks=usable, shared_blocks=shared,
               block_size=BS, turn=turn, weights=Weights(overlap_weight=weight))
    assert sorted(d.order) == sorted(c.replica for c in cands) and d.reason == "prefix"

    def cost(c):  # the documented rule, written out again (Weights() has 8 slots)
        return (c.in_flight >= 8, weight * (prompt - min(max(c.held_blocks, shared), usable) * BS) + c.load_tokens)

    best = min(cost(c) for c in cands)
    first = next(c for c in cands if c.replica == d.order[0])
    assert cost(first) == best
    assert [cost(c) for c in sorted(cands, key=lambda c: d.order.index(c.replica))] == sorted(map(cost, cands))


@given(st.integers(2, 6), st.integers(0, 1000))
def test_misses_at_equal_load_rotate_over_every_replica(n, start):
    """No hot spot: n consecutive misses on idle replicas land on n different replicas."""
    cands = [Candidate(f"r{i}", 0, 0, 0) for i in range(n)]
    firsts = {decide(cands, mode="prefix", prompt_tokens=100, usable_blocks=5, shared_blocks=0, block_size=BS,
                     turn=start + t).order[0] for t in range(n)}
    assert len(firsts) == n


def test_a_hit_is_not_worth_an_unbounded_queue():
    warm_idle = [Candidate("warm", 30, 0, 0), Candidate("cold", 0, 0, 0)]
    d = decide(warm_idle, mode="prefix", prompt_tokens=500, usable_blocks=31, shared_blocks=0, block_size=BS, turn=0)
    assert d.order[0] == "warm" and d.predicted == {"warm": 480, "cold": 0}
    warm_busy = [Candidate("warm", 30, 6, 4000), Candidate("cold", 0, 0, 0)]
    d = decide(warm_busy, mode="prefix", prompt_tokens=500, usable_blocks=31, shared_blocks=0, block_size=BS, turn=0)
    assert d.order[0] == "cold"


def test_a_replica_without_a_free_slot_comes_after_those_with_one():
    cands = [Candidate("warm", 30, 8, 128), Candidate("cold", 0, 7, 112)]
    d = decide(cands, mode="prefix", prompt_tokens=500, usable_blocks=31, shared_blocks=0, block_size=BS, turn=0)
    assert d.order == ("cold", "warm")


def test_a_prefix_in_the_shared_tier_counts_for_every_replica():
    cands = [Candidate("a", 2, 1, 100), Candidate("b", 0, 0, 0)]
    d = decide(cands, mode="prefix", prompt_tokens=400, usable_blocks=20, shared_blocks=20, block_size=BS, turn=0)
    assert d.predicted == {"a": 320, "b": 320}
    assert d.order[0] == "b"  # the same hit everywhere: load decides


def test_affinity_binds_unless_the_replica_is_overloaded_or_gone():
    cands = [Candidate("a", 0, 0, 0), Candidate("b", 10, 0, 0), Candidate("c", 0, 2, 300)]
    args = dict(mode="prefix", prompt_tokens=300, usable_blocks=15, shared_blocks=0, block_size=BS, turn=0,
                weights=Weights(overload_requests=3))
    d = decide(cands, affinity="c", **args)
    assert d.order == ("c", "b", "a") and d.reason == "affinity"
    busy = [Candidate("a", 0, 0, 0), Candidate("b", 10, 0, 0), Candidate("c", 0, 3, 300)]
    d = decide(busy, affinity="c", **args)
    assert d.order[0] == "b" and d.reason == "prefix"
    assert decide(cands, affinity="gone", **args).order[0] == "b"


def test_untrusted_reports_mean_least_loaded_for_all():
    cands = [Candidate("a", 20, 2, 900), Candidate("b", 0, 0, 0, trusted=False), Candidate("c", 0, 1, 10)]
    d = decide(cands, mode="prefix", prompt_tokens=400, usable_blocks=20, shared_blocks=0, block_size=BS, turn=0,
               affinity="a")
    assert d.reason == "fallback" and d.order == ("b", "c", "a")


@given(st.integers(1, 6), st.integers(0, 100))
def test_round_robin_cycles_in_id_order(n, turn):
    cands = [Candidate(f"r{i}", i, i, i) for i in reversed(range(n))]
    orders = [decide(cands, mode="round-robin", prompt_tokens=10, usable_blocks=0, shared_blocks=0, block_size=BS,
                     turn=turn + t).order for t in range(n)]
    assert [o[0] for o in orders] == [f"r{(turn + t) % n}" for t in range(n)]


def test_least_loaded_orders_by_requests_then_tokens():
    cands = [Candidate("a", 9, 2, 10), Candidate("b", 0, 1, 900), Candidate("c", 0, 1, 100)]
    d = decide(cands, mode="least-loaded", prompt_tokens=10, usable_blocks=0, shared_blocks=0, block_size=BS, turn=0)
    assert d.order == ("c", "b", "a")


def test_an_unknown_mode_is_refused():
    with pytest.raises(ValueError, match="unknown routing mode"):
        decide([Candidate("a", 0, 0, 0)], mode="random", prompt_tokens=1, usable_blocks=0, shared_blocks=0,
               block_size=BS, turn=0)
