"""The block pool: runs of consecutive ids, and copies between a slot and the pool that
round-trip whatever order the ids come in. Small tensors, no model."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from promptcache.engine.block_pool import BlockPool, PoolExhaustedError, _runs

LAYERS, KV_HEADS, BLOCK, HEAD_DIM, SLOTS, MAX_LEN = 2, 2, 4, 3, 3, 32


def new_pool(num_blocks: int = 12) -> BlockPool:
    return BlockPool(num_blocks, layers=LAYERS, kv_heads=KV_HEADS, block_size=BLOCK, head_dim=HEAD_DIM,
                     dtype=torch.float32, device=torch.device("cpu"))


def new_kv(fill: str = "arange") -> torch.Tensor:
    shape = (LAYERS, 2, SLOTS, KV_HEADS, MAX_LEN, HEAD_DIM)  # the engine's layout: (L, 2, slots, Hkv, T, D)
    if fill == "zeros":
        return torch.zeros(shape)
    return torch.arange(torch.Size(shape).numel(), dtype=torch.float32).view(shape)


def slot_block(kv: torch.Tensor, slot: int, block: int) -> torch.Tensor:
    return kv[:, :, slot, :, block * BLOCK:(block + 1) * BLOCK]


RUNS = {
    "empty": ([], []),
    "one": ([7], [(7, 8)]),
    "consecutive": ([3, 4, 5], [(3, 6)]),
    "two runs": ([3, 4, 5, 9, 10], [(3, 6), (9, 11)]),
    "descending": ([5, 4, 3], [(5, 6), (4, 5), (3, 4)]),
    "repeat": ([2, 2], [(2, 3), (2, 3)]),
    "gap of one": ([0, 2, 3], [(0, 1), (2, 4)]),
}


@pytest.mark.parametrize("name", RUNS)
def test_runs(name):
    ids, expected = RUNS[name]
    assert _runs(ids) == expected


@given(st.lists(st.integers(0, 40), max_size=30))
def test_runs_cover_the_ids_in_order(ids):
    runs = _runs(ids)
    assert [i for start, stop in runs for i in range(start, stop)] == ids
    assert all(stop > start for start, stop in runs)
    # maximal: a run never continues straight into the next one
    assert all(a[1] != b[0] for a, b in zip(runs, runs[1:]))


# block ids written from consecutive slot blocks 0.., in this order
ROUND_TRIPS = {
    "consecutive": [0, 1, 2, 3],
    "non-consecutive": [3, 4, 5, 9, 10],
    "descending": [8, 6, 4, 2],
    "shuffled": [11, 0, 7, 1, 2],
    "single": [5],
}


@pytest.mark.parametrize("name", ROUND_TRIPS)
def test_write_then_read_round_trips(name):
    ids = ROUND_TRIPS[name]
    pool, kv = new_pool(), new_kv()
    pool.write(ids, kv, slot=1, first_block=0)
    for i, block_id in enumerate(ids):  # pool block ids[i] holds slot block i
        assert torch.equal(pool.blocks[block_id], slot_block(kv, 1, i))
    untouched = [b for b in range(pool.num_blocks) if b not in ids]
    assert not pool.blocks[untouched].any()
    out = new_kv("zeros")
    pool.read(ids, out, slot=2)
    n = len(ids) * BLOCK
    assert torch.equal(out[:, :, 2, :, :n], kv[:, :, 1, :, :n])
    assert not out[:, :, 2, :, n:].any() and not out[:, :, :2].any()  # nothing else written


def test_write_from_a_later_block_of_the_slot():
    pool, kv = new_pool(), new_kv()
    pool.write([9, 2, 3], kv, slot=0, first_block=2)  # slot blocks 2, 3, 4
    out = new_kv("zeros")
    pool.read([9, 2, 3], out, slot=0)
    assert torch.equal(out[:, :, 0, :, :3 * BLOCK], kv[:, :, 0, :, 2 * BLOCK:5 * BLOCK])


@settings(max_examples=40, deadline=None)
@given(st.permutations(range(8)).flatmap(lambda p: st.integers(1, 8).map(lambda n: p[:n])))
def test_any_order_of_ids_round_trips(ids):
    pool, kv = new_pool(8), new_kv()
    pool.write(list(ids), kv, slot=0, first_block=0)
    out = new_kv("zeros")
    pool.read(list(ids), out, slot=0)
    n = len(ids) * BLOCK
    assert torch.equal(out[:, :, 0, :, :n], kv[:, :, 0, :, :n])


def test_allocate_hands_out_low_ids_first_and_free_returns_them():
    pool = new_pool(3)
    assert [pool.allocate() for _ in range(3)] == [0, 1, 2]
    assert pool.num_free == 0
    with pytest.raises(PoolExhaustedError):
        pool.allocate()
    pool.free(1)
    assert pool.num_free == 1 and pool.allocate() == 1


def test_block_nbytes_with_and_without_blocks():
    expected = LAYERS * 2 * KV_HEADS * BLOCK * HEAD_DIM * 4
    assert new_pool(2).block_nbytes == expected
    assert new_pool(0).block_nbytes == expected


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_block_bytes_round_trip_by_id(dtype):
    pool = BlockPool(4, layers=2, kv_heads=2, block_size=4, head_dim=8, dtype=dtype, device=torch.device("cpu"))
    pool.blocks.normal_()
    raw = pool.block_bytes([3, 1])
    assert [len(r) for r in raw] == [pool.block_nbytes] * 2
    before = pool.blocks.clone()
    pool.blocks[3].zero_()  # the bytes were copied out: the pool may reuse the id at once
    pool.write_block_bytes(0, bytes(raw[0]))
    assert torch.equal(pool.blocks[0], before[3])
    with pytest.raises(ValueError, match="bytes"):
        pool.write_block_bytes(0, b"short")
