"""Where registered prompts live: the records, the store interface, and the SQLite store.

A prompt belongs to the tenant that registered it: every call names the tenant, so another
tenant's id is simply not found (a 404, never a 403 that would confirm the id exists). A prompt
has numbered versions 1, 2, ...; one of them is its default (the first, until set), which a
reference without a version uses. Versions are immutable: a change is a new version.

Three stores implement `PromptStore`: SQLite (the default, a file, so prompts survive a
restart), Redis (`redis_store.py`, shared by replicas) and MLflow's prompt registry
(`mlflow_store.py`). Store calls block; routes run them in a worker thread.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from promptcache.server.core.sqlite_file import SqliteFile


class PromptNotFound(LookupError):
    """No such prompt or version for this tenant."""


@dataclass(frozen=True)
class PromptVersion:
    prompt_id: str
    version: int
    template: str
    warm: bool  # its static prefix is kept in the cache (and re-warmed by --warm-prompts)
    created_at: float


@dataclass(frozen=True)
class PromptInfo:
    id: str
    tenant: str
    name: str | None
    default_version: int
    latest_version: int
    created_at: float


class PromptStore(Protocol):
    def create(self, tenant: str, prompt_id: str, name: str | None, template: str, warm: bool) -> PromptInfo: ...

    def add_version(self, tenant: str, prompt_id: str, template: str, warm: bool) -> PromptVersion:
        """The next version (raises PromptNotFound)."""

    def info(self, tenant: str, prompt_id: str) -> PromptInfo | None: ...

    def version(self, tenant: str, prompt_id: str, version: int | None = None) -> PromptVersion | None:
        """One version; None: the default one."""

    def versions(self, tenant: str, prompt_id: str) -> list[PromptVersion]: ...

    def prompts(self, tenant: str) -> list[PromptInfo]:
        """The tenant's prompts, oldest first."""

    def count(self, tenant: str) -> int: ...

    def stored_chars(self, tenant: str) -> int:
        """Characters of template text the tenant stores, every version counted."""

    def set_default(self, tenant: str, prompt_id: str, version: int) -> PromptInfo:
        """Raises PromptNotFound for an unknown prompt or version."""

    def delete(self, tenant: str, prompt_id: str) -> list[PromptVersion]:
        """Removes the prompt; its versions as they were (empty: there was none)."""

    def warm_versions(self) -> list[tuple[str, PromptVersion]]:
        """(tenant, version) of every version registered with warm: true, every tenant's."""


_SCHEMA = (
    """CREATE TABLE IF NOT EXISTS prompts (
        tenant TEXT NOT NULL, id TEXT NOT NULL, name TEXT, default_version INTEGER NOT NULL,
        latest_version INTEGER NOT NULL, created_at REAL NOT NULL, PRIMARY KEY (tenant, id))""",
    """CREATE TABLE IF NOT EXISTS prompt_versions (
        tenant TEXT NOT NULL, id TEXT NOT NULL, version INTEGER NOT NULL, template TEXT NOT NULL,
        warm INTEGER NOT NULL, created_at REAL NOT NULL, PRIMARY KEY (tenant, id, version))""",
)


