"""Prefix-cache settings, fixed for the life of a cache."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType


@dataclass(frozen=True)
class CacheConfig:
    """Limits and policies of one `PrefixCache`.

    block_size: tokens per block; only full blocks are cached.
    max_bytes / max_blocks: the global budget (every block costs the engine's `block_nbytes`).
    policy: eviction policy name, a key of `promptcache.cache.policies.POLICIES`.
    default_ttl_s: time-to-live of inserted blocks when the insert names none (None: no expiry).
    min_prefix_blocks: prompts with fewer full blocks than this are not inserted.
    admit_after: a new block is stored only once its key has been offered this many times.
    tenant_quotas: tenant -> byte cap.
    default_tenant_share: the cap of every tenant not named in tenant_quotas, as a share of the
        cache capacity, in (0, 1]. 0.5 by default, so no tenant can take the whole cache; a
        deployment with a single tenant may set 1.0.
    pin_quota_fraction: a tenant may pin at most this share of its quota, in [0, 1].
    max_pinned_fraction: all tenants together may pin at most this share of the capacity, in [0, 1].
    """

    block_size: int = 16
    max_bytes: int = 256 * 2**20
    max_blocks: int | None = None
    policy: str = "lru"
    default_ttl_s: float | None = None
    min_prefix_blocks: int = 0
    admit_after: int = 1
    tenant_quotas: Mapping[str, int] = field(default_factory=dict)
    default_tenant_share: float = 0.5
    pin_quota_fraction: float = 0.5
    max_pinned_fraction: float = 0.5

    def __post_init__(self) -> None:
        # Frozen all the way down: a caller's later edit to its dict must not change the cache.
        object.__setattr__(self, "tenant_quotas", MappingProxyType(dict(self.tenant_quotas)))
        if self.block_size < 1:
            raise ValueError("block_size must be at least 1")
        if self.max_bytes < 0:
            raise ValueError("max_bytes must be >= 0")
        if self.max_blocks is not None and self.max_blocks < 0:
            raise ValueError("max_blocks must be >= 0")
        if self.default_ttl_s is not None and self.default_ttl_s <= 0:
            raise ValueError("default_ttl_s must be positive or None")
        if self.min_prefix_blocks < 0:
            raise ValueError("min_prefix_blocks must be >= 0")
        if self.admit_after < 1:
            raise ValueError("admit_after must be at least 1")
        if any(quota < 0 for quota in self.tenant_quotas.values()):
            raise ValueError("tenant quotas must be >= 0")
        if not 0 < self.default_tenant_share <= 1:  # also refuses NaN
            raise ValueError("default_tenant_share must be in (0, 1]")
        for name in ("pin_quota_fraction", "max_pinned_fraction"):
            if not 0 <= getattr(self, name) <= 1:
                raise ValueError(f"{name} must be in [0, 1]")
