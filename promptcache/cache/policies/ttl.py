"""Soonest expiry first: under pressure, drop what would have expired earliest anyway.

Blocks without a TTL (expires_at = inf) go last, least recently used first among themselves.
"""

from __future__ import annotations

from promptcache.cache.trie import BlockNode


class SoonestExpiry:
    name = "ttl"

    def sort_key(self, node: BlockNode) -> tuple[float, float]:
        return (node.expires_at, node.last_access)