class SqlitePromptStore(SqliteFile):
    """Each change is one transaction (`_write`), so two writers (threads, or processes sharing
    the file) never hand out the same version."""

    SCHEMA = _SCHEMA
    BUSY_TIMEOUT_S = 10.0

    def create(self, tenant: str, prompt_id: str, name: str | None, template: str, warm: bool) -> PromptInfo:
        now = self.clock()

        def run(db):
            db.execute("INSERT INTO prompts VALUES (?, ?, ?, 1, 1, ?)", (tenant, prompt_id, name, now))
            db.execute("INSERT INTO prompt_versions VALUES (?, ?, 1, ?, ?, ?)", (tenant, prompt_id, template, warm, now))

        self._write(run)
        return PromptInfo(prompt_id, tenant, name, 1, 1, now)

    def add_version(self, tenant: str, prompt_id: str, template: str, warm: bool) -> PromptVersion:
        now = self.clock()

        def run(db):
            row = db.execute("SELECT latest_version FROM prompts WHERE tenant = ? AND id = ?",
                             (tenant, prompt_id)).fetchone()
            if row is None:
                raise PromptNotFound(prompt_id)
            version = row[0] + 1
            db.execute("UPDATE prompts SET latest_version = ? WHERE tenant = ? AND id = ?", (version, tenant, prompt_id))
            db.execute("INSERT INTO prompt_versions VALUES (?, ?, ?, ?, ?, ?)",
                       (tenant, prompt_id, version, template, warm, now))
            return version

        return PromptVersion(prompt_id, self._write(run), template, warm, now)

    def info(self, tenant: str, prompt_id: str) -> PromptInfo | None:
        rows = self._read("SELECT id, tenant, name, default_version, latest_version, created_at FROM prompts "
                          "WHERE tenant = ? AND id = ?", (tenant, prompt_id))
        return PromptInfo(*rows[0]) if rows else None

    def version(self, tenant: str, prompt_id: str, version: int | None = None) -> PromptVersion | None:
        if version is None:
            rows = self._read("SELECT v.id, v.version, v.template, v.warm, v.created_at FROM prompt_versions v "
                              "JOIN prompts p ON p.tenant = v.tenant AND p.id = v.id AND p.default_version = v.version "
                              "WHERE v.tenant = ? AND v.id = ?", (tenant, prompt_id))
        else:
            rows = self._read("SELECT id, version, template, warm, created_at FROM prompt_versions "
                              "WHERE tenant = ? AND id = ? AND version = ?", (tenant, prompt_id, version))
        return _version(rows[0]) if rows else None

    def versions(self, tenant: str, prompt_id: str) -> list[PromptVersion]:
        rows = self._read("SELECT id, version, template, warm, created_at FROM prompt_versions "
                          "WHERE tenant = ? AND id = ? ORDER BY version", (tenant, prompt_id))
        return [_version(row) for row in rows]

    def prompts(self, tenant: str) -> list[PromptInfo]:
        rows = self._read("SELECT id, tenant, name, default_version, latest_version, created_at FROM prompts "
                          "WHERE tenant = ? ORDER BY created_at, id", (tenant,))
        return [PromptInfo(*row) for row in rows]

    def count(self, tenant: str) -> int:
        return self._read("SELECT COUNT(*) FROM prompts WHERE tenant = ?", (tenant,))[0][0]

    def stored_chars(self, tenant: str) -> int:
        return self._read("SELECT COALESCE(SUM(LENGTH(template)), 0) FROM prompt_versions WHERE tenant = ?",
                          (tenant,))[0][0]

    def set_default(self, tenant: str, prompt_id: str, version: int) -> PromptInfo:
        def run(db):
            found = db.execute("SELECT 1 FROM prompt_versions WHERE tenant = ? AND id = ? AND version = ?",
                               (tenant, prompt_id, version)).fetchone()
            if found is None:
                raise PromptNotFound(prompt_id)
            db.execute("UPDATE prompts SET default_version = ? WHERE tenant = ? AND id = ?", (version, tenant, prompt_id))

        self._write(run)
        return info_after_change(self, tenant, prompt_id)

    def delete(self, tenant: str, prompt_id: str) -> list[PromptVersion]:
        def run(db):
            rows = db.execute("SELECT id, version, template, warm, created_at FROM prompt_versions "
                              "WHERE tenant = ? AND id = ? ORDER BY version", (tenant, prompt_id)).fetchall()
            db.execute("DELETE FROM prompt_versions WHERE tenant = ? AND id = ?", (tenant, prompt_id))
            db.execute("DELETE FROM prompts WHERE tenant = ? AND id = ?", (tenant, prompt_id))
            return [_version(row) for row in rows]

        return self._write(run)

    def warm_versions(self) -> list[tuple[str, PromptVersion]]:
        rows = self._read("SELECT tenant, id, version, template, warm, created_at FROM prompt_versions WHERE warm "
                          "ORDER BY created_at", ())
        return [(row[0], _version(row[1:])) for row in rows]


def info_after_change(store: PromptStore, tenant: str, prompt_id: str) -> PromptInfo:
    """The prompt's info as a change left it; PromptNotFound if another writer deleted the
    prompt in between."""
    info = store.info(tenant, prompt_id)
    if info is None:
        raise PromptNotFound(prompt_id)
    return info


def _version(row: tuple) -> PromptVersion:
    prompt_id, version, template, warm, created_at = row
    return PromptVersion(prompt_id, version, template, bool(warm), created_at)
