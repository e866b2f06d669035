"""Role tiers, as mlx-lm's CacheOrder: assistant and tool blocks go first, then user, then system.

Least recently used inside a tier. In an agent loop the chat template usually rewrites
everything after the last user message (thinking is stripped), so assistant/tool blocks are the
least reusable and the system prompt the most.
"""

from __future__ import annotations

from promptcache.cache.trie import BlockNode

TIER_RANK = {"assistant": 0, "tool": 0, "user": 1, "system": 2}


class RoleTier:
    name = "tier"

    def sort_key(self, node: BlockNode) -> tuple[int, float]:
        return (TIER_RANK[node.role], node.last_access)
