"""Blocks counted in all and per tenant: the ledger shared by the byte budget and the pin budget."""

from __future__ import annotations


class TenantCounts:
    """`blocks` in all and `tenant_blocks[tenant]`; a tenant with none has no entry."""

    def __init__(self) -> None:
        self.blocks = 0
        self.tenant_blocks: dict[str, int] = {}

    def add(self, tenant: str, blocks: int = 1) -> None:
        if blocks:
            self.blocks += blocks
            self.tenant_blocks[tenant] = self.tenant_blocks.get(tenant, 0) + blocks

    def remove(self, tenant: str) -> None:
        """One block of `tenant` is gone."""
        self.blocks -= 1
        left = self.tenant_blocks[tenant] - 1
        if left:
            self.tenant_blocks[tenant] = left
        else:
            del self.tenant_blocks[tenant]
