"""Admission by count-min sketch: a block is stored on its k-th sighting, not before."""

from __future__ import annotations

from collections import Counter

from hypothesis import given, settings
from hypothesis import strategies as st

from cache_fakes import NS, blocks, make_cache
from promptcache.cache.admission import Admission
from promptcache.cache.sketch import CountMinSketch


@settings(max_examples=50, deadline=None)
@given(st.lists(st.binary(min_size=1, max_size=16), max_size=300), st.integers(1, 64))
def test_sketch_never_undercounts(keys, width):
    sketch = CountMinSketch(width)
    for key in keys:
        sketch.add(key)
    for key, count in Counter(keys).items():
        assert sketch.estimate(key) >= count


def test_sketch_is_exact_when_wide_and_deterministic():
    a, b = CountMinSketch(), CountMinSketch()
    for i in range(200):
        a.add(i.to_bytes(16, "little"))
        b.add(i.to_bytes(16, "little"))
    assert a.estimate((7).to_bytes(16, "little")) == 1 == b.estimate((7).to_bytes(16, "little"))
    assert a.estimate(b"never seen") == 0


def test_admission_after_k_sightings():
    gate = Admission(3)
    assert [gate.offer(b"k") for _ in range(4)] == [False, False, True, True]
    assert Admission(1).offer(b"anything")


def test_cache_stores_a_prompt_on_its_kth_insert_only():
    cache, pool, _ = make_cache(admit_after=2)
    first = cache.insert(blocks(1, 2, 3), NS, pool.store)
    assert (first.num_blocks_new, first.num_blocks_skipped) == (0, 3) and "admit" in first.reason
    assert len(cache) == 0
    second = cache.insert(blocks(1, 2, 3), NS, pool.store)
    assert (second.num_blocks_new, second.reason) == (3, None)
    cache.check_invariants()


def test_only_the_leading_admitted_run_is_stored():
    cache, pool, _ = make_cache(admit_after=2)
    cache.insert(blocks(1, 2), NS, pool.store)
    result = cache.insert(blocks(1, 2, 3, 4), NS, pool.store)  # 3 and 4 seen once so far
    assert (result.num_blocks_new, result.num_blocks_skipped) == (2, 2)
    assert cache.peek(blocks(1, 2, 3, 4), NS) == 2
    cache.check_invariants()
