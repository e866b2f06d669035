"""Tenant-owned records with a lifetime: sessions, cached contents, pins, registered prompts.

Contract (every store):
- a record is (kind, tenant, id) -> JSON-able `data`, with `expires_at` (wall-clock seconds
  since the epoch, from the store's injected `clock`) or None for no expiry;
- `get`, `delete` and `list` name the tenant: another tenant's record is simply not found
  (a 404 for the route, never a 403 that would confirm the id exists);
- an expired record is a miss everywhere (`get`, `list`, `every`), whoever removes it later;
- `put` replaces the record with the same (kind, tenant, id);
- `add(record, limit)` puts it only if it exists already or its tenant holds fewer than `limit`
  live records of its kind, counting and inserting as one step (False: refused), so concurrent
  creations cannot pass the cap between a count and an insert;
- `update(record)` replaces only a live record (False: it is gone), so a change racing a delete
  never brings the deleted record back;
- `every(kind)` lists all tenants' live records of a kind: for start-up only (re-pinning what
  a restart dropped from memory), never for answering a caller.

`SqliteRecords` (the default) is one file, so records survive a restart. `RedisRecords`, used
when the storage tiers' Redis is configured (`--redis-url`), lets every replica over that Redis
see the same records; with `--tier-key` the values are sealed as the KV blocks are, since
records hold prompt text. `record_store(settings)` picks one.
"""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from promptcache.server.core.sqlite_file import SqliteFile
from promptcache.tiers.codec import Cipher
from promptcache.tiers.redis_store import RedisStore
from promptcache.tiers.store import StoreUnavailable

DEFAULT_DB = "~/.cache/promptcache/records.sqlite3"


@dataclass(frozen=True)
class Record:
    kind: str  # "session", "cached_content", "pin", "prompt", ...
    tenant: str
    id: str
    data: dict
    expires_at: float | None = None  # wall clock, seconds since the epoch; None: kept until deleted


class RecordStore(Protocol):
    clock: Callable[[], float]

    def put(self, record: Record) -> None: ...

    def add(self, record: Record, limit: int) -> bool: ...

    def update(self, record: Record) -> bool: ...

    def get(self, kind: str, tenant: str, record_id: str) -> Record | None: ...

    def delete(self, kind: str, tenant: str, record_id: str) -> bool: ...

    def list(self, kind: str, tenant: str) -> list[Record]: ...

    def every(self, kind: str) -> list[Record]: ...


_SCHEMA = """
CREATE TABLE IF NOT EXISTS records (
    kind TEXT NOT NULL, tenant TEXT NOT NULL, id TEXT NOT NULL, expires_at REAL, data TEXT NOT NULL,
    PRIMARY KEY (kind, tenant, id)
)
"""
_LIVE = "(expires_at IS NULL OR expires_at > ?)"


class SqliteRecords(SqliteFile):
    """The default store: records survive a restart of this machine's server."""

    SCHEMA = (_SCHEMA,)

    def __init__(self, path: str | Path = DEFAULT_DB, clock: Callable[[], float] = time.time):
        super().__init__(path, clock)

    def put(self, record: Record) -> None:
        self.add(record, None)

    def add(self, record: Record, limit: int | None) -> bool:
        row = (record.kind, record.tenant, record.id, record.expires_at, json.dumps(record.data))
        now = self.clock()

        def insert(db) -> bool:  # one IMMEDIATE transaction: no other writer between count and insert
            db.execute("DELETE FROM records WHERE expires_at IS NOT NULL AND expires_at <= ?", (now,))
            if limit is not None and not db.execute(
                    "SELECT 1 FROM records WHERE kind = ? AND tenant = ? AND id = ?", row[:3]).fetchone():
                held = db.execute("SELECT COUNT(*) FROM records WHERE kind = ? AND tenant = ?", row[:2]).fetchone()[0]
                if held >= limit:
                    return False
            db.execute("INSERT OR REPLACE INTO records VALUES (?, ?, ?, ?, ?)", row)
            return True

        return self._write(insert)

    def update(self, record: Record) -> bool:
        with self._lock:
            cursor = self._conn().execute(
                f"UPDATE records SET expires_at = ?, data = ? WHERE kind = ? AND tenant = ? AND id = ? AND {_LIVE}",
                (record.expires_at, json.dumps(record.data), record.kind, record.tenant, record.id, self.clock()))
        return cursor.rowcount > 0

    def get(self, kind: str, tenant: str, record_id: str) -> Record | None:
        with self._lock:
            row = self._conn().execute(
                f"SELECT expires_at, data FROM records WHERE kind = ? AND tenant = ? AND id = ? AND {_LIVE}",
                (kind, tenant, record_id, self.clock())).fetchone()
        return None if row is None else Record(kind, tenant, record_id, json.loads(row[1]), row[0])

    def delete(self, kind: str, tenant: str, record_id: str) -> bool:
        with self._lock:
            cursor = self._conn().execute(
                f"DELETE FROM records WHERE kind = ? AND tenant = ? AND id = ? AND {_LIVE}",
                (kind, tenant, record_id, self.clock()))
        return cursor.rowcount > 0

    def _select(self, where: str, args: tuple) -> list[Record]:
        with self._lock:
            rows = self._conn().execute(
                f"SELECT kind, tenant, id, expires_at, data FROM records WHERE {where} AND {_LIVE} "
                "ORDER BY tenant, id", (*args, self.clock())).fetchall()
        return [Record(kind, tenant, rid, json.loads(data), expires) for kind, tenant, rid, expires, data in rows]

    def list(self, kind: str, tenant: str) -> list[Record]:
        return self._select("kind = ? AND tenant = ?", (kind, tenant))

    def every(self, kind: str) -> list[Record]:
        return self._select("kind = ?", (kind,))


