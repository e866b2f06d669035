"""API keys -> tenants, and who may call the admin endpoints.

The tenant is the outermost part of every cache namespace (model, tenant, salt): two tenants
never share a cache entry, whatever salt or prompt_cache_key they send. So the tenant must come
from something the client cannot forge, the API key, and never from the request body.

Without any key configured the server is open and everyone is the one tenant "default".
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import stat
import tomllib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

from promptcache.server.errors import unauthorized

log = logging.getLogger("promptcache.server")

DEFAULT_TENANT = "default"
UNNAMED = ""  # a key given without a tenant name, until `name_plain_keys` names it


@dataclass(frozen=True)
class Tenant:
    name: str
    quota_bytes: int | None = None  # cap on this tenant's cached KV; None: only the global budget


def name_plain_keys(keys: Mapping[str, Tenant]) -> dict[str, Tenant]:
    """Give every unnamed key a tenant of its own: key-1, key-2, ... in the order given.

    The name is what logs, metrics labels and stats show, so it must say nothing about the key.
    It used to be a prefix of the key's unsalted SHA-256, which lets anyone who can read
    /metrics test guesses of a weak key offline; a position in the configuration cannot be
    computed from the key by anyone, and stays stable across restarts with the same config.
    """
    taken = {t.name for t in keys.values()}
    named: dict[str, Tenant] = {}
    n = 0
    for key, tenant in keys.items():
        if tenant.name == UNNAMED:
            n += 1
            while f"key-{n}" in taken:
                n += 1
            tenant = Tenant(f"key-{n}", tenant.quota_bytes)
        named[key] = tenant
    return named


def warn_if_readable_by_others(path: Path) -> None:
    """Keys files hold secrets; a world- or group-readable one is worth a warning at start."""
    try:
        mode = path.stat().st_mode
    except OSError:
        return
    if mode & (stat.S_IRGRP | stat.S_IROTH):
        log.warning("keys file %s is readable by other users; chmod 600 it", path)


def load_keys_file(path: str | Path) -> dict[str, Tenant]:
    """Read {key: {"tenant": NAME, "quota_mb": N}} from a .toml or .json file.

    A bare string value is taken as the tenant name. Several keys may name one tenant; if they
    give it different quotas the file is rejected, since either choice would surprise someone.
    """
    path = Path(path)
    warn_if_readable_by_others(path)
    raw_text = path.read_bytes()
    if path.suffix.lower() == ".json":
        data = json.loads(raw_text)
    else:
        data = tomllib.loads(raw_text.decode())
    if isinstance(data, Mapping) and isinstance(data.get("keys"), Mapping):
        data = data["keys"]  # allow a [keys] table, the natural TOML spelling
    if not isinstance(data, Mapping):
        raise ValueError(f"{path}: expected a mapping of API key -> tenant")
    keys: dict[str, Tenant] = {}
    for key, entry in data.items():
        if isinstance(entry, str):
            entry = {"tenant": entry}
        if not isinstance(entry, Mapping) or not isinstance(entry.get("tenant", ""), str):
            raise ValueError(f"{path}: entry for a key must be a table with 'tenant'")
        name = entry.get("tenant") or UNNAMED
        quota_mb = entry.get("quota_mb")
        if quota_mb is not None and (not isinstance(quota_mb, (int, float)) or quota_mb < 0):
            raise ValueError(f"{path}: quota_mb of tenant {name or '(unnamed)'!r} must be a number >= 0")
        quota = None if quota_mb is None else int(quota_mb * 2**20)
        keys[str(key)] = Tenant(name, quota)
    tenant_quotas(keys.values())  # raises on conflicting quotas
    return keys


def tenant_quotas(tenants: Iterable[Tenant]) -> dict[str, int]:
    """The per-tenant byte caps for `CacheConfig.tenant_quotas`."""
    quotas: dict[str, int] = {}
    for tenant in tenants:
        if tenant.quota_bytes is None:
            continue
        if quotas.get(tenant.name, tenant.quota_bytes) != tenant.quota_bytes:
            raise ValueError(f"tenant {tenant.name!r} is given two different quotas")
        quotas[tenant.name] = tenant.quota_bytes
    return quotas


def _digest(key: str) -> bytes:
    return hashlib.sha256(key.encode()).digest()


@dataclass(frozen=True)
class Caller:
    """Who sent a request, decided from its headers alone (before the body is read)."""

    tenant: Tenant | None  # None: the admin or metrics key, which are no tenant's
    admin: bool = False
    metrics: bool = False  # may scrape /metrics


class KeyRing:
    """Authenticates `Authorization: Bearer KEY` headers.

    Keys are held only as SHA-256 digests (the plaintext is not kept, and `repr` shows only
    counts), and compared with `hmac.compare_digest`, so neither a memory dump of this object
    nor response timing gives them away.
    """

    def __init__(
        self,
        keys: Mapping[str, Tenant] | None = None,
        admin_key: str | None = None,
        metrics_key: str | None = None,
    ):
        self._tenants = {_digest(k): t for k, t in (keys or {}).items()}
        self._admin = _digest(admin_key) if admin_key else None
        self._metrics = _digest(metrics_key) if metrics_key else None

    def __repr__(self) -> str:
        return (f"KeyRing({len(self._tenants)} tenant key(s), admin key {'set' if self._admin else 'unset'}, "
                f"metrics key {'set' if self._metrics else 'unset'})")

    @property
    def open(self) -> bool:
        """True when no API key is configured: every caller is the "default" tenant."""
        return not self._tenants

    @property
    def any_key(self) -> bool:
        """True when any key at all (tenant, admin or metrics) is configured."""
        return bool(self._tenants) or self._admin is not None or self._metrics is not None

    @property
    def tenants(self) -> list[Tenant]:
        return list(self._tenants.values())

    def identify(self, authorization: str | None) -> Caller | None:
        """The caller behind a header; None for a key that is given but unknown (a 401).

        Without tenant keys everyone is the "default" tenant; a correct admin key is admin
        either way, and without any admin key the open server's callers are all admin.
        """
        key = bearer_token(authorization)
        digest = _digest(key) if key is not None else None
        shared = Tenant(DEFAULT_TENANT) if self.open else None
        if digest is not None and self._admin is not None and hmac.compare_digest(digest, self._admin):
            return Caller(shared, admin=True, metrics=True)
        if digest is not None and self._metrics is not None and hmac.compare_digest(digest, self._metrics):
            return Caller(shared, metrics=True)
        if shared is not None:
            return Caller(shared, admin=self._admin is None, metrics=not self.any_key)
        if digest is None:
            return None
        tenant = self._tenants.get(digest)
        return None if tenant is None else Caller(tenant)

    def tenant(self, authorization: str | None) -> Tenant:
        """The caller's tenant; raises the 401 APIError for a missing or unknown key."""
        caller = self.identify(authorization)
        if caller is None or caller.tenant is None:
            if bearer_token(authorization) is None:
                raise unauthorized("You didn't provide an API key (Authorization: Bearer KEY).")
            raise unauthorized()
        return caller.tenant

    def is_admin(self, authorization: str | None) -> bool:
        """Admin endpoints are open when no key of any kind is configured."""
        caller = self.identify(authorization)
        return caller is not None and caller.admin


def bearer_token(authorization: str | None) -> str | None:
    if not authorization:
        return None
    scheme, _, token = authorization.partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token:
        return None
    return token
