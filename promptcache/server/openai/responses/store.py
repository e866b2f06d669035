"""Stored responses: what `previous_response_id` continues from, and what GET returns.

A stored response belongs to the tenant that created it: every read and delete names the
tenant, so another tenant's id is simply not found (a 404, never a 403 that would confirm the
id exists). Records expire `ttl_s` after creation; an expired one is a miss and is deleted by
the next write.

`ResponseStore` is the interface; `SqliteResponseStore` is the default, a file so that a
restart does not end every conversation (an in-memory store would). A Redis store lets any
replica continue a chain once the storage tiers' Redis client is configured; it implements
the same three methods (`redis_store.py`).

Each tenant keeps at most `max_per_tenant` responses and `max_bytes_per_tenant` bytes of them
(their stored JSON): a new one past either evicts that tenant's oldest first, never another
tenant's, so a tenant storing large responses in a loop shortens only its own history. A single
response over the byte quota is kept alone: its size is bounded anyway, by the body limit and by
the context its conversation had to fit.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from promptcache.server.core.sqlite_file import SqliteFile

DEFAULT_TTL_S = 30 * 86_400.0  # as long as OpenAI keeps a stored response


@dataclass(frozen=True)
class StoredResponse:
    id: str
    tenant: str
    response: dict  # the Response object as GET returns it
    input_items: list[dict]  # this request's input items, with ids
    history: list[dict]  # {"role", "content"} turns: earlier turns, this input and this reply


class ResponseStore(Protocol):
    def put(self, record: StoredResponse) -> None: ...

    def get(self, tenant: str, response_id: str) -> StoredResponse | None: ...

    def delete(self, tenant: str, response_id: str) -> bool: ...


_SCHEMA = """
CREATE TABLE IF NOT EXISTS responses (
    id TEXT NOT NULL, tenant TEXT NOT NULL, expires_at REAL NOT NULL,
    response TEXT NOT NULL, input_items TEXT NOT NULL, history TEXT NOT NULL, nbytes INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (tenant, id)
)
"""
_OLDEST_FIRST = "CREATE INDEX IF NOT EXISTS responses_by_age ON responses (tenant, expires_at)"
# A file written before the quota had no nbytes column: added, and filled from the rows' bytes.
_NBYTES = "length(CAST(response AS BLOB)) + length(CAST(input_items AS BLOB)) + length(CAST(history AS BLOB))"


def stored_bytes(record: StoredResponse) -> tuple[tuple[str, str, str], int]:
    """The record's three JSON columns and their size in bytes, what the quota counts."""
    columns = (json.dumps(record.response), json.dumps(record.input_items), json.dumps(record.history))
    return columns, sum(len(c.encode()) for c in columns)


class SqliteResponseStore(SqliteFile):
    """One SQLite file (or ":memory:"), opened on first use; calls are serialized by a lock
    and are short (one row by primary key), so routes run them in a worker thread."""

    SCHEMA = (_SCHEMA,)

    def __init__(self, path: str | Path, ttl_s: float = DEFAULT_TTL_S, clock: Callable[[], float] = time.time,
                 max_per_tenant: int | None = None, max_bytes_per_tenant: int | None = None):
        if ttl_s <= 0:
            raise ValueError("the responses store's ttl_s must be positive")
        super().__init__(path, clock)
        self.ttl_s = ttl_s
        self.max_per_tenant, self.max_bytes_per_tenant = max_per_tenant, max_bytes_per_tenant

    def _conn(self):
        opening = self._db is None
        db = super()._conn()
        if opening:
            if "nbytes" not in {row[1] for row in db.execute("PRAGMA table_info(responses)")}:
                db.execute("ALTER TABLE responses ADD COLUMN nbytes INTEGER NOT NULL DEFAULT 0")
                db.execute(f"UPDATE responses SET nbytes = {_NBYTES}")
            db.execute(_OLDEST_FIRST)
        return db

    def put(self, record: StoredResponse) -> None:
        now = self.clock()
        columns, nbytes = stored_bytes(record)
        row = (record.id, record.tenant, now + self.ttl_s, *columns, nbytes)

        def insert(db) -> None:
            db.execute("DELETE FROM responses WHERE expires_at <= ?", (now,))
            db.execute("DELETE FROM responses WHERE tenant = ? AND id = ?", (record.tenant, record.id))
            self._make_room(db, record.tenant, nbytes)
            db.execute("INSERT INTO responses VALUES (?, ?, ?, ?, ?, ?, ?)", row)

        self._write(insert)

    def _make_room(self, db, tenant: str, nbytes: int) -> None:
        """Evict the tenant's oldest responses until one more of `nbytes` fits its quotas."""
        count, total = db.execute("SELECT COUNT(*), COALESCE(SUM(nbytes), 0) FROM responses WHERE tenant = ?",
                                  (tenant,)).fetchone()
        max_count = self.max_per_tenant if self.max_per_tenant is not None else count + 1
        max_bytes = self.max_bytes_per_tenant if self.max_bytes_per_tenant is not None else total + nbytes
        evicted: list[str] = []
        oldest = db.execute("SELECT id, nbytes FROM responses WHERE tenant = ? ORDER BY expires_at, id", (tenant,))
        for response_id, size in oldest:
            if count + 1 <= max_count and total + nbytes <= max_bytes:
                break
            evicted.append(response_id)
            count, total = count - 1, total - size
        oldest.close()
        db.executemany("DELETE FROM responses WHERE tenant = ? AND id = ?", [(tenant, i) for i in evicted])

    def get(self, tenant: str, response_id: str) -> StoredResponse | None:
        with self._lock:
            row = self._conn().execute(
                "SELECT response, input_items, history FROM responses WHERE tenant = ? AND id = ? AND expires_at > ?",
                (tenant, response_id, self.clock())).fetchone()
        if row is None:
            return None
        return StoredResponse(response_id, tenant, *(json.loads(col) for col in row))

    def delete(self, tenant: str, response_id: str) -> bool:
        with self._lock:
            cursor = self._conn().execute("DELETE FROM responses WHERE tenant = ? AND id = ? AND expires_at > ?",
                                          (tenant, response_id, self.clock()))
        return cursor.rowcount > 0


def response_store(settings) -> ResponseStore:
    """Redis when the storage tiers' Redis is configured (any replica continues a chain), else
    the SQLite file."""
    limits = settings.limits
    quotas = dict(max_per_tenant=limits.max_stored_responses_per_tenant,
                  max_bytes_per_tenant=limits.max_stored_response_bytes_per_tenant)
    if settings.redis_url:
        from promptcache.server.openai.responses.redis_store import RedisResponseStore

        return RedisResponseStore(settings.redis_url, settings.responses_ttl_s, settings.tier_key, **quotas)
    return SqliteResponseStore(settings.responses_db, settings.responses_ttl_s, **quotas)