PREFIX = b"promptcache:records:"
_GLOB = {ord(c): "\\" + c for c in "*?[]\\"}


class ScanningRedis(RedisStore):
    """A RedisStore that also lists keys by prefix, replaces only existing keys, takes a lock
    every replica respects, and runs a function of the client with the store's error handling."""

    LOCK_S = 5.0  # a tenant's cap lock: held for one count and one write, given up after this

    def scan(self, prefix: bytes) -> list[bytes]:
        """Keys (without the store's prefix) starting with `prefix`."""
        pattern = (self.prefix + prefix).decode().translate(_GLOB).encode() + b"*"
        found = self._call(lambda client: list(client.scan_iter(match=pattern, count=1000)))
        return [key[len(self.prefix):] for key in found]

    def run(self, fn):
        """fn(client): a Redis outage is StoreUnavailable, as for every other call."""
        return self._call(fn)

    def replace(self, key: bytes, value: bytes, ttl_s: float | None) -> bool:
        """Write `key` only if it exists (SET XX): False when it is gone."""
        px = None if ttl_s is None else max(1, int(ttl_s * 1000))
        return bool(self._call(lambda client: client.set(self._key(key), value, px=px, xx=True)))

    @contextlib.contextmanager
    def locked(self, name: bytes):
        """redis-py's lock (SET NX with a timeout) on `name`, across every replica of this Redis."""
        lock = self._call(lambda client: client.lock(self._key(b"lock:" + name), timeout=self.LOCK_S,
                                                     blocking_timeout=self.LOCK_S))
        if not self._call(lambda client: lock.acquire()):
            raise StoreUnavailable(f"{self.name}: a lock was not free within {self.LOCK_S} s")  # names no tenant
        try:
            yield
        finally:
            self._call(lambda client: lock.release())


class RedisRecords:
    """Keys are PREFIX + the JSON [kind, tenant, id] triple (so a lookup is always within the
    caller's tenant); values are JSON, expiring by Redis' own TTL, and carry `expires_at` too
    so that the store's clock decides (an injected clock in tests)."""

    def __init__(self, url: str, tier_key: str | None = None, clock: Callable[[], float] = time.time,
                 timeout_s: float = 1.0):
        self.clock = clock
        self._redis = ScanningRedis(url, prefix=PREFIX, timeout_s=timeout_s)
        self._cipher = Cipher.from_hex(tier_key) if tier_key else None

    @staticmethod
    def _key(kind: str, tenant: str, record_id: str) -> bytes:
        return json.dumps([kind, tenant, record_id]).encode()

    def _value(self, record: Record) -> tuple[bytes, bytes, float | None]:
        """(key, value, seconds left) as stored."""
        key = self._key(record.kind, record.tenant, record.id)
        value = json.dumps({"data": record.data, "expires_at": record.expires_at}).encode()
        if self._cipher is not None:
            value = self._cipher.seal(value, key)
        ttl = None if record.expires_at is None else max(0.001, record.expires_at - self.clock())
        return key, value, ttl

    def put(self, record: Record) -> None:
        self._redis.put(*self._value(record))

    def add(self, record: Record, limit: int) -> bool:
        """Counted and written under a Redis lock per (kind, tenant), so replicas too take turns."""
        with self._redis.locked(self._key(record.kind, record.tenant, "")):
            if self.get(record.kind, record.tenant, record.id) is None \
                    and len(self.list(record.kind, record.tenant)) >= limit:
                return False
            self.put(record)
            return True

    def update(self, record: Record) -> bool:
        if self.get(record.kind, record.tenant, record.id) is None:  # expired by the store's clock, or gone
            return False
        return self._redis.replace(*self._value(record))

    def _decode(self, key: bytes, value: bytes | None) -> Record | None:
        if value is None:
            return None
        if self._cipher is not None:
            value = self._cipher.open(memoryview(value), key)
        payload = json.loads(value)
        expires_at = payload["expires_at"]
        if expires_at is not None and expires_at <= self.clock():
            return None
        kind, tenant, record_id = json.loads(key)
        return Record(kind, tenant, record_id, payload["data"], expires_at)

    def get(self, kind: str, tenant: str, record_id: str) -> Record | None:
        key = self._key(kind, tenant, record_id)
        return self._decode(key, self._redis.get(key))

    def delete(self, kind: str, tenant: str, record_id: str) -> bool:
        found = self.get(kind, tenant, record_id) is not None
        return self._redis.delete(self._key(kind, tenant, record_id)) and found

    def _scan(self, prefix: bytes) -> list[Record]:
        keys = sorted(self._redis.scan(prefix))
        records = (self._decode(key, value) for key, value in zip(keys, self._redis.get_many(keys)))
        return [record for record in records if record is not None]

    def list(self, kind: str, tenant: str) -> list[Record]:
        # The JSON of [kind, tenant, id] starts with the JSON of [kind, tenant] less its "]".
        return self._scan(json.dumps([kind, tenant]).encode()[:-1] + b", ")

    def every(self, kind: str) -> list[Record]:
        return self._scan(json.dumps([kind]).encode()[:-1] + b", ")


def record_store(settings, clock: Callable[[], float] = time.time) -> RecordStore:
    """Redis when the storage tiers' Redis is configured (every replica sees the same records),
    else the SQLite file `settings.records_db`."""
    if getattr(settings, "redis_url", None):
        return RedisRecords(settings.redis_url, getattr(settings, "tier_key", None), clock)
    return SqliteRecords(getattr(settings, "records_db", DEFAULT_DB), clock)
