"""One contract, every store: memory, disk, Redis and a 3-node Redis Cluster (real servers)."""

from __future__ import annotations

import math
import os

import pytest

from promptcache.tiers.disk import DiskStore
from promptcache.tiers.redis_store import RedisStore
from promptcache.tiers.store import MemoryStore


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture(params=["memory", "disk", "redis", "redis-cluster"])
def store(request, tmp_path):
    """(store, clock or None): clock given where expiry can be driven without sleeping."""
    clock = Clock()
    if request.param == "memory":
        yield MemoryStore(clock=clock), clock
        return
    if request.param == "disk":
        yield DiskStore(tmp_path / "disk", 2**30, clock=clock), clock
        return
    target = request.getfixturevalue("redis_server" if request.param == "redis" else "redis_cluster")
    store = RedisStore(target.url, prefix=f"contract:{os.urandom(4).hex()}:".encode(), timeout_s=1.0)
    yield store, None
    store.clear()
    store.close()


KEYS = [bytes([i]) * 16 for i in range(5)] + [b"\x00\xff*?[" + bytes(11)]


def test_put_get_delete_exists(store):
    s, _ = store
    assert s.get(KEYS[0]) is None and not s.exists(KEYS[0]) and s.ttl(KEYS[0]) is None
    s.put(KEYS[0], b"value-0")
    s.put(KEYS[5], b"\x00" * 1000)  # binary keys with glob characters, binary values
    assert s.get(KEYS[0]) == b"value-0" and s.get(KEYS[5]) == b"\x00" * 1000
    assert s.exists(KEYS[0]) and s.ttl(KEYS[0]) == math.inf
    s.put(KEYS[0], b"value-0b")  # overwrite
    assert s.get(KEYS[0]) == b"value-0b"
    assert s.delete(KEYS[0]) is True and s.delete(KEYS[0]) is False
    assert s.get(KEYS[0]) is None and s.size() == 1


def test_batches_keep_order_and_report_missing(store):
    s, _ = store
    s.put_many([(KEYS[1], b"one"), (KEYS[3], b"three")])
    assert s.get_many(KEYS[:5]) == [None, b"one", None, b"three", None]
    assert s.get_many([]) == [] and s.put_many([]) is None
    assert s.size() == 2
    assert s.clear() == 2 and s.size() == 0 and s.get(KEYS[1]) is None


def test_ttl(store):
    s, clock = store
    s.put(KEYS[2], b"short", ttl_s=30)
    s.put_many([(KEYS[4], b"long")], ttl_s=3600)
    assert 0 < s.ttl(KEYS[2]) <= 30 and 30 < s.ttl(KEYS[4]) <= 3600
    with pytest.raises(ValueError):
        s.put(KEYS[1], b"x", ttl_s=0)
    if clock is None:
        return  # Redis expires keys by its own clock; the TTL it reports is checked above
    clock.now += 31
    assert s.get(KEYS[2]) is None and not s.exists(KEYS[2]) and s.ttl(KEYS[2]) is None
    assert s.get(KEYS[4]) == b"long" and s.size() == 1
