"""Pin budgets: how many blocks each tenant, and the cache as a whole, may keep pinned.

A pinned block is never evicted and never expires, so pins are the one way a tenant can keep
cache space from everyone else; they are therefore capped. A tenant may pin up to
`pin_quota_fraction` of its quota and all tenants together up to `max_pinned_fraction` of the
capacity. A block counts once however many pins it carries (pins nest), and it counts against
the tenant of its namespace. The ledger owns only counts; `PrefixCache` owns the nodes' `pins`.
"""

from __future__ import annotations

from promptcache.cache.budget import Budget, share_of
from promptcache.cache.counts import TenantCounts
from promptcache.cache.errors import PinBudgetExceeded


class PinBudget(TenantCounts):
    def __init__(self, budget: Budget, pin_quota_fraction: float, max_pinned_fraction: float) -> None:
        self._budget = budget
        self._fraction = pin_quota_fraction
        self.global_limit = share_of(max_pinned_fraction, budget.capacity)
        super().__init__()

    def limit(self, tenant: str) -> int:
        """The tenant's pin budget in blocks: pin_quota_fraction of its quota."""
        return share_of(self._fraction, self._budget.quota(tenant))

    def check(self, tenant: str, new_blocks: int) -> None:
        """Raise PinBudgetExceeded if pinning `new_blocks` more blocks for `tenant` breaks a budget."""
        held = self.tenant_blocks.get(tenant, 0)
        if new_blocks and (held + new_blocks > self.limit(tenant) or self.blocks + new_blocks > self.global_limit):
            nbytes = self._budget.block_nbytes
            raise PinBudgetExceeded(tenant, new_blocks * nbytes, held * nbytes, self.limit(tenant) * nbytes,
                                    self.blocks * nbytes, self.global_limit * nbytes)

    def check_with(self, tenant: str, new_blocks: int, tenant_reserved: int, all_reserved: int) -> None:
        """`check`, counting blocks reserved but not pinned yet as pinned (retained.py)."""
        held = self.tenant_blocks.get(tenant, 0) + tenant_reserved
        if new_blocks and (held + new_blocks > self.limit(tenant)
                           or self.blocks + all_reserved + new_blocks > self.global_limit):
            nbytes = self._budget.block_nbytes
            raise PinBudgetExceeded(tenant, new_blocks * nbytes, held * nbytes, self.limit(tenant) * nbytes,
                                    (self.blocks + all_reserved) * nbytes, self.global_limit * nbytes)

    def room_with(self, tenant: str, tenant_reserved: int, all_reserved: int) -> int:
        """How many more blocks `tenant` may pin now, leaving the open reservations their room."""
        tenant_room = self.limit(tenant) - self.tenant_blocks.get(tenant, 0) - tenant_reserved
        return max(0, min(tenant_room, self.global_limit - self.blocks - all_reserved))

    def bytes_pinned(self, tenant: str | None = None) -> int:
        blocks = self.blocks if tenant is None else self.tenant_blocks.get(tenant, 0)
        return blocks * self._budget.block_nbytes
