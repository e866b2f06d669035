"""Which lower tiers to run, from the server's options (`--disk-cache`, `--redis-url`, ...)."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

from promptcache.tiers.breaker import CircuitBreaker
from promptcache.tiers.codec import Cipher
from promptcache.tiers.hierarchy import TierStack
from promptcache.tiers.planner import Planner
from promptcache.tiers.redis_store import SCHEMES
from promptcache.tiers.tier import Tier
from promptcache.tiers.write_behind import WriteBehind


@dataclass(frozen=True)
class TierConfig:
    disk_dir: str | None = None
    disk_gb: float = 10.0
    redis_url: str | None = field(default=None, repr=False)  # may hold a password
    tier_key: str | None = field(default=None, repr=False)  # 64 hex digits: AES-GCM at rest
    ttl_s: float = 3600.0  # default TTL of a block in a lower tier (a request's retention wins)
    timeout_s: float = 0.1  # per Redis operation
    retries: int = 2  # per Redis operation, connection errors and timeouts only
    breaker_failures: int = 5
    breaker_recovery_s: float = 5.0
    write_queue_blocks: int = 4096
    redis_prefix: bytes = b"promptcache:kv:"

    def __post_init__(self) -> None:
        if self.disk_gb <= 0 or self.ttl_s <= 0 or self.timeout_s <= 0:
            raise ValueError("disk_cache_gb, the tier TTL and the timeout must be positive")
        if self.redis_url is not None and not self.redis_url.startswith(SCHEMES):
            raise ValueError(f"the Redis URL must start with one of {', '.join(SCHEMES)}")
        if self.tier_key is not None:
            Cipher.from_hex(self.tier_key)  # refuse a malformed key at start, not at first use

    @property
    def enabled(self) -> bool:
        return bool(self.disk_dir or self.redis_url)


def build_tiers(config: TierConfig, block_size: int, clock: Callable[[], float] = time.monotonic) -> TierStack | None:
    """The configured tiers (disk nearest, then Redis), or None for memory only."""
    if not config.enabled:
        return None
    cipher = Cipher.from_hex(config.tier_key) if config.tier_key else None
    tiers = []
    if config.disk_dir:
        from promptcache.tiers.disk import DiskStore

        store = DiskStore(config.disk_dir, int(config.disk_gb * 2**30))
        tiers.append(Tier(store, cipher=cipher, ttl_s=config.ttl_s, clock=clock))
    if config.redis_url:
        from promptcache.tiers.redis_store import RedisStore

        store = RedisStore(config.redis_url, prefix=config.redis_prefix, timeout_s=config.timeout_s,
                           retries=config.retries)
        breaker = CircuitBreaker(failures=config.breaker_failures, slow_s=config.timeout_s,
                                 recovery_s=config.breaker_recovery_s, clock=clock)
        tiers.append(Tier(store, breaker=breaker, cipher=cipher, ttl_s=config.ttl_s, clock=clock))
    return TierStack(tiers, WriteBehind(cipher, config.write_queue_blocks), Planner(block_size), clock=clock)
