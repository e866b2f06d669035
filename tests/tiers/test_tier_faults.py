"""Damaged, foreign and encrypted values; the breaker; the write-behind queue; the planner."""

from __future__ import annotations

import os
import signal
import threading

import pytest
from tier_engines import Clock

from promptcache.tiers.breaker import CLOSED, HALF_OPEN, OPEN, CircuitBreaker
from promptcache.tiers.codec import BlockMeta, Cipher, CorruptBlock, decode, encode
from promptcache.tiers.disk import DiskStore
from promptcache.tiers.planner import DEADLINE_SHARE, Planner
from promptcache.tiers.redis_store import RedisStore
from promptcache.tiers.stats import TierStats
from promptcache.tiers.store import MemoryStore
from promptcache.tiers.tier import Tier
from promptcache.tiers.write_behind import PendingWrite, WriteBehind


def metas(n: int, model: str = "model-a") -> list[BlockMeta]:
    return [BlockMeta(model, "float32", (2, 2, 1, 16, 4), bytes([i]) * 16, bytes([i]) * 64) for i in range(n)]


PAYLOADS = [bytes([i]) * 2048 for i in range(4)]


def fill(tier: Tier, cipher: Cipher | None = None) -> None:
    tier.store.put_many([(m.key, encode(m, p, cipher)) for m, p in zip(metas(4), PAYLOADS)])


# -- the value format ---------------------------------------------------------------------------

def test_every_flipped_byte_and_every_truncation_is_refused():
    meta = metas(1)[0]
    value = encode(meta, b"kv" * 100)
    assert bytes(decode(value, meta)) == b"kv" * 100
    for at in range(len(value)):
        flipped = bytearray(value)
        flipped[at] ^= 0x01
        with pytest.raises(CorruptBlock):
            decode(bytes(flipped), meta)
    for length in range(len(value)):
        with pytest.raises(CorruptBlock):
            decode(value[:length], meta)


def test_a_block_of_another_model_prefix_dtype_or_shape_is_refused():
    meta = metas(1)[0]
    value = encode(meta, b"x" * 64)
    others = [BlockMeta("model-b", meta.dtype, meta.shape, meta.key, meta.tokens),
              BlockMeta(meta.model_id, meta.dtype, meta.shape, b"\x09" * 16, meta.tokens),
              BlockMeta(meta.model_id, meta.dtype, meta.shape, meta.key, b"\x09" * 64),
              BlockMeta(meta.model_id, "bfloat16", meta.shape, meta.key, meta.tokens),
              BlockMeta(meta.model_id, meta.dtype, (2, 2, 2, 16, 4), meta.key, meta.tokens)]
    for other in others:
        with pytest.raises(CorruptBlock, match="another"):
            decode(value, other)


def test_encryption_hides_the_bytes_and_its_tag_checks_them():
    meta, secret = metas(1)[0], b"the prompt's KV " * 8
    key_a, key_b = Cipher(b"a" * 32), Cipher(b"b" * 32)
    value = encode(meta, secret, key_a)
    assert b"the prompt" not in value and bytes(decode(value, meta, key_a)) == secret
    for reader in (key_b, None):
        with pytest.raises(CorruptBlock):
            decode(value, meta, reader)
    flipped = bytearray(value)
    flipped[-1] ^= 1
    with pytest.raises(CorruptBlock, match="authentication"):
        decode(bytes(flipped), meta, key_a)
    with pytest.raises(ValueError, match="64 hex digits"):
        Cipher.from_hex("not hex")


# -- corruption in a tier: counted, logged, removed -----------------------------------------------

def test_a_damaged_file_on_disk_is_a_counted_miss_and_is_removed(tmp_path, caplog):
    tier = Tier(DiskStore(tmp_path, 2**20))
    fill(tier)
    path = tier.store._path(metas(4)[2].key.hex())
    data = bytearray(path.read_bytes())
    data[100] ^= 0xFF
    path.write_bytes(bytes(data))
    found = tier.fetch(metas(4), deadline=float("inf"))
    assert [bytes(p) for p in found] == PAYLOADS[:2]  # the run stops at the damaged block
    assert tier.stats.corrupt == 1 and tier.stats.hits == 2 and tier.stats.misses == 2
    assert not path.exists() and "unusable" in caplog.text


def test_a_damaged_or_foreign_value_in_redis_is_a_counted_miss_and_is_removed(redis_server):
    store = RedisStore(redis_server.url, prefix=b"faults:")
    tier = Tier(store)
    fill(tier)
    raw = redis_server.client()
    raw.setrange(b"faults:" + metas(4)[0].key, 40, b"\xff")
    assert tier.fetch(metas(4), deadline=float("inf")) == [] and tier.stats.corrupt == 1
    assert not store.exists(metas(4)[0].key)
    foreign = metas(4, model="model-b")[1]  # right key, another model's header
    store.put(foreign.key, encode(foreign, PAYLOADS[1]))
    assert tier.fetch(metas(4)[1:], deadline=float("inf")) == [] and tier.stats.corrupt == 2
    assert not store.exists(foreign.key)
    store.clear()


# -- the breaker ----------------------------------------------------------------------------------

