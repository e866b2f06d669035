"""Prefix-cache counters. The cache updates one live `CacheStats`; readers get snapshots."""

from __future__ import annotations

import copy
from dataclasses import asdict, dataclass, field

EVICTION_REASONS = ("policy", "ttl", "flush", "quota", "removed")


@dataclass
class CacheStats:
    """What the cache did since it was built.

    lookups: `match` calls; hits: those that found at least one block.
    hit_tokens / miss_tokens: prompt tokens served from the cache / not (a partial last block
    and anything past `max_blocks` count as missed).
    insertions: blocks stored; skipped_blocks: blocks an insert did not store (not admitted,
    too large, no room, below the minimum prefix).
    evictions: blocks dropped, by reason (policy, ttl, flush, quota, removed).
    bytes_held / blocks_held / tenant_bytes: holdings when the snapshot was taken.
    pinned_bytes / tenant_pinned_bytes: bytes of blocks carrying a pin, in all and per tenant.
    """

    lookups: int = 0
    hits: int = 0
    hit_tokens: int = 0
    miss_tokens: int = 0
    insertions: int = 0
    skipped_blocks: int = 0
    evictions: dict[str, int] = field(default_factory=lambda: dict.fromkeys(EVICTION_REASONS, 0))
    bytes_held: int = 0
    blocks_held: int = 0
    tenant_bytes: dict[str, int] = field(default_factory=dict)
    pinned_bytes: int = 0
    tenant_pinned_bytes: dict[str, int] = field(default_factory=dict)

    @property
    def token_hit_ratio(self) -> float:
        """Share of looked-up prompt tokens that came from the cache (0.0 before any lookup)."""
        total = self.hit_tokens + self.miss_tokens
        return self.hit_tokens / total if total else 0.0

    @property
    def total_evictions(self) -> int:
        return sum(self.evictions.values())

    def snapshot(self) -> CacheStats:
        """An independent copy: later cache activity does not change it."""
        return copy.deepcopy(self)

    def as_dict(self) -> dict:
        out = asdict(self)
        out["token_hit_ratio"] = self.token_hit_ratio
        return out
