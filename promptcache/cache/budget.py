"""Byte accounting: the global budget, per-tenant quotas and fair shares.

Every block costs the same `block_nbytes` (the engine's KV block size), so the budget is kept in
blocks and reported in bytes. The budget owns only counts; which block to drop is the eviction
queue's call, and which tenants an insert may take blocks from is `room.py`'s.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

from promptcache.cache.counts import TenantCounts


def capacity_blocks(max_bytes: int, max_blocks: int | None, block_nbytes: int) -> int:
    """How many blocks of `block_nbytes` a cache of `max_bytes` (and at most `max_blocks`) holds.

    The one place capacity is computed: the budget counts against it and the engine sizes its
    block pool by it, so the two can never disagree."""
    if block_nbytes < 1:
        raise ValueError("block_nbytes must be at least 1")
    capacity = max_bytes // block_nbytes
    return capacity if max_blocks is None else min(capacity, max_blocks)


def share_of(fraction: float, blocks: int) -> int:
    """floor(fraction * blocks), immune to float noise such as 0.29 * 100 = 28.999999999999996."""
    return math.floor(round(fraction * blocks, 9))


class Budget(TenantCounts):
    """Blocks held, globally and per tenant, against max_bytes, max_blocks and tenant quotas.

    Every tenant has a quota: its entry in `quotas`, or else `default_share` of the capacity.
    """

    def __init__(self, max_bytes: int, max_blocks: int | None, block_nbytes: int, quotas: Mapping[str, int],
                 default_share: float = 1.0) -> None:
        self.capacity = capacity_blocks(max_bytes, max_blocks, block_nbytes)
        self.block_nbytes = block_nbytes
        self._quota_blocks = {tenant: quota // block_nbytes for tenant, quota in quotas.items()}
        self.default_quota = share_of(default_share, self.capacity)
        super().__init__()

    def held(self, tenant: str) -> int:
        return self.tenant_blocks.get(tenant, 0)

    def bytes_held(self, tenant: str | None = None) -> int:
        blocks = self.blocks if tenant is None else self.tenant_blocks.get(tenant, 0)
        return blocks * self.block_nbytes

    def quota(self, tenant: str) -> int:
        """The tenant's cap in blocks: its configured quota, else the default share."""
        return self._quota_blocks.get(tenant, self.default_quota)

    def too_large(self, tenant: str, blocks: int) -> str | None:
        """Why `blocks` new blocks could never fit, even in an empty cache; None if they could."""
        if blocks > self.capacity:
            return f"{blocks} new blocks exceed the cache capacity of {self.capacity} blocks"
        quota = self.quota(tenant)
        if blocks > quota:
            return f"{blocks} new blocks exceed tenant {tenant!r}'s quota of {quota} blocks"
        return None

    def room(self, tenant: str) -> int:
        """How many more blocks this tenant may add now."""
        room = min(self.capacity - self.blocks, self.quota(tenant) - self.tenant_blocks.get(tenant, 0))
        return max(0, room)

    def fair_share(self, inserter: str) -> float:
        """capacity / tenants holding blocks, `inserter` counted as holding (it is about to)."""
        return self.capacity / (len(self.tenant_blocks) + (inserter not in self.tenant_blocks))

    def over_share(self, tenant: str, inserter: str, pending: int) -> bool:
        """Whether `tenant` holds more than its fair share, counting `pending` blocks for `inserter`."""
        held = self.tenant_blocks.get(tenant, 0) + (pending if tenant == inserter else 0)
        return held > self.fair_share(inserter)

    def over_fair_share(self, inserter: str, pending: int) -> list[str]:
        """Tenants over their fair share, counting `pending` blocks for `inserter`.

        Under global pressure an insert may evict only these tenants' blocks and its own, so a
        tenant within its share never loses blocks to another tenant's flood.
        """
        fair = self.fair_share(inserter)
        over = [t for t, held in self.tenant_blocks.items() if held + (pending if t == inserter else 0) > fair]
        if inserter not in self.tenant_blocks and pending > fair:
            over.append(inserter)
        return over
