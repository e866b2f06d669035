"""The record store under sessions, cached contents and pins (server/core/records.py): SQLite
by default and a real redis-server for replicas, each with an injected clock. Another tenant's
record is not found; an expired one is a miss; two stores over one Redis see the same records."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent.parent / "tiers"))
from redis_servers import RedisServer, need_redis  # noqa: E402

from promptcache.server.core.records import Record, RedisRecords, SqliteRecords  # noqa: E402

TIER_KEY = "cd" * 32


class Clock:
    now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture(scope="module")
def redis_url(tmp_path_factory):
    need_redis()
    server = RedisServer(tmp_path_factory.mktemp("records-redis")).start()
    yield server.url
    server.stop()


@pytest.fixture(params=["sqlite", "redis"])
def stores(request, tmp_path):
    """Two stores over the same records (two handles on one file; two replicas on one Redis)."""
    clock = Clock()
    if request.param == "sqlite":
        path = tmp_path / "records.sqlite3"
        return SqliteRecords(path, clock), SqliteRecords(path, clock), clock
    url = request.getfixturevalue("redis_url")
    return RedisRecords(url, TIER_KEY, clock), RedisRecords(url, TIER_KEY, clock), clock


def test_records_are_the_tenants_own_and_expire_by_the_injected_clock(stores):
    one, two, clock = stores
    one.put(Record("session", "alice", "s1", {"tokens": [1, 2, 3]}, clock.now + 60))
    one.put(Record("session", "alice", "s2", {"tokens": []}, None))
    one.put(Record("session", "bob*[x]", "s3", {"tokens": [9]}, None))  # glob characters stay literal
    one.put(Record("cached_content", "alice", "c1", {}, None))
    assert two.get("session", "alice", "s1").data == {"tokens": [1, 2, 3]}
    assert two.get("session", "bob*[x]", "s1") is None and two.get("session", "bob", "s3") is None
    assert [r.id for r in two.list("session", "alice")] == ["s1", "s2"]
    assert [r.id for r in two.list("session", "bob*[x]")] == ["s3"]
    assert sorted(r.id for r in two.every("session")) == ["s1", "s2", "s3"]
    assert not two.delete("session", "bob*[x]", "s1")  # another tenant's id: not found, nothing deleted
    clock.now += 61
    assert two.get("session", "alice", "s1") is None and [r.id for r in two.list("session", "alice")] == ["s2"]
    assert not two.delete("session", "alice", "s1")
    assert two.delete("session", "alice", "s2") and one.get("session", "alice", "s2") is None
    for record in two.every("session") + two.every("cached_content"):
        two.delete(record.kind, record.tenant, record.id)


def test_redis_values_are_sealed(redis_url):
    store = RedisRecords(redis_url, TIER_KEY, Clock())
    store.put(Record("session", "alice", "sealed", {"text": "a confidential contract"}, None))
    raw = b"".join(v for v in (store._redis.get(k) for k in store._redis.scan(b"")) if v)
    assert b"confidential" not in raw
    assert store.get("session", "alice", "sealed").data["text"] == "a confidential contract"
    store.delete("session", "alice", "sealed")


def test_add_counts_and_inserts_in_one_step_on_every_store(stores):
    one, two, clock = stores
    assert one.add(Record("session", "carol", "s1", {}, clock.now + 60), 2)
    assert two.add(Record("session", "carol", "s2", {}), 2)
    assert not one.add(Record("session", "carol", "s3", {}), 2)  # the cap, whichever replica asks
    assert two.add(Record("session", "carol", "s1", {"again": True}, clock.now + 60), 2)  # its own place
    assert one.add(Record("pin", "carol", "p1", {}), 2)  # another kind: counted apart
    clock.now += 61  # s1 expires: its place is free again
    assert one.add(Record("session", "carol", "s3", {}), 2)
    assert sorted(r.id for r in two.list("session", "carol")) == ["s2", "s3"]
    for record in two.list("session", "carol") + two.list("pin", "carol"):
        two.delete(record.kind, record.tenant, record.id)


def test_update_never_brings_back_a_deleted_or_expired_record(stores):
    one, two, clock = stores
    one.put(Record("session", "dave", "s1", {"ttl_s": 60}, clock.now + 60))
    one.put(Record("session", "dave", "s2", {"ttl_s": 60}, clock.now + 30))
    assert two.update(Record("session", "dave", "s1", {"ttl_s": 90}, clock.now + 90))
    assert one.get("session", "dave", "s1").data == {"ttl_s": 90}
    assert two.delete("session", "dave", "s1")
    assert not one.update(Record("session", "dave", "s1", {"ttl_s": 120}, clock.now + 120))
    clock.now += 31
    assert not one.update(Record("session", "dave", "s2", {"ttl_s": 120}, clock.now + 120))
    assert one.get("session", "dave", "s1") is None and one.get("session", "dave", "s2") is None
    two.delete("session", "dave", "s2")
