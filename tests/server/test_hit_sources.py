"""Cached tokens per tenant and tier: each tenant's row, the totals, the metrics, and a
tenant's own view that names no other tenant."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, generate_latest

from promptcache.server.hit_sources import HitSources, tier_counts


def test_hits_add_up_per_tenant_and_tier_and_a_tenant_sees_only_its_own():
    registry = CollectorRegistry()
    hits = HitSources(registry)
    hits.record("alice", 32, {"memory": 16, "disk": 16})
    hits.record("alice", 16, None)  # an engine that reports no split: all from memory
    hits.record("bob", 48, {"redis": 48})
    hits.record("bob", 0, None)
    assert hits.snapshot() == {"by_tier": {"memory": 32, "disk": 16, "redis": 48},
                               "by_tenant": {"alice": {"memory": 32, "disk": 16}, "bob": {"redis": 48}}}
    assert hits.snapshot("alice") == {"by_tier": {"memory": 32, "disk": 16, "redis": 0},
                                      "by_tenant": {"alice": {"memory": 32, "disk": 16}}}
    text = generate_latest(registry).decode()
    assert 'promptcache_cached_tokens_by_tier_total{tier="redis"} 48.0' in text
    assert 'promptcache_tenant_cached_tokens_total{tenant="alice",tier="disk"} 16.0' in text
    assert tier_counts(0, None) == {"memory": 0, "disk": 0, "redis": 0}
