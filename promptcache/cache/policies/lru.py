"""Least recently used: the leaf untouched for longest goes first."""

from __future__ import annotations

from promptcache.cache.trie import BlockNode


class LRU:
    name = "lru"

    def sort_key(self, node: BlockNode) -> float:
        return node.last_access
