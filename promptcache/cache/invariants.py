"""The prefix cache's books, checked from scratch (tests call it after their operations).

Kept apart from `PrefixCache` so that the cache's own file holds only its rules: this walks the
whole trie and compares what it finds with the budget's and the pin budget's counts.
"""

from __future__ import annotations

from promptcache.cache.budget import Budget
from promptcache.cache.pins import PinBudget
from promptcache.cache.trie import BlockTrie


def check_books(trie: BlockTrie, budget: Budget, pins: PinBudget) -> None:
    """Assert counts, reference counts, budgets and structure agree."""
    per_tenant: dict[str, int] = {}
    pinned: dict[str, int] = {}
    count = 0
    for root in trie.roots():
        assert root.children, "an empty namespace root was left behind"
        for node in BlockTrie.postorder(root):
            count += 1
            per_tenant[node.tenant] = per_tenant.get(node.tenant, 0) + 1
            if node.pins:
                pinned[node.tenant] = pinned.get(node.tenant, 0) + 1
            assert node.alive and node.refcount >= 0 and node.pins >= 0
            assert node.parent is not None and node.parent.children.get(node.key) is node
            assert node.tenant == root.tenant
    assert count == len(trie) == budget.blocks
    assert per_tenant == budget.tenant_blocks
    assert 0 <= budget.blocks <= budget.capacity
    for tenant, held in budget.tenant_blocks.items():
        assert held <= budget.quota(tenant), (tenant, held, budget.quota(tenant))
    assert pinned == pins.tenant_blocks and sum(pinned.values()) == pins.blocks <= pins.global_limit
    for tenant, held in pinned.items():
        assert held <= pins.limit(tenant), (tenant, held, pins.limit(tenant))
