"""Eviction policies, picked by name from `POLICIES`."""

from __future__ import annotations

from promptcache.cache.policies.base import EvictionPolicy
from promptcache.cache.policies.lfu import LFU
from promptcache.cache.policies.lru import LRU
from promptcache.cache.policies.tier import TIER_RANK, RoleTier
from promptcache.cache.policies.ttl import SoonestExpiry

POLICIES: dict[str, type[EvictionPolicy]] = {
    "lru": LRU,
    "lfu": LFU,
    "ttl": SoonestExpiry,
    "tier": RoleTier,
}

ROLES = frozenset(TIER_RANK)


def make_policy(name: str) -> EvictionPolicy:
    try:
        return POLICIES[name]()
    except KeyError:
        raise ValueError(f"unknown eviction policy {name!r}; choose from {sorted(POLICIES)}") from None


__all__ = ["POLICIES", "ROLES", "EvictionPolicy", "LFU", "LRU", "RoleTier", "SoonestExpiry", "make_policy"]
