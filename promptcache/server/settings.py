"""The server's settings and where they come from.

Precedence, highest first: a command-line option, its PROMPTCACHE_* environment variable
(typer reads both, in `promptcache.cli.serve`), the `--config` TOML file, the defaults below.
Only this module knows the field names of the TOML file, so a typo there fails loudly at start
instead of being ignored.
"""

from __future__ import annotations

import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from promptcache.server.tenants import KeyRing, Tenant, load_keys_file, tenant_for_plain_key, tenant_quotas

if TYPE_CHECKING:
    from promptcache.cache.config import CacheConfig

EVICTION_POLICIES = ("lru", "lfu", "ttl", "tier")


@dataclass(frozen=True)
class ServerSettings:
    host: str = "127.0.0.1"
    port: int = 8000
    model: str | None = None  # None: the embedded SmolLM2-135M-Instruct
    device: str = "auto"
    dtype: str = "auto"
    quantize: str | None = None  # "int8": weight-only int8 decode (CPU, bfloat16)
    # Prefix cache (see promptcache.cache.config.CacheConfig).
    cache_enabled: bool = True
    cache_mb: float = 256.0
    block_size: int = 16
    eviction_policy: str = "lru"
    default_ttl_s: float | None = None
    min_prefix_blocks: int = 0
    admit_after: int = 1
    # Scheduling.
    max_batch_size: int = 8
    prefill_chunk: int = 512
    max_queue: int = 64  # waiting (not yet running) requests; past it: 429
    default_max_tokens: int = 1024  # when a request names none (clipped to the context)
    # Access.
    api_keys: Mapping[str, Tenant] = field(default_factory=dict)
    admin_key: str | None = None
    # Logging: prompt text is never logged unless this is set.
    log_prompts: bool = False
    log_level: str = "info"

    def __post_init__(self) -> None:
        if self.eviction_policy not in EVICTION_POLICIES:
            raise ValueError(f"eviction_policy must be one of {', '.join(EVICTION_POLICIES)}")
        if not 0 < self.port < 65536:
            raise ValueError("port must be in 1..65535")
        for name in ("cache_mb",):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0")
        for name in ("block_size", "max_batch_size", "prefill_chunk", "admit_after", "default_max_tokens"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1")
        if self.max_queue < 0 or self.min_prefix_blocks < 0:
            raise ValueError("max_queue and min_prefix_blocks must be >= 0")

    def key_ring(self) -> KeyRing:
        return KeyRing(dict(self.api_keys), self.admin_key)

    def cache_config(self) -> CacheConfig | None:
        """The engine's CacheConfig, or None when prefix caching is switched off."""
        from promptcache.cache.config import CacheConfig

        if not self.cache_enabled:
            return None
        return CacheConfig(
            block_size=self.block_size,
            max_bytes=int(self.cache_mb * 2**20),
            policy=self.eviction_policy,
            default_ttl_s=self.default_ttl_s,
            min_prefix_blocks=self.min_prefix_blocks,
            admit_after=self.admit_after,
            tenant_quotas=tenant_quotas(self.api_keys.values()),
        )


_FIELD_NAMES = {f.name for f in fields(ServerSettings)}


def load_config_file(path: str | Path) -> dict[str, Any]:
    """Read a TOML config whose keys are ServerSettings field names (dashes allowed).

    `api_keys` may be a list of plain keys or a table key -> {tenant, quota_mb}; `keys_file`
    names a keys file to merge in.
    """
    path = Path(path)
    data = tomllib.loads(path.read_text())
    data = data.get("server", data)  # a [server] table or top-level keys
    values: dict[str, Any] = {}
    for raw_name, value in data.items():
        name = raw_name.replace("-", "_")
        if name == "keys_file":
            values.setdefault("api_keys", {}).update(load_keys_file(path.parent / value))
        elif name == "api_keys":
            values.setdefault("api_keys", {}).update(_keys_from_config(value))
        elif name in _FIELD_NAMES:
            values[name] = value
        else:
            raise ValueError(f"{path}: unknown setting {raw_name!r}")
    return values


def _keys_from_config(value: Any) -> dict[str, Tenant]:
    if isinstance(value, list):
        return plain_keys(value)
    if isinstance(value, Mapping):
        quota = lambda e: None if e.get("quota_mb") is None else int(e["quota_mb"] * 2**20)  # noqa: E731
        return {
            k: Tenant(e.get("tenant") or tenant_for_plain_key(k), quota(e))
            if isinstance(e, Mapping)
            else Tenant(str(e))
            for k, e in value.items()
        }
    raise ValueError("api_keys must be a list of keys or a table key -> {tenant, quota_mb}")


def plain_keys(keys: list[str]) -> dict[str, Tenant]:
    """Keys given on the command line: each its own tenant."""
    return {k: Tenant(tenant_for_plain_key(k)) for k in keys}


def build_settings(
    overrides: Mapping[str, Any],
    *,
    config_file: str | Path | None = None,
    api_keys: list[str] | None = None,
    keys_file: str | Path | None = None,
) -> ServerSettings:
    """Merge defaults <- config file <- overrides (None values in overrides are 'not given').

    Keys from every source are merged rather than replaced: a config file's keys and a
    `--api-key` on the command line both stay valid.
    """
    values: dict[str, Any] = load_config_file(config_file) if config_file else {}
    keys: dict[str, Tenant] = dict(values.pop("api_keys", {}))
    if keys_file:
        keys.update(load_keys_file(keys_file))
    if api_keys:
        keys.update(plain_keys(api_keys))
    for name, value in overrides.items():
        if name not in _FIELD_NAMES:
            raise ValueError(f"unknown setting {name!r}")
        if value is not None:
            values[name] = value
    tenant_quotas(keys.values())
    return replace(ServerSettings(), **values, api_keys=keys)
