"""Stored responses: what `previous_response_id` continues from, and what GET returns.

A stored response belongs to the tenant that created it: every read and delete names the
tenant, so another tenant's id is simply not found (a 404, never a 403 that would confirm the
id exists). Records expire `ttl_s` after creation; an expired one is a miss and is deleted by
the next write.

`ResponseStore` is the interface; `SqliteResponseStore` is the default, a file so that a
restart does not end every conversation (an in-memory store would). A Redis store lets any
replica continue a chain once the storage tiers' Redis client is configured; it implements
the same three methods (`redis_store.py`).
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
    response TEXT NOT NULL, input_items TEXT NOT NULL, history TEXT NOT NULL,
    PRIMARY KEY (tenant, id)
)
"""


class SqliteResponseStore(SqliteFile):
    """One SQLite file (or ":memory:"), opened on first use; calls are serialized by a lock
    and are short (one row by primary key), so routes run them in a worker thread."""

    SCHEMA = (_SCHEMA,)

    def __init__(self, path: str | Path, ttl_s: float = DEFAULT_TTL_S, clock: Callable[[], float] = time.time):
        if ttl_s <= 0:
            raise ValueError("the responses store's ttl_s must be positive")
        super().__init__(path, clock)
        self.ttl_s = ttl_s

    def put(self, record: StoredResponse) -> None:
        now = self.clock()
        row = (record.id, record.tenant, now + self.ttl_s, json.dumps(record.response),
               json.dumps(record.input_items), json.dumps(record.history))
        with self._lock:
            db = self._conn()
            db.execute("DELETE FROM responses WHERE expires_at <= ?", (now,))
            db.execute("INSERT OR REPLACE INTO responses VALUES (?, ?, ?, ?, ?, ?)", row)

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
    if settings.redis_url:
        from promptcache.server.openai.responses.redis_store import RedisResponseStore

        return RedisResponseStore(settings.redis_url, settings.responses_ttl_s, settings.tier_key)
    return SqliteResponseStore(settings.responses_db, settings.responses_ttl_s)
