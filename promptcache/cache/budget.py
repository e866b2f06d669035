"""Byte accounting: the global budget, per-tenant quotas and fair shares.

Every block costs the same `block_nbytes` (the engine's KV block size), so the budget is kept in
blocks and reported in bytes. The budget owns only counts; which block to drop is the eviction
queue's call.
"""

from __future__ import annotations

from collections.abc import Mapping


class Budget:
    """Blocks held, globally and per tenant, against max_bytes, max_blocks and tenant quotas."""

    def __init__(self, max_bytes: int, max_blocks: int | None, block_nbytes: int, quotas: Mapping[str, int]) -> None:
        if block_nbytes < 1:
            raise ValueError("block_nbytes must be at least 1")
        self.block_nbytes = block_nbytes
        capacity = max_bytes // block_nbytes
        self.capacity = capacity if max_blocks is None else min(capacity, max_blocks)
        self._quota_blocks = {tenant: quota // block_nbytes for tenant, quota in quotas.items()}
        self.blocks = 0
        self.tenant_blocks: dict[str, int] = {}

    def add(self, tenant: str, blocks: int = 1) -> None:
        if blocks:
            self.blocks += blocks
            self.tenant_blocks[tenant] = self.tenant_blocks.get(tenant, 0) + blocks

    def remove(self, tenant: str) -> None:
        self.blocks -= 1
        left = self.tenant_blocks[tenant] - 1
        if left:
            self.tenant_blocks[tenant] = left
        else:
            del self.tenant_blocks[tenant]

    def bytes_held(self, tenant: str | None = None) -> int:
        blocks = self.blocks if tenant is None else self.tenant_blocks.get(tenant, 0)
        return blocks * self.block_nbytes

    def quota(self, tenant: str) -> int | None:
        """The tenant's cap in blocks, or None when only the global budget applies."""
        return self._quota_blocks.get(tenant)

    def too_large(self, tenant: str, blocks: int) -> str | None:
        """Why `blocks` new blocks could never fit, even in an empty cache; None if they could."""
        if blocks > self.capacity:
            return f"{blocks} new blocks exceed the cache capacity of {self.capacity} blocks"
        quota = self._quota_blocks.get(tenant)
        if quota is not None and blocks > quota:
            return f"{blocks} new blocks exceed tenant {tenant!r}'s quota of {quota} blocks"
        return None

    def room(self, tenant: str) -> int:
        """How many more blocks this tenant may add now."""
        room = self.capacity - self.blocks
        quota = self._quota_blocks.get(tenant)
        if quota is not None:
            room = min(room, quota - self.tenant_blocks.get(tenant, 0))
        return max(0, room)

    def over_fair_share(self, tenant: str, pending: int) -> list[str]:
        """Tenants holding more than capacity / (tenants holding blocks), counting `pending` for `tenant`.

        Under global pressure these are evicted from first, so one tenant's flood cannot push
        out another tenant's system prompt.
        """
        holders = len(self.tenant_blocks) + (tenant not in self.tenant_blocks)
        fair = self.capacity / holders
        over = [t for t, held in self.tenant_blocks.items() if held + (pending if t == tenant else 0) > fair]
        if tenant not in self.tenant_blocks and pending > fair:
            over.append(tenant)
        return over
