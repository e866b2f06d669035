"""One SQLite file (or ":memory:") behind a lock: the scaffolding every SQLite store shares.

Records, stored responses and registered prompts each keep their rows in a file of their own,
so they survive a restart. The file is opened on first use (a store built for a server that
never calls it creates nothing), its folder made, its tables created; the connection is in
autocommit mode, usable from any thread, and every call holds `_lock` for one short statement
or one transaction, which is why routes run store calls in a worker thread.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

T = TypeVar("T")


def sqlite_path(path: str | Path) -> str:
    return str(path) if str(path) == ":memory:" else str(Path(path).expanduser())


class SqliteFile:
    """`SCHEMA`'s statements run when the file is opened; another process's write lock is
    waited for up to `BUSY_TIMEOUT_S`."""

    SCHEMA: tuple[str, ...] = ()
    BUSY_TIMEOUT_S = 5.0  # sqlite3's own default

    def __init__(self, path: str | Path, clock: Callable[[], float] = time.time):
        self.path = sqlite_path(path)
        self.clock = clock
        self._db: sqlite3.Connection | None = None
        self._lock = threading.Lock()

    def _conn(self) -> sqlite3.Connection:
        if self._db is None:
            if self.path != ":memory:":
                Path(self.path).parent.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None,
                                       timeout=self.BUSY_TIMEOUT_S)
            for statement in self.SCHEMA:
                self._db.execute(statement)
        return self._db

    def _read(self, sql: str, args: tuple) -> list[tuple]:
        with self._lock:
            return self._conn().execute(sql, args).fetchall()

    def _write(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """`fn(db)` in one transaction: committed when it returns, rolled back when it raises."""
        with self._lock:
            db = self._conn()
            db.execute("BEGIN IMMEDIATE")
            try:
                out = fn(db)
            except BaseException:
                db.execute("ROLLBACK")
                raise
            db.execute("COMMIT")
            return out
