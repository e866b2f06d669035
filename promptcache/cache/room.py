"""Making room for an insert: whose blocks may go, under the tenant quota and the global budget.

Every tenant has a quota (its own or the default share); a tenant over it loses its own leaves.
Under global pressure an insert may evict only blocks of tenants over their fair share
(capacity / tenants holding blocks) and then its own: a tenant within its share never loses a
block to another tenant's insert, and when that leaves no room the new blocks are not cached.
A prefix about to be pinned (`own_only`) makes room from its tenant's own blocks only.
Which block of a tenant goes first is the policy's call (the eviction queue's order).
"""

from __future__ import annotations

from promptcache.cache.budget import Budget
from promptcache.cache.reclaim import Reclaimer


def make_room(budget: Budget, reclaim: Reclaimer, tenant: str, wanted: int,
              own_only: bool = False) -> tuple[int, str | None]:
    """Evict until `wanted` more blocks fit for `tenant`, or until nothing more may go.

    Returns how many fit and, when not all do, why. First the tenant's quota: over it, the
    tenant loses its own leaves. Then the global budget: the insert evicts, in policy order,
    leaves of tenants over their fair share (the tenant itself among them when the insert
    puts it over), then its own leaves, and never a block of a tenant within its share.
    """
    own = (tenant,)
    quota = budget.quota(tenant)
    allowed = wanted
    if quota < budget.capacity:  # a quota of the whole cache is the global budget's job
        excess = budget.held(tenant) + wanted - quota
        if excess > 0:
            reclaim.evict(excess, "quota", lambda: own)
        # no point evicting others for blocks the quota won't take
        allowed = min(wanted, max(0, quota - budget.held(tenant)))
    excess = budget.blocks + allowed - budget.capacity
    if excess > 0:
        if budget.tenant_blocks.keys() - own and not own_only:
            excess -= reclaim.evict(excess, "policy", lambda: budget.over_fair_share(tenant, allowed),
                                    lambda victim: budget.over_share(victim, tenant, allowed))
        if excess > 0:
            reclaim.evict(excess, "policy", lambda: own)
    fit = min(allowed, budget.room(tenant))
    if fit == wanted:
        return fit, None
    if fit < allowed and budget.over_share(tenant, tenant, wanted):
        return fit, (f"room for only {fit} of {wanted} new blocks: tenant {tenant!r} is over its fair share of "
                     f"{budget.fair_share(tenant):.0f} blocks and the rest of the cache is held, pinned, "
                     f"or within other tenants' shares")
    if fit == allowed:
        return fit, (f"room for only {fit} of {wanted} new blocks within tenant {tenant!r}'s quota of {quota} "
                     f"blocks (the rest of its blocks are held or pinned)")
    return fit, (f"room for only {fit} of {wanted} new blocks (the rest of the cache is held, pinned, "
                 f"or within other tenants' fair shares)")