def test_breaker_opens_on_consecutive_failures_and_recovers_through_one_probe():
    clock = Clock()
    breaker = CircuitBreaker(failures=3, recovery_s=5, clock=clock)
    for _ in range(2):
        assert breaker.allow()
        breaker.failure()
    breaker.success(0.001)  # a success resets the count
    for _ in range(3):
        breaker.failure()
    assert breaker.state == OPEN and not breaker.allow() and breaker.rejected == 1
    clock.now += 5
    assert breaker.state == HALF_OPEN
    assert breaker.allow() and not breaker.allow()  # one probe at a time
    breaker.failure()
    assert breaker.state == OPEN and breaker.opened == 2
    clock.now += 5
    assert breaker.allow()
    breaker.success(0.001)
    assert breaker.state == CLOSED and breaker.allow()


def test_breaker_opens_when_p99_latency_is_over_budget():
    breaker = CircuitBreaker(slow_s=0.1, window=100, min_samples=100, clock=Clock())
    for _ in range(98):
        breaker.success(0.01)
    breaker.success(0.5)  # 1 slow call in 99: p99 still fast
    assert breaker.state == CLOSED
    breaker.success(0.5)  # 2 in 100: p99 over budget
    assert breaker.state == OPEN


def test_a_slow_redis_trips_the_breaker(tmp_path):
    from redis_servers import RedisServer, need_redis

    need_redis()
    server = RedisServer(tmp_path / "slow").start()
    try:
        clock = Clock()
        tier = Tier(RedisStore(server.url, timeout_s=0.05, retries=1), clock=clock,
                    breaker=CircuitBreaker(failures=2, clock=clock))
        # A stopped redis-server accepts connections (the kernel does) and answers nothing until
        # it is continued: every call times out, however long the test takes to make it.
        os.kill(server.proc.pid, signal.SIGSTOP)
        try:
            for _ in range(3):
                assert tier.fetch(metas(2), deadline=float("inf")) == []
        finally:
            os.kill(server.proc.pid, signal.SIGCONT)
        assert tier.breaker.state == OPEN and tier.stats.errors == 2 and tier.breaker.rejected == 1
        assert server.client().ping()  # the server itself is fine again
    finally:
        server.stop()


# -- write-behind ---------------------------------------------------------------------------------

class BlockingStore(MemoryStore):
    def __init__(self) -> None:
        super().__init__()
        self.gate = threading.Event()

    def put_many(self, items, ttl_s=None):
        self.gate.wait(10)
        super().put_many(items, ttl_s)


def test_write_behind_never_blocks_counts_what_it_drops_and_drains_at_close():
    store = BlockingStore()
    tier = Tier(store)
    writer = WriteBehind(max_blocks=4)
    some = metas(4)
    assert writer.offer(PendingWrite(some[:3], PAYLOADS[:3], None, [tier]))  # taken by the worker, stuck
    assert not writer.offer(PendingWrite(some[:2], PAYLOADS[:2], None, [tier]))  # 3 + 2 > 4: dropped
    assert writer.offer(PendingWrite(some[3:], PAYLOADS[3:], None, [tier]))
    assert tier.stats.dropped_writes == 2
    store.gate.set()
    assert writer.close(timeout_s=10)
    assert store.size() == 4 and tier.stats.writes == 4


# -- the planner ----------------------------------------------------------------------------------

def test_planner_fetches_only_what_beats_recompute():
    planner, stats = Planner(block_size=16), TierStats(latency_s=0.002, block_s=0.0005)
    assert planner.plan(stats, 10) is not None  # nothing measured yet: try
    planner.observe_prefill(16_000, 1.0)  # 1 ms a block to recompute
    assert planner.plan(stats, 10) == pytest.approx(DEADLINE_SHARE * 0.010)  # 7 ms < 10 ms
    assert planner.plan(stats, 2) is None  # 3 ms > 2 ms: compute them
    slow = TierStats(latency_s=0.002, block_s=0.002)
    assert planner.plan(slow, 100) is None  # slower per block than recompute: never worth it


def test_estimates_follow_a_tier_that_slows_down():
    stats = TierStats()
    for _ in range(30):
        stats.observe_read(10, 10_000, 0.050)
    assert stats.predict_s(10) == pytest.approx(0.050, rel=0.05)


def test_an_overrunning_fetch_is_abandoned_and_keeps_what_it_read():
    clock = Clock()

    class Slow(MemoryStore):
        def get_many(self, keys):
            clock.now += 1.0  # each batch takes a second
            return super().get_many(keys)

    tier = Tier(Slow(), batch_blocks=2, clock=clock)
    fill(tier)
    found = tier.fetch(metas(4), deadline=clock.now + 0.5)
    assert len(found) == 2 and tier.stats.abandoned_reads == 1


@pytest.mark.parametrize("scheme", ["redis", "redis+cluster"])
def test_a_redis_down_at_start_is_an_outage_not_a_failed_start(scheme):
    from redis_servers import free_port

    from promptcache.tiers.store import StoreUnavailable

    store = RedisStore(f"{scheme}://:secret@127.0.0.1:{free_port()}/0")  # nothing listens there
    with pytest.raises(StoreUnavailable) as error:
        store.get(b"k" * 16)
    assert "secret" not in str(error.value)
    tier = Tier(store)
    assert tier.fetch(metas(2), deadline=float("inf")) == [] and tier.stats.errors == 1
