"""What the ingress reads from and counts in the shared Redis (promptcache/scaleout/shared.py),
against a real redis-server: the leading blocks it holds, and tenants' requests in flight
counted across ingress processes."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent.parent / "tiers"))

from redis_servers import RedisServer, need_redis  # noqa: E402

from promptcache.scaleout.shared import SLOT_TTL_S, ClusterTenantLimit, SharedBlocks  # noqa: E402
from promptcache.tiers.redis_store import RedisStore  # noqa: E402


@pytest.fixture(scope="module")
def redis_url(tmp_path_factory):
    need_redis()
    server = RedisServer(tmp_path_factory.mktemp("redis")).start()
    yield server.url
    server.stop()


def test_the_leading_blocks_held_in_redis(redis_url):
    store = RedisStore(redis_url, prefix=b"test:shared:")
    keys = [bytes([i]) * 16 for i in range(10)]
    store.put_many([(k, b"kv") for k in keys[:3] + keys[4:6]])
    shared = SharedBlocks(store, batch=2)  # batches of two: the run crosses batch edges
    assert shared.leading(keys) == 3  # a gap ends the run
    assert shared.leading(keys[4:]) == 2
    assert shared.leading(keys, start=3) == 3  # what the caller knows held is not asked again
    assert shared.leading([]) == 0


def test_a_redis_that_does_not_answer_holds_nothing():
    store = RedisStore("redis://127.0.0.1:1/0", timeout_s=0.05, retries=0)
    assert SharedBlocks(store).leading([b"k" * 16]) == 0


class Clock:
    now = 1000.0

    def __call__(self):
        return self.now


def test_tenant_slots_are_counted_across_ingresses_and_lapse(redis_url):
    clock = Clock()
    store = RedisStore(redis_url)
    one, two = ClusterTenantLimit(store, 2, clock), ClusterTenantLimit(store, 2, clock)  # two ingress processes
    a = one.acquire("acme")
    b = two.acquire("acme")
    assert a and b and one.acquire("acme") is None and two.acquire("acme") is None
    assert one.acquire("other") is not None  # another tenant's count is its own
    one.release("acme", a)
    c = two.acquire("acme")
    assert c is not None
    clock.now += SLOT_TTL_S + 1  # an ingress died holding b and c: their slots lapse
    assert one.acquire("acme") and one.acquire("acme") and one.acquire("acme") is None
