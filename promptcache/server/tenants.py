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
import tomllib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from promptcache.server.errors import unauthorized

DEFAULT_TENANT = "default"


@dataclass(frozen=True)
class Tenant:
    name: str
    quota_bytes: int | None = None  # cap on this tenant's cached KV; None: only the global budget


def tenant_for_plain_key(key: str) -> str:
    """A key given without a tenant name gets a tenant of its own, named by a short digest so
    the key itself never appears in logs or metrics."""
    return "key-" + hashlib.sha256(key.encode()).hexdigest()[:10]


def load_keys_file(path: str | Path) -> dict[str, Tenant]:
    """Read {key: {"tenant": NAME, "quota_mb": N}} from a .toml or .json file.

    A bare string value is taken as the tenant name. Several keys may name one tenant; if they
    give it different quotas the file is rejected, since either choice would surprise someone.
    """
    path = Path(path)
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
        name = entry.get("tenant") or tenant_for_plain_key(key)
        quota_mb = entry.get("quota_mb")
        if quota_mb is not None and (not isinstance(quota_mb, (int, float)) or quota_mb < 0):
            raise ValueError(f"{path}: quota_mb of tenant {name!r} must be a number >= 0")
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


@dataclass
class KeyRing:
    """Authenticates `Authorization: Bearer KEY` headers.

    Keys are held only as digests, and compared with `hmac.compare_digest`, so neither a memory
    dump nor response timing gives them away.
    """

    keys: Mapping[str, Tenant] = field(default_factory=dict)
    admin_key: str | None = None

    def __post_init__(self) -> None:
        self._tenants = {_digest(k): t for k, t in self.keys.items()}
        self._admin = _digest(self.admin_key) if self.admin_key else None

    @property
    def open(self) -> bool:
        """True when no API key is configured: every caller is the "default" tenant."""
        return not self._tenants

    def tenant(self, authorization: str | None) -> Tenant:
        """The caller's tenant; raises the 401 APIError for a missing or unknown key."""
        if self.open:
            return Tenant(DEFAULT_TENANT)
        key = bearer_token(authorization)
        if key is None:
            raise unauthorized("You didn't provide an API key (Authorization: Bearer KEY).")
        tenant = self._tenants.get(_digest(key))
        if tenant is None:
            raise unauthorized()
        return tenant

    def is_admin(self, authorization: str | None) -> bool:
        """Admin endpoints are open when no key of any kind is configured."""
        if self._admin is None:
            return self.open
        key = bearer_token(authorization)
        return key is not None and hmac.compare_digest(_digest(key), self._admin)

    def require_admin(self, authorization: str | None) -> None:
        if not self.is_admin(authorization):
            raise unauthorized("This endpoint needs the admin key.")


def bearer_token(authorization: str | None) -> str | None:
    if not authorization:
        return None
    scheme, _, token = authorization.partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token:
        return None
    return token
