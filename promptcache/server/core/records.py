"""Tenant-owned records with a lifetime: sessions, cached contents, pins, registered prompts.

Contract (every store):
- a record is (kind, tenant, id) -> JSON-able `data`, with `expires_at` (wall-clock seconds
  since the epoch, from the store's injected `clock`) or None for no expiry;
- `get`, `delete` and `list` name the tenant: another tenant's record is simply not found
  (a 404 for the route, never a 403 that would confirm the id exists);
- an expired record is a miss everywhere (`get`, `list`, `every`), whoever removes it later;
- `put` replaces the record with the same (kind, tenant, id);
- `every(kind)` lists all tenants' live records of a kind: for start-up only (re-pinning what
  a restart dropped from memory), never for answering a caller.

`SqliteRecords` (the default) is one file, so records survive a restart. `RedisRecords`, used
when the storage tiers' Redis is configured (`--redis-url`), lets every replica over that Redis
see the same records; with `--tier-key` the values are sealed as the KV blocks are, since
records hold prompt text. `record_store(settings)` picks one.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from promptcache.server.core.sqlite_file import SqliteFile
from promptcache.tiers.codec import Cipher
from promptcache.tiers.redis_store import RedisStore

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
        now = self.clock()
        with self._lock:
            db = self._conn()
            db.execute("DELETE FROM records WHERE expires_at IS NOT NULL AND expires_at <= ?", (now,))
            db.execute("INSERT OR REPLACE INTO records VALUES (?, ?, ?, ?, ?)",
                       (record.kind, record.tenant, record.id, record.expires_at, json.dumps(record.data)))

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


class _Scanning(RedisStore):
    def scan(self, prefix: bytes) -> list[bytes]:
        """Keys (without the store's prefix) starting with `prefix`."""
        pattern = (self.prefix + prefix).decode().translate(_GLOB).encode() + b"*"
        found = self._call(lambda client: list(client.scan_iter(match=pattern, count=1000)))
        return [key[len(self.prefix):] for key in found]


class RedisRecords:
    """Keys are PREFIX + the JSON [kind, tenant, id] triple (so a lookup is always within the
    caller's tenant); values are JSON, expiring by Redis' own TTL, and carry `expires_at` too
    so that the store's clock decides (an injected clock in tests)."""

    def __init__(self, url: str, tier_key: str | None = None, clock: Callable[[], float] = time.time,
                 timeout_s: float = 1.0):
        self.clock = clock
        self._redis = _Scanning(url, prefix=PREFIX, timeout_s=timeout_s)
        self._cipher = Cipher.from_hex(tier_key) if tier_key else None

    @staticmethod
    def _key(kind: str, tenant: str, record_id: str) -> bytes:
        return json.dumps([kind, tenant, record_id]).encode()

    def put(self, record: Record) -> None:
        key = self._key(record.kind, record.tenant, record.id)
        value = json.dumps({"data": record.data, "expires_at": record.expires_at}).encode()
        if self._cipher is not None:
            value = self._cipher.seal(value, key)
        ttl = None if record.expires_at is None else max(0.001, record.expires_at - self.clock())
        self._redis.put(key, value, ttl)

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
