"""Where prompt-cache hits came from, per tenant and per storage tier.

Every finished request adds its cached tokens under (tenant, tier): "memory" for blocks that
were in memory, "disk" or "redis" for blocks the lower tiers supplied (promoted into memory
just before the read). /v1/cache/stats shows the totals (a tenant sees only its own row) and
the metrics export them as `promptcache_cached_tokens_by_tier` and
`promptcache_tenant_cached_tokens`. Tenants come from the configured keys and tiers from the
configuration, so the table is bounded.
"""

from __future__ import annotations

import threading

from prometheus_client import Counter

TIERS = ("memory", "disk", "redis")


def tier_counts(cached: int, cached_tiers: dict[str, int] | None) -> dict[str, int]:
    """A hit's tokens by tier, every usual tier named (0 where none came from it)."""
    counts = dict.fromkeys(TIERS, 0)
    counts.update(cached_tiers if cached_tiers else ({"memory": cached} if cached else {}))
    return counts


class HitSources:
    def __init__(self, registry=None) -> None:
        self._counts: dict[str, dict[str, int]] = {}
        self._lock = threading.Lock()
        self._by_tier = self._by_tenant = None
        if registry is not None:
            self._by_tier = Counter("promptcache_cached_tokens_by_tier",
                                    "Prompt tokens read from the cache, by the tier that held them", ["tier"],
                                    registry=registry)
            self._by_tenant = Counter("promptcache_tenant_cached_tokens",
                                      "Prompt tokens read from the cache, by tenant and tier", ["tenant", "tier"],
                                      registry=registry)

    def record(self, tenant: str, cached: int, cached_tiers: dict[str, int] | None) -> None:
        if not cached:
            return
        counts = {k: v for k, v in tier_counts(cached, cached_tiers).items() if v}
        with self._lock:
            row = self._counts.setdefault(tenant, {})
            for tier, n in counts.items():
                row[tier] = row.get(tier, 0) + n
        for tier, n in counts.items():
            if self._by_tier is not None:
                self._by_tier.labels(tier).inc(n)
                self._by_tenant.labels(tenant, tier).inc(n)

    def snapshot(self, tenant: str | None = None) -> dict:
        """{"by_tier": {tier: tokens}, "by_tenant": {tenant: {tier: tokens}}}; only `tenant`'s
        row (and its own totals) when given."""
        with self._lock:
            rows = {t: dict(r) for t, r in self._counts.items() if tenant is None or t == tenant}
        by_tier = dict.fromkeys(TIERS, 0)
        for row in rows.values():
            for tier, n in row.items():
                by_tier[tier] = by_tier.get(tier, 0) + n
        return {"by_tier": by_tier, "by_tenant": rows}
