"""What an eviction policy is: one method that orders evictable leaves."""

from __future__ import annotations

from typing import Any, Protocol

from promptcache.cache.trie import BlockNode


class EvictionPolicy(Protocol):
    """Maps a node to a sort key; the evictable leaf with the SMALLEST key is evicted first.

    A key may read only the fields `BlockNode.touch()` updates (last_access, hits, expires_at)
    and fields fixed at insertion (role, tenant): the eviction queue caches keys and trusts
    them until the node's `version` changes.
    """

    name: str

    def sort_key(self, node: BlockNode) -> Any: ...
