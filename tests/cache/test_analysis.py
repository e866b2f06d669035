"""Batch analysis: reuse a perfect prefix cache would get, without touching any cache."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cache_fakes import NS, make_cache
from promptcache.cache.analysis import SharedPrefix, analyze_batch

SYSTEM = list(range(1000))


def conversation(i: int, length: int = 300) -> list[int]:
    return SYSTEM + [100_000 + 1000 * i + j for j in range(length)]


def test_prompts_sharing_a_system_prompt():
    batch = [conversation(i) for i in range(50)]
    blocks16 = analyze_batch(batch, block_size=16)
    assert blocks16.total_tokens == 50 * 1300
    assert blocks16.reused_tokens == 49 * 992  # the first computes it; 49 reuse 62 full blocks
    assert blocks16.top_shared == (SharedPrefix(num_tokens=992, num_sequences=50, example=0),)
    exact = analyze_batch(batch, block_size=1)
    assert exact.reused_tokens == 49 * 1000 and exact.top_shared[0].num_tokens == 1000
    assert exact.dedup_ratio == pytest.approx(49_000 / 65_000)


def test_most_shared_prefixes_are_maximal_and_ranked_by_sharers():
    a, b = [1] * 8, [2] * 8
    batch = [a + b, a + b + [3] * 4, a + [9] * 4, [7] * 4]
    result = analyze_batch(batch, block_size=4, top_n=5)
    assert result.top_shared == (
        SharedPrefix(num_tokens=8, num_sequences=3, example=0),
        SharedPrefix(num_tokens=16, num_sequences=2, example=0),
    )
    assert result.reused_tokens == 16 + 8
    assert result.computed_tokens == result.total_tokens - 24


def test_empty_and_bad_input():
    assert analyze_batch([]).dedup_ratio == 0.0
    assert analyze_batch([[1, 2, 3]], block_size=16).reused_tokens == 0
    with pytest.raises(ValueError):
        analyze_batch([[1]], block_size=0)


@settings(max_examples=40, deadline=None)
@given(st.lists(st.lists(st.integers(0, 3), max_size=24), max_size=8), st.sampled_from([1, 2, 4]))
def test_matches_an_unbounded_prefix_cache_replaying_the_batch(batch, size):
    cache, pool, _ = make_cache(block_size=size, max_blocks_held=10_000)
    reused = 0
    for tokens in batch:
        match = cache.match(tokens, NS)
        reused += match.num_tokens
        cache.release(match)
        cache.insert(tokens, NS, pool.store)
    frozen = [tuple(tokens) for tokens in batch]
    result = analyze_batch(batch, block_size=size)
    assert result.reused_tokens == reused == cache.stats.hit_tokens
    assert result.total_tokens == sum(map(len, batch)) == cache.stats.hit_tokens + cache.stats.miss_tokens
    # Every distinct full-block prefix is one block of the real cache (nothing was evicted).
    distinct = {tuple(tokens[: (i + 1) * size]) for tokens in batch for i in range(len(tokens) // size)}
    assert len(cache) == len(distinct) and result.computed_tokens == result.total_tokens - reused
    assert [tuple(tokens) for tokens in batch] == frozen  # read-only: the batch is unchanged
