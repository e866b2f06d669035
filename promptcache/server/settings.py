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

from promptcache.cache.policies import POLICIES
from promptcache.server.http_limits import HttpLimits
from promptcache.server.limits import LIMIT_NAMES, Limits
from promptcache.server.tenants import UNNAMED, KeyRing, Tenant, load_keys_file, name_plain_keys, tenant_quotas

if TYPE_CHECKING:
    from promptcache.cache.config import CacheConfig
    from promptcache.tiers.config import TierConfig

EVICTION_POLICIES = tuple(POLICIES)  # one source: the cache's policy table
ISOLATE_BY = ("user",)
LOG_FORMATS = ("text", "json")
LOG_LEVELS = ("debug", "info", "warning", "error", "critical")
MAX_MODEL_NAME_CHARS = 256


@dataclass(frozen=True)
class ServerSettings:
    host: str = "127.0.0.1"
    port: int = 8000
    model: str | None = None  # None: the embedded SmolLM2-135M-Instruct
    # The names requests may give the model, every one listed by /v1/models; replies name the first.
    # Empty: the model's own name (the file or directory's, "SmolLM2-135M-Instruct" embedded).
    served_model_names: tuple[str, ...] = ()
    device: str = "auto"
    dtype: str = "auto"
    quantize: str | None = None  # int8, int4, int8+head, int4+head: weight-only decode (CPU, bfloat16; model/quant.py)
    deterministic: bool = True  # batch-invariant decoding (docs/design.md)
    decode_threads: int | None = None  # CPU threads of a decode step (None: by model size, model/threads.py)
    share_kv_across_numerics: bool = False  # reuse KV from other kernel families (a hit may then change output)
    # Prefix cache (see promptcache.cache.config.CacheConfig).
    cache_enabled: bool = True
    cache_mb: float = 256.0
    block_size: int = 16
    eviction_policy: str = "lru"
    default_ttl_s: float | None = None
    min_prefix_blocks: int = 0
    admit_after: int = 1
    # Fair shares (None: the cache's own defaults, see docs/cache.md): the quota of a tenant
    # given none, and the shares of a quota and of the cache that pins may take.
    default_tenant_share: float | None = None
    pin_quota_fraction: float | None = None
    max_pinned_fraction: float | None = None
    # Scheduling.
    max_batch_size: int = 8
    prefill_chunk: int = 512
    max_queue: int = 64  # waiting (not yet running) requests; past it: 429
    # Queued + running requests of one tenant; past it: 429 with Retry-After. None: the default
    # of `tenant_request_limit` (docs/security.md).
    max_requests_per_tenant: int | None = None
    default_max_tokens: int = 1024  # when a request names none (clipped to the context)
    render_threads: int = 2  # chat renders and tokenizations running at once (off the event loop)
    limits: Limits = field(default_factory=Limits)
    # The HTTP layer (server/http_limits.py, docs/security.md): head size, head and body deadlines,
    # open connections, keep-alive.
    http_max_header_bytes: int = HttpLimits.max_header_bytes
    http_header_timeout_s: float = HttpLimits.header_timeout_s
    http_body_timeout_s: float = HttpLimits.body_timeout_s
    http_max_connections: int = HttpLimits.max_connections
    http_keep_alive_s: float = HttpLimits.keep_alive_s
    # Access. Keys are secrets: kept out of repr, and turned into digests by `key_ring()`.
    api_keys: Mapping[str, Tenant] = field(default_factory=dict, repr=False)
    admin_key: str | None = field(default=None, repr=False)
    metrics_key: str | None = field(default=None, repr=False)
    metrics_public: bool = False  # /metrics without a key even when keys are configured
    allowed_hosts: tuple[str, ...] = ()  # Host names accepted besides loopback ones
    allowed_origins: tuple[str, ...] = ()  # browser origins allowed to call the API (CORS)
    isolate_by: str | None = None  # "user": the request's user field salts its cache namespace
    # A request field the server does not know is named in x-ignored-fields; this makes it a 400.
    reject_unknown_fields: bool = False
    # Stored Responses-API responses (previous_response_id): a SQLite file, or ":memory:".
    responses_db: str = "~/.cache/promptcache/responses.sqlite3"
    responses_ttl_s: float = 30 * 86_400.0
    # Sessions, cached contents and pins (server/core/records.py): a SQLite file, or ":memory:";
    # in Redis instead when redis_url is set.
    records_db: str = "~/.cache/promptcache/records.sqlite3"
    # Re-pin every live session, cached content and admin pin of this model at start-up, before
    # serving (sessions and cached contents are otherwise re-pinned on first use).
    restore_retained: bool = False
    # The prompt registry (server/prompts/backends.py): a SQLite path, redis://..., or
    # mlflow+http://HOST:PORT; None: Redis when redis_url is set, else a SQLite file. It may
    # hold a password: kept out of repr. warm_prompts: re-warm every warm prompt at start-up.
    prompt_store: str | None = field(default=None, repr=False)
    warm_prompts: bool = False
    # Logging: prompt text is never logged unless log_prompts is set.
    log_prompts: bool = False
    log_level: str = "info"
    log_format: str = "text"  # "json": one JSON object per line
    # Request log for `promptcache analyze` (server/request_log.py): JSON lines, rotated by size;
    # request bodies (prompt text) only with request_log_bodies.
    request_log: str | None = None
    request_log_bodies: bool = False
    request_log_max_mb: float = 100.0
    request_log_backups: int = 5
    # Lower KV tiers under the memory cache (docs/tiers.md); memory only by default. The Redis
    # URL may hold a password and the tier key is a secret: both are kept out of repr.
    disk_cache: str | None = None
    disk_cache_gb: float = 10.0
    redis_url: str | None = field(default=None, repr=False)
    tier_key: str | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        choices = {"eviction_policy": EVICTION_POLICIES, "log_format": LOG_FORMATS, "log_level": LOG_LEVELS}
        for name, allowed in choices.items():
            if getattr(self, name) not in allowed:
                raise ValueError(f"{name} must be one of {', '.join(allowed)}")
        if self.isolate_by is not None and self.isolate_by not in ISOLATE_BY:
            raise ValueError(f"isolate_by must be one of {', '.join(ISOLATE_BY)}")
        if any(not 0 < len(n) <= MAX_MODEL_NAME_CHARS or not n.isprintable() for n in self.served_model_names) \
                or len(set(self.served_model_names)) != len(self.served_model_names):
            raise ValueError(f"served model names must be distinct, 1..{MAX_MODEL_NAME_CHARS} printable characters")
        if not 0 < self.port < 65536:
            raise ValueError("port must be in 1..65535")
        if self.disk_cache or self.redis_url or self.tier_key:
            self.tier_config()  # a bad URL, size or key fails at start, in one line
        if self.cache_mb < 0 or self.min_prefix_blocks < 0:
            raise ValueError("cache_mb and min_prefix_blocks must be >= 0")
        from promptcache.server.prompts.backends import check_spec

        check_spec(self.prompt_store)  # a malformed --prompt-store fails at start, in one line
        self.http_limits()  # a bad HTTP limit fails at start, in one line
        if self.responses_ttl_s <= 0:
            raise ValueError("responses_ttl_s must be positive")
        # Each of these at 0 would refuse every request (max_queue = 0 turned every one into a 429).
        for name in ("block_size", "max_batch_size", "prefill_chunk", "admit_after", "default_max_tokens",
                     "max_queue", "render_threads"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1 (0 would refuse every request)")
        if self.request_log_max_mb <= 0 or self.request_log_backups < 0:
            raise ValueError("request_log_max_mb must be positive and request_log_backups >= 0")
        if self.decode_threads is not None and self.decode_threads < 1:
            raise ValueError("decode_threads must be at least 1")
        if self.max_requests_per_tenant is not None and self.max_requests_per_tenant < 1:
            raise ValueError("max_requests_per_tenant must be at least 1 (0 would refuse every request)")
        for tenant in self.api_keys.values():
            if not tenant.name or len(tenant.name) > self.limits.max_tenant_chars or not tenant.name.isprintable():
                raise ValueError(
                    f"tenant names must be 1..{self.limits.max_tenant_chars} printable characters"
                )

    def tenant_request_limit(self, open_server: bool) -> int | None:
        """Requests one tenant may have queued or running at once. Unset, it is
        max(2, max_queue // 4) with keys (16 with the default queue of 64), so that at least
        four tenants can fill the queue together; an open server has one tenant, which the
        queue alone bounds (None: no limit of its own)."""
        if self.max_requests_per_tenant is not None:
            return self.max_requests_per_tenant
        return None if open_server else max(2, self.max_queue // 4)

    def http_limits(self) -> HttpLimits:
        return HttpLimits(**{f.name: getattr(self, f"http_{f.name}") for f in fields(HttpLimits)})

    def key_ring(self) -> KeyRing:
        """The keys as digests; the server keeps only this (see `create_app`)."""
        return KeyRing(self.api_keys, admin_key=self.admin_key, metrics_key=self.metrics_key)

    def without_secrets(self) -> ServerSettings:
        """These settings with every key removed (the key ring keeps their digests)."""
        return replace(self, api_keys={}, admin_key=None, metrics_key=None)

    def tier_config(self) -> TierConfig:
        """The disk/Redis tiers to put under the prefix cache (none: memory only)."""
        from promptcache.tiers.config import TierConfig

        if (self.disk_cache or self.redis_url) and not self.cache_enabled:
            raise ValueError("--disk-cache and --redis-url need the prefix cache (drop --no-cache)")
        if self.tier_key and not (self.disk_cache or self.redis_url):
            raise ValueError("--tier-key encrypts the disk and Redis tiers: give --disk-cache or --redis-url")
        return TierConfig(disk_dir=self.disk_cache, disk_gb=self.disk_cache_gb, redis_url=self.redis_url,
                          tier_key=self.tier_key)

    def cache_config(self) -> CacheConfig | None:
        """The engine's CacheConfig, or None when prefix caching is switched off."""
        from promptcache.cache.config import CacheConfig

        if not self.cache_enabled:
            return None
        shares = {name: getattr(self, name) for name in _SHARE_NAMES if getattr(self, name) is not None}
        if not self.api_keys:  # one tenant ("default"): the cache's default share would halve it
            shares.setdefault("default_tenant_share", 1.0)
        return CacheConfig(
            **shares,
            block_size=self.block_size,
            max_bytes=int(self.cache_mb * 2**20),
            policy=self.eviction_policy,
            default_ttl_s=self.default_ttl_s,
            min_prefix_blocks=self.min_prefix_blocks,
            admit_after=self.admit_after,
            tenant_quotas=tenant_quotas(self.api_keys.values()),
        )


_SHARE_NAMES = ("default_tenant_share", "pin_quota_fraction", "max_pinned_fraction")
_FIELD_NAMES = {f.name for f in fields(ServerSettings)} - {"limits"} | LIMIT_NAMES


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
            k: Tenant(e.get("tenant") or UNNAMED, quota(e)) if isinstance(e, Mapping) else Tenant(str(e))
            for k, e in value.items()
        }
    raise ValueError("api_keys must be a list of keys or a table key -> {tenant, quota_mb}")


def plain_keys(keys: list[str]) -> dict[str, Tenant]:
    """Keys given on the command line: each its own tenant, named by `name_plain_keys`."""
    return {k: Tenant(UNNAMED) for k in keys}


def build_settings(
    overrides: Mapping[str, Any],
    *,
    config_file: str | Path | None = None,
    api_keys: list[str] | None = None,
    keys_file: str | Path | None = None,
) -> ServerSettings:
    """Merge defaults <- config file <- overrides (None values in overrides are 'not given').

    Keys from every source are merged rather than replaced: a config file's keys and a
    `--api-key` on the command line both stay valid. Keys without a tenant name are named
    key-1, key-2, ... in the order given (files first), never after the key itself.
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
    keys = name_plain_keys(keys)
    tenant_quotas(keys.values())
    limits = {name: values.pop(name) for name in list(values) if name in LIMIT_NAMES}
    for name in ("allowed_hosts", "allowed_origins", "served_model_names"):
        if name in values:
            values[name] = tuple(values[name])
    return replace(ServerSettings(), **values, limits=Limits(**limits), api_keys=keys)
