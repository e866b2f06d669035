"""A small, bounded record of recent evictions per tenant, keyed by block key, so that a miss
can be explained: "evicted 42 s ago by the lru policy" instead of "not cached".

It is an eviction listener (`PrefixCache.add_evict_listener`): it hears of every dropped block
with its key, tenant and reason, and keeps the newest `per_tenant` of each tenant's (oldest
forgotten first), for at most `max_tenants` tenants (the longest-quiet forgotten first). A
tenant's record holds only its own keys, and a key names its namespace (model, tenant, salt),
so a lookup never learns of another tenant's blocks. Memory is bounded by
per_tenant x max_tenants entries of a few dozen bytes; pure Python, no I/O.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

from promptcache.cache.eviction import EvictedBlock

# Why a block went, in words (the `reason` an eviction carries).
REASONS = {
    "policy": "memory pressure",
    "quota": "the tenant's quota",
    "ttl": "its time-to-live",
    "flush": "a cache flush",
}


@dataclass(frozen=True)
class Eviction:
    at: float  # wall-clock seconds (time.time) when the block was dropped
    reason: str  # policy, quota, ttl, flush, ...
    policy: str  # the eviction policy that ordered the victims (lru, lfu, tier, ttl)

    def describe(self, now: float) -> str:
        why = REASONS.get(self.reason, self.reason)
        ago = max(0.0, now - self.at)
        if self.reason in ("policy", "quota"):
            return f"evicted {ago:.0f} s ago by the {self.policy} policy ({why})"
        return f"evicted {ago:.0f} s ago by {why}"


class EvictionRecord:
    def __init__(self, policy: str, per_tenant: int = 4096, max_tenants: int = 256,
                 clock: Callable[[], float] = time.time) -> None:
        self.policy = policy
        self.per_tenant = per_tenant
        self.max_tenants = max_tenants
        self.clock = clock
        self._tenants: OrderedDict[str, OrderedDict[object, Eviction]] = OrderedDict()

    def __call__(self, block: EvictedBlock) -> None:
        """The listener: remember one dropped block."""
        record = self._tenants.get(block.tenant)
        if record is None:
            record = self._tenants[block.tenant] = OrderedDict()
            while len(self._tenants) > self.max_tenants:
                self._tenants.popitem(last=False)
        else:
            self._tenants.move_to_end(block.tenant)
        record[block.key] = Eviction(self.clock(), block.reason, self.policy)
        record.move_to_end(block.key)
        while len(record) > self.per_tenant:
            record.popitem(last=False)

    def lookup(self, tenant: str, key: object) -> Eviction | None:
        record = self._tenants.get(tenant)
        return record.get(key) if record is not None else None

    def __len__(self) -> int:
        return sum(len(r) for r in self._tenants.values())
